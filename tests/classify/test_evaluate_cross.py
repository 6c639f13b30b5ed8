"""`evaluate` on cross-corpus stores: the 2021 score file (every trial, all phases), the top-level
metrics of the eval phase, and every table cell equal to a re-statement from the score file and the
store's own utterance table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from classify.evaluate import evaluate
from classify.metrics import compute_eer, compute_mindcf
from classify.scorefiles import read_scores
from classify.tables import TABLES
from classify.train import train
from store.reader import FeatureStore
from tests.classify.test_tables import naive_cell
from tests.synthetic import synthetic_store, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("cross")
    store = FeatureStore(synthetic_store(str(root / "train.zarr"), n_per_split=24))
    train(tiny_config(epochs=2, lr=3e-2), store, root / "run", log=lambda _: None)
    return root / "run" / "best.pt"


@pytest.mark.parametrize("dataset", ["asv21la", "asv21df", "itw"])
def test_cross_store_tables_equal_a_restatement_from_the_score_file(checkpoint, tmp_path, dataset):
    store = FeatureStore(synthetic_store(str(tmp_path / f"{dataset}.zarr"), n_per_split=90, splits=("eval",),
                                         dataset=dataset, metadata=True, seed=4))
    logged: list[str] = []
    result = evaluate(checkpoint, store, "eval", tmp_path / "out", calibrate=False, log=logged.append)
    lines = (tmp_path / "out" / "scores.txt").read_text().splitlines()
    assert len(lines) == 90 and all(len(line.split(" ")) == 2 for line in lines)  # TRIAL score, every trial
    scores = read_scores(tmp_path / "out" / "scores.txt")
    table = store.utterances.set_index("utt_id").loc[scores.utt_ids].reset_index()
    table["score"] = scores.scores
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    headline = table[table["phase"] == "eval"] if "phase" in table else table
    bona = headline.loc[headline["label"] == "bonafide", "score"]
    spoof = headline.loc[headline["label"] == "spoof", "score"]
    assert metrics["eer"] == compute_eer(bona, spoof)[0] and metrics["min_dcf"] == compute_mindcf(bona, spoof)[0]
    assert metrics["scores_format"] == "asvspoof2021" and metrics == json.loads(json.dumps(result))
    spec = TABLES[dataset][0]
    phases = metrics["phases"] if "phase" in table else {"all": metrics}
    if "phase" in table:
        assert set(phases) == {"eval", "progress", "hidden"}
    for phase, part in phases.items():
        rows = table[table["phase"] == phase] if phase != "all" else table
        cells = part["tables"][spec.title]
        for i, r in enumerate(cells["row_values"]):
            for j, c in enumerate(cells["column_values"]):
                b, s = naive_cell(rows, spec, r, c)
                assert cells["eer"][i][j] == (compute_eer(b, s)[0] if len(b) and len(s) else None)
    if dataset == "asv21la":
        assert any("no ASV scores" in line for line in logged)
        assert phases["eval"]["tables"][spec.title]["min_tdcf"] is None
    assert np.isfinite(metrics["eer"])
