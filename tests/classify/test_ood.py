"""The out-of-distribution warning (classify.ood): fitted at the end of training and saved with the
model and its bundle; pooled features and distances against a plain re-computation; in-domain dev
recordings pass, noise and a tone are flagged; an older model answers None with the reason."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from classify import ood
from classify.bundle import export_model
from classify.checkpoint import load_checkpoint, save_checkpoint
from classify.detector import Detector
from tests.scoring import quiet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def features_of(detector: Detector, wav: np.ndarray, rate: int):
    return detector._encode_waveform(wav, rate)[0]


def test_distances_are_the_shrunk_mahalanobis_distance():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6))
    dev = rng.normal(size=(30, 6)) @ rng.normal(size=(6, 6))
    record = ood.fit(train, dev, quantile=0.9)
    cov = LedoitWolf().fit(train).covariance_
    x = dev[:5] - train.mean(0)
    expected = np.sqrt(np.array([v @ np.linalg.inv(cov) @ v for v in x]) / 6)
    assert ood.distances(record, dev[:5]) == pytest.approx(expected, rel=1e-6)
    assert record["threshold"] == pytest.approx(np.quantile(ood.distances(record, dev), 0.9))
    assert np.mean(ood.distances(record, dev) > record["threshold"]) == pytest.approx(0.1, abs=0.04)


def test_the_run_has_its_record_and_flags_what_is_unlike_its_data(scoring):
    record = load_checkpoint(scoring.run)["ood"]
    summary = json.loads((scoring.run / ood.OOD_FILE).read_text())
    assert summary["threshold"] == record["threshold"] and summary["n_train"] == len(scoring.files("train"))
    assert "UNTRAINED" in summary["codec_weights"]
    detector = Detector.load(scoring.run, batch_seconds=0)
    data, rate = sf.read(scoring.files("dev")[0], dtype="float32", frames=12000)  # < 1 s: one window
    features = features_of(detector, data, rate)
    result, reason = ood.check(detector, features)
    assert reason == "" and set(result) >= {"score", "threshold", "flagged"}
    h = detector.model.weighting(torch.from_numpy(features.codes.astype(np.int64))[None]).double()[0].detach().numpy()
    naive = np.concatenate([h.mean(0), h.std(0)])  # population std, as pooled() computes it
    assert result["score"] == pytest.approx(float(ood.distances(record, naive[None])[0]), rel=1e-6)
    dev_flags = [ood.check(detector, features_of(detector, *sf.read(p, dtype="float32")))[0]["flagged"]
                 for p in scoring.files("dev")]
    assert sum(dev_flags) <= 1
    rng = np.random.default_rng(0)
    noise = (0.5 * rng.standard_normal(32000)).astype(np.float32)
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(32000) / 16000)).astype(np.float32)
    for shifted in (noise, tone):
        result, _ = ood.check(detector, features_of(detector, shifted, 16000))
        assert result["flagged"] and result["score"] > result["threshold"], result


def test_an_older_model_answers_none_with_the_reason_and_a_bundle_keeps_the_record(scoring, tmp_path):
    state = load_checkpoint(scoring.run)
    bundle = export_model(scoring.run, tmp_path / "detector.pt", log=quiet)
    assert torch.equal(torch.load(bundle, weights_only=True)["ood"]["precision"], state["ood"]["precision"])
    del state["ood"]
    save_checkpoint(tmp_path / "old.pt", state)
    detector = Detector.load(tmp_path / "old.pt", batch_seconds=0)
    data, rate = sf.read(scoring.files("dev")[0], dtype="float32")
    result, reason = ood.check(detector, features_of(detector, data, rate))
    assert result is None and "no out-of-distribution record" in reason
