"""`pipeline matrix` end to end on synthetic stores written through the real writer: two seeds of one
setting over three test corpora (2021 LA, 2021 DF, In-the-Wild layouts), plus a store of another
codec whose cell is empty and says why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from classify.metrics import compute_eer
from classify.scorefiles import read_scores
from classify.train import train
from pipeline.commands.matrix import command
from store.reader import FeatureStore
from tests.pipeline.test_sweep_cli import SWEEP  # variant mean | scalar x seed 0 | 1, one epoch
from tests.synthetic import synthetic_store, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    store = FeatureStore(synthetic_store(str(root / "train.zarr"), n_per_split=24))
    runs = []
    for seed in (0, 1):
        train(tiny_config(epochs=2, lr=3e-2, seed=seed), store, root / f"seed{seed}", log=lambda _: None)
        runs.append(str(root / f"seed{seed}"))
    tests = [synthetic_store(str(root / f"{d}.zarr"), n_per_split=60, splits=("eval",), dataset=d, metadata=True,
                             seed=k + 3) for k, d in enumerate(("asv21la", "asv21df", "itw"))]
    other = synthetic_store(str(root / "other.zarr"), n_per_split=20, splits=("eval",), dataset="itw", metadata=True,
                            weights_seed=9)
    return root, runs, tests, other


def test_matrix_two_seeds_three_corpora(setup):
    root, runs, tests, other = setup
    out = root / "out"
    result = CliRunner().invoke(command, ["--runs", *runs[:1], "--runs", runs[1], "--features", *tests,
                                          "--features", other, "--out", str(out), "--bootstrap", "50",
                                          "--device", "cpu"])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out / "matrix.parquet")
    assert set(frame["seed"]) == {0, 1} and frame["setting"].nunique() == 1
    assert set(frame["corpus"]) == {"asv21la", "asv21df", "itw"}
    empty = frame[frame["empty"] != ""]
    assert len(empty) == 2 and empty["store"].eq(other).all()
    assert empty["empty"].iloc[0] == "the store's codec differs from the run's (weights_sha256 differs)"
    pooled = frame[(frame["condition"] == "pooled") & (frame["phase"] == "eval") & (frame["empty"] == "")]
    assert set(pooled["corpus"]) == {"asv21la", "asv21df"}
    assert {"C1", "C7"} <= set(frame.loc[frame["corpus"] == "asv21la", "condition"])
    assert set(frame.loc[frame["corpus"] == "asv21la", "phase"]) == {"eval", "progress", "hidden"}

    means = {}
    for corpus, url in zip(("asv21la", "asv21df", "itw"), tests):
        eers = []
        for run in runs:
            cell = out / "cells" / Path(run).name / corpus
            metrics = json.loads((cell / "metrics.json").read_text())
            scores = read_scores(cell / "scores.txt")
            table = FeatureStore(url).utterances.set_index("utt_id").loc[scores.utt_ids]
            keep = (table["phase"] == "eval").to_numpy() if "phase" in table else np.ones(len(table), bool)
            bona = (table["label"] == "bonafide").to_numpy()
            eer = compute_eer(scores.scores[keep & bona], scores.scores[keep & ~bona])[0]
            assert metrics["eer"] == eer
            eers.append(eer)
        means[corpus] = float(np.mean(eers))
    text = (out / "matrix.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| qaf-static/lstm on asv19 (train)"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    header = next(line for line in text.splitlines() if line.startswith("| setting"))
    columns = [c.strip() for c in header.strip("|").split("|")][1:]
    assert columns == ["asv21la", "asv21df", "itw", "other", "pooled", "average"]
    for corpus, value in means.items():
        assert cells[columns.index(corpus)].startswith(f"{100 * value:.2f} ± ")
        assert "[" in cells[columns.index(corpus)]
    assert cells[columns.index("other")] == "empty: the store's codec differs from the run's (weights_sha256 differs)"
    assert cells[columns.index("average")].startswith(f"{100 * np.mean(list(means.values())):.2f}")
    assert "codec weights: SYNTHETIC" in text
    assert (out / "matrix.png").stat().st_size > 1000


def test_sweep_test_features_reports_the_dev_selected_setting(setup, tmp_path):
    from pipeline.commands.sweep import command as sweep

    root, _, tests, _ = setup
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP)
    out = tmp_path / "sweep"
    result = CliRunner().invoke(sweep, ["--features", str(root / "train.zarr"), "--config", str(config), "--out", str(out),
                                        "--workers", "0", "--test-features", tests[0], tests[2]])
    assert result.exit_code == 0, result.output
    results = pd.read_parquet(out / "results.parquet")
    best = results.groupby("variant")["dev_eer"].mean().idxmin()
    frame = pd.read_parquet(out / "matrix" / "matrix.parquet")
    assert set(frame["seed"]) == {0, 1} and frame["setting"].nunique() == 1
    assert frame["setting"].iloc[0].startswith(f"{best}/lstm on asv19")
    assert set(frame["corpus"]) == {"asv21la", "itw"}
    assert (out / "matrix" / "matrix.md").is_file()


@pytest.mark.parametrize("phase", ["eval", "all", None])
def test_each_cell_says_which_trials_it_scored_and_phase_all_scores_every_phase(setup, phase):
    """Per cell: the trials (phase, how many) in matrix.parquet, the summary and matrix.md; the EER is
    of exactly those trials (recomputed here from the cell's score file and the store's own table)."""
    root, runs, tests, _ = setup
    out = root / f"phase-{phase}"
    args = ["--runs", runs[0], "--features", tests[0], tests[2], "--out", str(out), "--bootstrap", "20",
            "--device", "cpu"] + (["--phase", phase] if phase else [])
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out / "matrix.parquet")
    md = (out / "matrix.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| setting"))
    columns = [c.strip() for c in header.strip("|").split("|")][1:]
    row = next(line for line in md.splitlines() if line.startswith("| qaf-static/lstm on asv19 (train)"))
    cells = dict(zip(columns, [c.strip() for c in row.strip("|").split("|")][1:]))
    assert f"--phase {phase or 'eval'}" in md
    for corpus, url in (("asv21la", tests[0]), ("itw", tests[2])):
        scores = read_scores(out / "cells" / Path(runs[0]).name / corpus / "scores.txt")
        table = FeatureStore(url).utterances.set_index("utt_id").loc[scores.utt_ids]
        phased = "phase" in table
        keep = (table["phase"] == "eval").to_numpy() if phased and phase != "all" else np.ones(len(table), bool)
        bona = (table["label"] == "bonafide").to_numpy()
        eer = compute_eer(scores.scores[keep & bona], scores.scores[keep & ~bona])[0]
        n = int(keep.sum())
        if not phased:
            text = f"all {n} trials of split eval (no phases)"
        elif phase == "all":
            text = f"all phases: {n} trials of split eval"
        else:
            text = f"phase eval: {n} of {len(table)} trials of split eval"
        assert phased == (corpus == "asv21la") and (n < len(table)) == (phased and phase != "all")
        mine = frame[frame["corpus"] == corpus]
        assert set(mine["trials"]) == {text} and set(mine["n_trials"]) == {n}
        assert cells[corpus] == f"{100 * eer:.2f} ± 0.00 [{cells[corpus].split('[')[1].split(']')[0]}] ({text})"
        first = mine.iloc[0]
        assert first["condition"] == "pooled" and first["eer"] == pytest.approx(eer, abs=1e-12)
        assert first["n_bonafide"] + first["n_spoof"] == n
