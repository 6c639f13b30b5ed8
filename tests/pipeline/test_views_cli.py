"""The augmented views' acceptance path (issue 20), through the `pipeline` command on a small corpus:
the shipped configs/views/train.toml extracts with the store, configs/views/robustness.toml is added
to the finished store, `inspect --json` lists every view with its recipe, an exported view differs
from the clean export and is identical when extracted again, `train --views all` runs and
`evaluate --view` writes the view's metrics."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from extract.datasets import generate_demo_corpus
from pipeline.cli import main

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # ~5 min on the shared, loaded 2 cores: 20 views

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--set", "kmeans_frames=1024", "--set", "kmeans_iters=3", "--set", "lsuv_seconds=2", "--set", "device='cpu'",
         "--workers", "0", "--set", "torch_threads=1", "--set", "unit_size=4", "--weights", "untrained"]
TINY_TRAIN = ["--set", "crop_seconds=0.8", "--set", "batch_size=4", "--set", "warmup_steps=0", "--epochs", "2",
              "--set", "head_kwargs={proj_dim=8, hidden_dim=8}", "--device", "cpu"]


def invoke(args: list) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def views_of(name: str) -> dict:
    return tomllib.loads((REPO / "configs" / "views" / name).read_text())["view"]


def export(store: Path, out: Path, view: str | None = None) -> dict:
    invoke(["export", store, "--format", "hdf5", "--out", out, "--split", "eval", *(["--view", view] if view else [])])
    with h5py.File(out) as f:
        return {"ids": list(f["utterance_id"].asstr()), "embeddings": f["embeddings"][...], "offsets": f["offsets"][...]}


def test_views_from_extraction_to_robustness_table(tmp_path):
    corpus = generate_demo_corpus(tmp_path / "demo", n_per_split={"train": 4, "dev": 3, "eval": 3}, seed=4)
    store, again = tmp_path / "s.zarr", tmp_path / "again.zarr"
    base = ["extract", "--dataset", "asv19", "--root", corpus, *SMALL]
    # train.toml with the store, then (a copy of the clean store kept aside) robustness.toml added to it
    invoke([*base, "--out", store, "--views-only", "rawboost_series", "--views", REPO / "configs/views/train.toml"])
    shutil.copytree(store, again)
    shutil.rmtree(again / "views")
    output = invoke([*base, "--out", store, "--views", REPO / "configs/views/train.toml"])
    assert "estimated cost of the new views" in output or "views extracted" in output
    output = invoke([*base, "--out", store, "--views", REPO / "configs/views/robustness.toml"])
    assert "views extracted: mp3_32k" in output

    info = json.loads(invoke(["inspect", "--json", store]))
    shipped = {**views_of("train.toml"), **views_of("robustness.toml")}
    listed = {v["name"]: v for v in info["views"]}
    assert set(listed) == set(shipped)
    for name, table in shipped.items():
        entry = listed[name]
        assert entry["splits"] == table["splits"] and entry["seed"] == table["seed"] and entry["state"] == "complete"
        assert [step["augment"] for step in entry["chain"]] == [step["augment"] for step in table["chain"]]
        assert entry["versions"]["av"] and entry["ok"] == entry["utterances"] > 0

    clean = export(store, tmp_path / "clean.h5")
    view = export(store, tmp_path / "view.h5", "alaw")
    assert view["ids"] == clean["ids"]
    assert not np.array_equal(view["embeddings"][: len(clean["embeddings"])], clean["embeddings"][: len(view["embeddings"])])
    invoke([*base, "--out", again, "--views", REPO / "configs/views/robustness.toml", "--views-only", "alaw"])
    remade = export(again, tmp_path / "remade.h5", "alaw")
    assert remade["ids"] == view["ids"] and np.array_equal(remade["offsets"], view["offsets"])
    assert np.array_equal(remade["embeddings"], view["embeddings"])  # bit for bit

    run = tmp_path / "run"
    output = invoke(["train", "--features", store, "--out", run, "--views", "all", *TINY_TRAIN])
    assert "views: each train utterance is drawn clean with probability 0.5" in output
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all(sum(r["view_draws"].values()) == 4 for r in history)
    invoke(["evaluate", "--model", run, "--features", store, "--out", tmp_path / "eval", "--view", "mp3_32k"])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["view"] == "mp3_32k" and metrics["n_scored"] == 3 and "UNTRAINED" in metrics["codec_weights"]["label"]
    invoke(["evaluate", "--model", run, "--features", store, "--out", tmp_path / "all", "--view", "all"])
    rows = json.loads((tmp_path / "all" / "views.json").read_text())["rows"]
    assert [r["copy"] for r in rows] == ["clean", *sorted(views_of("robustness.toml"))]
