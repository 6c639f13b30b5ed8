"""The paper's full system from the command line: `pipeline extract --ssl` adds the SSL stream to an
existing store without touching its codes; `train`, `evaluate` and the `paper.toml` sweep run on it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from classify.sweep import expand, load_sweep
from extract.datasets import generate_demo_corpus
from pipeline.cli import main
from store.reader import FeatureStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--weights", "untrained", "--set", "kmeans_frames=1024", "--set", "kmeans_iters=3", "--set", "device='cpu'",
         "--set", "unit_size=4", "--set", "torch_threads=1"]
TINY_TRAIN = ["--set", "epochs=1", "--set", "batch_size=4", "--set", "crop_seconds=0.6", "--set", "warmup_steps=0",
              "--set", "device='cpu'", "--set", "head_kwargs={proj_dim=8, hidden_dim=8}"]


def invoke(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not str(p.relative_to(root)).startswith("streams")}


def test_paper_sweep_file_is_the_papers_comparison():
    spec = load_sweep(ROOT / "configs" / "sweeps" / "paper.toml")
    trials = expand(spec, {"weights_sha256": "x", "dataset": "asv19", "frames": 1})
    assert sorted({t.config.variant for t in trials}) == ["ssl", "ssl+mean", "ssl+qaf-static"]
    assert len(trials) == 9 and sorted({t.config.seed for t in trials}) == [0, 1, 2]
    assert all(t.config.level_norm is False and t.config.ssl_kwargs["layers"] == "1-12" for t in trials)
    assert all(t.config.ssl_kwargs["norm"] is False for t in trials)  # AttM as released, as in the paper


@pytest.mark.slow
def test_extract_ssl_into_an_existing_store_then_train_evaluate_and_sweep(tmp_path):
    corpus = generate_demo_corpus(tmp_path / "demo", n_per_split={"train": 8, "dev": 6, "eval": 6}, seed=5)
    out = tmp_path / "s.zarr"
    invoke("extract", "--dataset", "asv19", "--root", corpus, "--out", out, "--workers", "0", *SMALL)
    before = hashes(out)
    text = invoke("extract", "--dataset", "asv19", "--root", corpus, "--out", out, "--workers", "0", *SMALL,
                  "--ssl", "wavlm-tiny", "--ssl-weights", "untrained")
    assert hashes(out) == before  # the codes, tables and attributes are not touched
    assert "SSL weights: UNTRAINED WavLM-tiny" in text and "streams added to the finished store: ssl" in text
    assert "bytes per audio second" in text
    spec = FeatureStore(str(out)).stream("ssl").spec  # the default storage: int8 with a 2-byte scale per layer
    assert (spec.dtype, spec.frame_shape, spec.source["storage"]["name"]) == ("int8", (4, 34), "int8")

    run = tmp_path / "run"
    text = invoke("train", "--features", out, "--out", run, "--variant", "ssl+qaf-static", *TINY_TRAIN,
                  "--set", "ssl_kwargs={proj_dim=8}")
    assert "SSL weights: UNTRAINED WavLM-tiny" in text and "the paper: 4.4 %" in text
    invoke("evaluate", "--model", run, "--features", out, "--split", "eval", "--out", tmp_path / "eval")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "UNTRAINED WavLM-tiny" in metrics["ssl_weights"]["label"] and "UNTRAINED" in metrics["codec_weights"]["label"]

    invoke("sweep", "--features", out, "--config", ROOT / "configs" / "sweeps" / "paper.toml", "--out",
           tmp_path / "paper", "--workers", "0", *TINY_TRAIN, "--set", "seed=0",
           "--set", "ssl_kwargs={layers='1-4', proj_dim=8}")
    results = pd.read_parquet(tmp_path / "paper" / "results.parquet")
    assert sorted(results["variant"]) == ["ssl", "ssl+mean", "ssl+qaf-static"] and (results["status"] == "ok").all()
    assert results["ssl_weights_label"].str.contains("UNTRAINED WavLM-tiny").all()
    assert "SSL weights: UNTRAINED WavLM-tiny" in (tmp_path / "paper" / "report.md").read_text()
