"""Evaluation: official score files, metrics.json recomputed independently, calibration, t-DCF."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from classify.calibration import eer_threshold
from classify.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from classify.data import DataError, load_split
from classify.evaluate import apply_calibration, evaluate, fit_calibration, score_split
from classify.metrics import compute_actdcf, compute_cllr, compute_det_curve, compute_eer, compute_mindcf
from classify.scorefiles import read_scores
from classify.sources import codec_source
from classify.train import train
from store.reader import FeatureStore
from tests.synthetic import synthetic_store, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(store, best.pt) of a short run on a store whose eval split has two failed utterances."""
    root = tmp_path_factory.mktemp("evaluate")
    store = FeatureStore(synthetic_store(str(root / "s.zarr"), n_per_split=24, failed_per_split=2))
    train(tiny_config(epochs=3, lr=3e-2), store, root / "run", log=quiet)
    return store, root / "run" / "best.pt"


def labelled(store: FeatureStore, split: str, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Is-bona-fide of ``ids`` from the store's own table (not through classify.data)."""
    table = store.utterances.set_index("utt_id")
    return (table.loc[ids, "label"] == "bonafide").to_numpy(), table.loc[ids, "split"].to_numpy()


def test_asvspoof2019_scores_and_metrics_agree_with_an_independent_recomputation(trained, tmp_path):
    store, checkpoint = trained
    logged: list[str] = []
    result = evaluate(checkpoint, store, "eval", tmp_path, calibrate=False, log=logged.append)
    lines = (tmp_path / "scores.txt").read_text().splitlines()
    assert len(lines) == 24 and all(len(line.split(" ")) == 2 for line in lines)  # `utt score`, no header
    scores = read_scores(tmp_path / "scores.txt")
    assert scores.format == "asvspoof2019"
    is_bona, splits = labelled(store, "eval", scores.utt_ids)
    assert (splits == "eval").all()
    bona, spoof = scores.scores[is_bona], scores.scores[~is_bona]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))
    assert metrics["eer"] == compute_eer(bona, spoof)[0]
    assert metrics["min_dcf"] == compute_mindcf(bona, spoof)[0]
    assert metrics["act_dcf"] == compute_actdcf(bona, spoof)[0] == metrics["raw"]["act_dcf"]
    assert metrics["cllr"] == compute_cllr(bona, spoof)
    assert metrics["n_bonafide"] == is_bona.sum() and metrics["n_spoof"] == (~is_bona).sum()
    assert metrics["n_failed"] == 2 and any("2 utterance(s)" in m and "failed" in m for m in logged)
    assert metrics["codec_weights"] == {"label": store.codec.weights_label, "sha256": store.codec.weights_sha256}
    assert metrics["checkpoint"] == str(checkpoint) and metrics["calibration"] == {"applied": False}
    assert set(metrics["per_attack"]) == {"A01", "A02", "A03"} and set(metrics["per_codec"]) == {"-", "C01"}
    assert (tmp_path / "det.png").is_file()


def test_asvspoof5_format_has_the_official_header(trained, tmp_path):
    store, checkpoint = trained
    evaluate(checkpoint, store, "eval", tmp_path, calibrate=False, fmt="asvspoof5", log=quiet)
    lines = (tmp_path / "scores.tsv").read_text().splitlines()
    assert lines[0] == "filename\tcm-score" and len(lines) == 25
    assert all(len(line.split("\t")) == 2 for line in lines[1:])
    again = read_scores(tmp_path / "scores.tsv")
    assert again.format == "asvspoof5"


def test_auto_format_follows_the_dataset(tmp_path):
    store = FeatureStore(synthetic_store(str(tmp_path / "a5.zarr"), n_per_split=8, dataset="asv5"))
    train(tiny_config(epochs=1), store, tmp_path / "run", log=quiet)
    result = evaluate(tmp_path / "run", store, "eval", tmp_path / "out", calibrate=False, log=quiet)
    assert result["scores_format"] == "asvspoof5" and (tmp_path / "out" / "scores.tsv").is_file()


def test_calibration_is_fitted_on_dev_and_recorded(trained, tmp_path):
    store, checkpoint = trained
    result = evaluate(checkpoint, store, "eval", tmp_path, calibrate=True, log=quiet)
    calibration = result["calibration"]
    dev = load_split(store, "dev")
    assert calibration["applied"] and calibration["dev_split"] == "dev"
    assert calibration["n"] == len(dev) and calibration["n_bonafide"] == dev.is_bonafide.sum()
    assert calibration["log_prior_odds"] == pytest.approx(np.log(dev.is_bonafide.sum() / (~dev.is_bonafide).sum()))
    raw = read_scores(tmp_path / "scores.txt")
    llr = read_scores(tmp_path / "scores_calibrated.txt")
    assert llr.utt_ids == raw.utt_ids
    assert np.allclose(llr.scores, apply_calibration(calibration, raw.scores))
    is_bona, _ = labelled(store, "eval", raw.utt_ids)
    assert result["eer"] == compute_eer(raw.scores[is_bona], raw.scores[~is_bona])[0]
    assert result["act_dcf"] == compute_actdcf(llr.scores[is_bona], llr.scores[~is_bona])[0]
    assert result["cllr"] == compute_cllr(llr.scores[is_bona], llr.scores[~is_bona])
    assert result["raw"]["cllr"] == compute_cllr(raw.scores[is_bona], raw.scores[~is_bona])


def test_calibration_recovers_a_known_llr():
    rng = np.random.default_rng(0)
    # bona fide ~ N(1, 1), spoof ~ N(-1, 1): LLR(s) = 2 s; 1:3 class balance
    scores = np.concatenate([rng.normal(1, 1, 20000), rng.normal(-1, 1, 60000)])
    labels = np.arange(scores.size) < 20000
    calibration = fit_calibration(0.5 * scores + 3.0, labels)  # an affine distortion of the LLR scale
    llr = apply_calibration(calibration, 0.5 * np.array([-2.0, 0.0, 2.0]) + 3.0)
    assert llr == pytest.approx([-4.0, 0.0, 4.0], abs=0.06)


def test_min_tdcf_with_asv_scores(trained, tmp_path):
    store, checkpoint = trained
    rng = np.random.default_rng(1)
    asv = tmp_path / "asv.txt"
    rows = [f"LA_00{i} {key} {rng.normal(mean, 1):.4f}" for key, mean in
            (("target", 3.0), ("nontarget", -3.0), ("spoof", 1.0)) for i in range(30)]
    asv.write_text("\n".join(rows) + "\n")
    result = evaluate(checkpoint, store, "eval", tmp_path / "out", asv_scores=asv, calibrate=False, log=quiet)
    assert 0 <= result["min_tdcf"] <= 1 and set(result["asv_error_rates"]) == {"pfa_asv", "pmiss_asv", "pmiss_spoof_asv"}


def test_long_utterances_average_the_logits_of_their_windows(trained):
    store, checkpoint = trained
    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state, store)
    source, split = codec_source(store), load_split(store, "eval")
    cpu = torch.device("cpu")
    windowed = score_split(model, source, split, 40, 4000, cpu)
    u = int(np.argmax(split.lengths))
    n, start = int(split.lengths[u]), int(split.starts[u])
    codes = torch.from_numpy(store.codes[start : start + n].astype(np.int64))
    count = -(-n // 40)
    starts = np.rint(np.arange(count) * (n - 40) / (count - 1)).astype(int)
    with torch.no_grad():
        logits = [float(model(codes[s : s + 40][None], torch.tensor([40]))) for s in starts]
        whole = float(model(codes[None], torch.tensor([n])))
    assert windowed[u] == pytest.approx(np.mean(logits), abs=1e-5)
    assert score_split(model, source, split, 1000, 4000, cpu)[u] == pytest.approx(whole, abs=1e-5)


def test_checkpoint_of_another_codec_is_refused(trained, tmp_path):
    _, checkpoint = trained
    other = FeatureStore(synthetic_store(str(tmp_path / "o.zarr"), n_per_split=8, weights_seed=9))
    with pytest.raises(CheckpointError, match=r"best\.pt was trained on features of another codec.*o\.zarr"):
        evaluate(checkpoint, other, "eval", tmp_path / "out", log=quiet)


def test_an_eval_only_store_is_calibrated_with_the_models_own_calibration(trained, tmp_path):
    """Training saves the dev calibration with the model: a store that holds only an eval split (an
    eval set extracted on its own) is evaluated with it; a checkpoint without one (last.pt) says how
    to go on."""
    store, checkpoint = trained
    eval_only = FeatureStore(synthetic_store(str(tmp_path / "e.zarr"), n_per_split=8, splits=("eval",)))
    result = evaluate(checkpoint, eval_only, "eval", tmp_path / "out", log=quiet)
    saved = load_checkpoint(checkpoint)["calibration"]["calibration"]
    assert result["calibration"]["applied"] and result["calibration"]["coef"] == saved["coef"]
    assert "the checkpoint" in result["calibration"]["source"] and saved["store"] == store.url
    raw = read_scores(tmp_path / "out" / "scores.txt")
    llr = read_scores(tmp_path / "out" / "scores_calibrated.txt")
    assert np.allclose(llr.scores, apply_calibration(saved, raw.scores))
    last = checkpoint.with_name("last.pt")
    assert "calibration" not in load_checkpoint(last)
    with pytest.raises(DataError, match=r"no split 'dev'.*holds no calibration of its own.*--no-calibrate"):
        evaluate(last, eval_only, "eval", tmp_path / "out2", log=quiet)
    result = evaluate(last, eval_only, "eval", tmp_path / "out2", calibrate=False, log=quiet)
    assert result["n_scored"] == 8


def test_training_fits_the_calibration_on_dev_and_saves_it(trained):
    """best.pt's calibration is the fit of the best model's dev scores, recomputed here."""
    store, checkpoint = trained
    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state, store)
    dev = load_split(store, "dev")
    scores = score_split(model, codec_source(store), dev, 10**6, 10**6, torch.device("cpu"))
    record = state["calibration"]
    expected = fit_calibration(scores, dev.is_bonafide)
    assert record["calibration"]["coef"] == pytest.approx(expected["coef"], rel=1e-6)
    assert record["calibration"]["intercept"] == pytest.approx(expected["intercept"], rel=1e-6, abs=1e-9)
    bona, spoof = scores[dev.is_bonafide], scores[~dev.is_bonafide]
    assert record["thresholds"]["dev_eer"] == pytest.approx(compute_eer(bona, spoof)[0])
    on_disk = json.loads(checkpoint.with_name("calibration.json").read_text())
    assert on_disk["thresholds"] == record["thresholds"] and on_disk["codec_weights"] == store.codec.weights_label


def test_eer_threshold_reproduces_the_official_eer_point():
    """`score >= threshold` gives the miss and false-alarm rates of the official DET curve's EER point."""
    rng = np.random.default_rng(3)
    for n_bona, n_spoof, shift in ((50, 200, 1.0), (7, 5, 0.3), (30, 30, 5.0), (20, 40, -1.0)):
        bona, spoof = rng.normal(shift, 1, n_bona), rng.normal(0, 1, n_spoof)
        eer, threshold = eer_threshold(bona, spoof)
        frr, far, _ = compute_det_curve(bona, spoof)
        k = int(np.argmin(np.abs(frr - far)))
        assert eer == compute_eer(bona, spoof)[0]
        assert (bona < threshold).mean() == frr[k] and (spoof >= threshold).mean() == far[k]


def test_trials_that_failed_extraction_are_listed_and_counted_not_silently_missing(trained, tmp_path):
    """The score file plus not_scored.tsv cover the split's protocol exactly, without overlap."""
    import pandas as pd

    from tests.synthetic import FAILURE_REASON

    store, checkpoint = trained
    result = evaluate(checkpoint, store, "eval", tmp_path, calibrate=True, log=quiet)
    protocol = store.utterances[store.utterances["split"] == "eval"]
    failed = set(protocol.loc[protocol["status"] == "failed", "utt_id"])
    scored = set(read_scores(tmp_path / "scores.txt").utt_ids)
    assert len(failed) == 2 and scored == set(protocol["utt_id"]) - failed  # no score invented for them
    assert set(read_scores(tmp_path / "scores_calibrated.txt").utt_ids) == scored
    listed = pd.read_csv(tmp_path / "not_scored.tsv", sep="\t", dtype=str)
    assert list(listed.columns) == ["utt_id", "label", "stage", "reason"]
    assert set(listed["utt_id"]) == failed and (listed["reason"] == FAILURE_REASON).all()
    assert (listed["stage"] == "audio").all()
    labels = dict(zip(protocol["utt_id"], protocol["label"]))
    assert dict(zip(listed["utt_id"], listed["label"])) == {u: labels[u] for u in failed}
    record = json.loads((tmp_path / "metrics.json").read_text())["not_scored"]
    assert record == result["not_scored"]
    assert record["n"] == 2 and record["n_protocol"] == len(protocol) == len(scored) + 2
    assert record["by_stage"] == {"audio": 2} and "extraction failed" in record["reason"]
    assert record["file"] == str(tmp_path / "not_scored.tsv")
    clean = FeatureStore(synthetic_store(str(tmp_path / "clean.zarr"), n_per_split=24))
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "not_scored.tsv").write_text("stale\n")
    none = evaluate(checkpoint, clean, "eval", tmp_path / "again", calibrate=False, log=quiet)["not_scored"]
    assert none == {"n": 0, "n_protocol": 24, "reason": None, "by_stage": {}, "file": None}
    assert not (tmp_path / "again" / "not_scored.tsv").exists()
