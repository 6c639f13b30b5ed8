"""The README's main command: `pipeline demo` runs the whole chain and says where everything is."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.cli import main


@pytest.mark.slow
def test_demo_runs_the_whole_chain(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "UNTRAINED" in result.output and "say nothing about real spoofing detection" in result.output
    for path in ["features.zarr/zarr.json", "run/best.pt", "run/level_weights.png", "run/training_curves.png", "eval/det.png", "eval/scores.txt"]:
        assert (out / path).is_file(), path
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["eer"] <= 1.0 and "UNTRAINED" in json.dumps(metrics)
    scored = (out / "eval" / "scores.txt").read_text().splitlines()
    assert len(scored) == 40 and all(len(line.split()) == 2 for line in scored)
    # a second run reuses the store and the finished run
    again = CliRunner().invoke(main, ["demo", "--out", str(out), "--workers", "0"])
    assert again.exit_code == 0 and "already complete" in again.output
