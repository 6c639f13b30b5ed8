"""The README's main command: `pipeline demo` runs the whole chain and says where everything is."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import subprocess
from pathlib import Path

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
    run_the_readme_scoring_examples(out)


def run_the_readme_scoring_examples(out) -> None:
    """The README's `pipeline score` commands and its Python example, on the demo's output."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Scoring new audio", 1)[1]
    bash, python = re.findall(r"```(?:bash|python)\n(.*?)```", section, flags=re.S)[:2]
    for line in bash.replace("demo_out", str(out)).splitlines():
        finder, _, command = line.rpartition(" | ")
        args = shlex.split(command)
        assert args[0] == "pipeline", line
        stdin = None
        if finder:  # `ls ... | head -3 | pipeline score ... -`: the paths come from the shell
            stdin = subprocess.run(finder, shell=True, capture_output=True, text=True, check=True).stdout
        result = CliRunner().invoke(main, args[1:], input=stdin)
        assert result.exit_code == 0, (line, result.output)
    rows = (out / "scores.csv").read_text().splitlines()
    assert len(rows) == 41 and (out / "why.png").is_file() and (out / "detector.pt").is_file()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(python.replace("demo_out", str(out)), "README.md", "exec"), {})
    assert "UNTRAINED" in printed.getvalue() and "missing.wav None None" in printed.getvalue()
