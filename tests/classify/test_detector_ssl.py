"""The Detector with a model of an SSL variant (`ssl+mean`): the SSL stream is computed from the audio
by the SSL model the training store's stream was made with, and a file's score equals evaluate's
score from the stores (train+dev, and the eval store extracted on its own), bundle included.

Uses the `wavlm-tiny` test architecture with UNTRAINED (seeded) weights: nothing is downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from classify.bundle import export_model, read_model
from classify.checkpoint import load_checkpoint, save_checkpoint
from classify.detector import Detector
from classify.evaluate import evaluate
from classify.frames import open_reader
from classify.scorefiles import read_scores
from classify.train import train
from extract.run import extract
from extract.ssl import SSLWeightsError
from store.format import WEIGHTS
from store.reader import FeatureStore
from tests.scoring import assert_explains_as_scored, extract_config, quiet, train_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SSL = dict(ssl="wavlm-tiny", ssl_weights="untrained")


def _train_ssl_mean(store: Path, run: Path) -> None:
    """A 2-epoch `ssl+mean` run on ``store``, with one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(train_config(epochs=2, variant="ssl+mean", max_eval_seconds=1.0), FeatureStore(str(store)), run, log=quiet)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ssl_scoring(scoring, tmp_path_factory) -> dict:
    """Copies of the scoring workflow's stores with the untrained wavlm-tiny stream added, and an
    `ssl+mean` run trained on the train+dev copy."""
    root = tmp_path_factory.mktemp("ssl_scoring")
    traindev = shutil.copytree(scoring.traindev, root / "traindev.zarr")
    eval_store = shutil.copytree(scoring.eval_store, root / "eval.zarr")
    extract(extract_config(scoring.corpus, traindev, splits=["train", "dev"], **SSL), log=quiet)
    extract(extract_config(scoring.corpus, eval_store, splits=["eval"], weights=str(Path(scoring.traindev) / WEIGHTS),
                           **SSL), log=quiet)
    _train_ssl_mean(traindev, root / "run")
    return {"traindev": str(traindev), "eval": str(eval_store), "run": root / "run", "root": root}


def _evaluated(store_url: str, split: str, run: Path, out: Path) -> dict[str, float]:
    """path -> evaluate's raw score for the split's utterances."""
    store = FeatureStore(store_url)
    evaluate(run, store, split, out, log=quiet)
    raw = read_scores(out / "scores.txt")
    path_of = store.utterances.set_index("utt_id")["path"]
    return {path_of[u]: s for u, s in zip(raw.utt_ids, raw.scores)}


def test_an_ssl_model_scores_files_as_evaluate_scores_them(ssl_scoring, scoring, tmp_path):
    run = ssl_scoring["run"]
    detector = Detector.load(run, batch_seconds=0)
    assert "UNTRAINED" in detector.ssl_label and "wavlm-tiny" not in detector.codec_label
    assert detector.weights_label.startswith(detector.codec_label) and "SSL weights: UNTRAINED" in detector.weights_label
    assert detector.ssl_source.startswith("rebuilt from seed=")
    assert detector.describe()["ssl_weights"]["label"] == detector.ssl_label
    files: list[str] = []
    expected: dict[str, float] = {}
    for split, store in (("dev", ssl_scoring["traindev"]), ("eval", ssl_scoring["eval"])):
        expected.update(_evaluated(store, split, run, tmp_path / split))
        files += scoring.files(split)
    assert set(expected) == set(files)  # every utterance has SSL frames: none left out by evaluate
    rows = detector.score_files(files)
    assert all(r.ok for r in rows), [r.error for r in rows if not r.ok]
    got = {r.path: r.score for r in rows}
    # one file per batch and one thread on both sides: the same codes and SSL frames, the same score
    np.testing.assert_allclose([got[p] for p in files], [expected[p] for p in files], rtol=0, atol=1e-4)
    assert len({round(s, 6) for s in got.values()}) > 1  # the scores are not constant

    # the waveform API gives the file's score too (the samples at the file's own rate, converted to
    # 24 kHz for the codec and to 16 kHz for the SSL model, as a file is)
    data, rate = sf.read(files[0], dtype="float32")
    assert detector.score(data, rate) == pytest.approx(got[files[0]], abs=1e-4)
    _check_explanation(detector, data, rate, got[files[0]])

    # a bundle scores the same, with the SSL weights rebuilt from their record
    bundle = export_model(run, tmp_path / "detector.pt", log=quiet)
    assert read_model(bundle).state["ssl"]["weights"]["source"] == "untrained"
    again = Detector.load(bundle, batch_seconds=0).score_files(files[:3])
    assert [r.score for r in again] == pytest.approx([got[p] for p in files[:3]], abs=1e-6)


def _check_explanation(detector: Detector, data: np.ndarray, rate: int, score: float) -> None:
    """An SSL variant's explanation: its score is the file's; a level already at its mean codeword in
    the model contributes nothing (the contribution is that level's, not another's); the first
    window's contribution is the score change when its pairs (2 SSL + 3 codec frames each) are cut
    from the features, here cut by hand."""
    import copy
    import dataclasses

    explanation = detector.explain(data, rate, window_seconds=0.2)
    assert explanation.score == pytest.approx(score, abs=1e-4)
    n_q = detector.codec.n_q
    assert explanation.levels.shape == (n_q,) and np.isfinite(explanation.levels).all()
    assert abs(explanation.levels[1]) > 1e-6, explanation.levels
    assert "deleted from both streams" in explanation.method and "SSL weights: UNTRAINED" in explanation.codec_weights

    features, _ = detector._encode_waveform(data, rate)
    pairs = features.ssl.shape[0] // 2
    window = round(explanation.window_seconds / 0.04)
    assert window == 5 and explanation.times[-1] == pytest.approx((pairs - window / 2) * 0.04)
    cut = dataclasses.replace(features, codes=features.codes[3 * window :], ssl=features.ssl[2 * window :])
    expected = explanation.score - detector.score_features([cut])[0]
    assert explanation.over_time[0] == pytest.approx(expected, abs=1e-6)

    original = detector.model
    occluded = copy.deepcopy(original)
    w = occluded.weighting
    with torch.no_grad():
        table = w.table.view(w.n_q, w.n_codes, w.dim)
        table[1] = table[1].mean(dim=0)
    detector.model = occluded
    try:
        again = detector.explain(data, rate, window_seconds=0.2)
    finally:
        detector.model = original
    assert again.levels[1] == pytest.approx(0.0, abs=1e-6) and abs(again.score - explanation.score) > 1e-6


def test_an_ssl_explanation_scores_as_score_does_also_under_autocast(ssl_scoring, scoring):
    detector = Detector.load(ssl_scoring["run"], batch_seconds=0)
    assert_explains_as_scored(detector, *sf.read(scoring.files("eval")[2], dtype="float32"))


def test_ssl_weights_that_are_not_the_models_are_refused(ssl_scoring, tmp_path):
    state = load_checkpoint(ssl_scoring["run"])
    state["ssl"] = {**state["ssl"], "weights": {**state["ssl"]["weights"], "source": "file", "sha256": "ab" * 32,
                                                 "origin": str(tmp_path / "gone.pth")}}
    save_checkpoint(tmp_path / "other.pt", state)
    with pytest.raises(SSLWeightsError, match=r"cannot find the SSL weights.*gone\.pth.*--ssl-weights"):
        Detector.load(tmp_path / "other.pt")
    wrong = tmp_path / "wrong.pth"
    torch.save({"x": torch.zeros(1)}, wrong)
    with pytest.raises(SSLWeightsError, match=r"--ssl-weights .*wrong\.pth: sha256 [0-9a-f]{12}\.\.\., not the model's"):
        Detector.load(tmp_path / "other.pt", ssl_weights=wrong)


def test_new_files_frames_are_given_the_int8_round_trip_of_an_int8_model():
    from classify.detector import as_trained
    from store.sslstorage import SSLStorage

    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 2, 16)).astype(np.float32) * 4
    int8 = SSLStorage.parse("int8")
    # as the training reader decodes an int8 stream (encoded at extraction, decoded, float16)
    np.testing.assert_array_equal(as_trained(x, int8), int8.decode(int8.encode(x)).astype(np.float16))
    assert not np.array_equal(as_trained(x, int8), x.astype(np.float16))
    for plain in (SSLStorage(), SSLStorage(8)):  # float16; a PCA (its basis is not the model's): as computed
        assert as_trained(x, plain) is x


@pytest.fixture(scope="module")
def pca_scoring(scoring, tmp_path_factory) -> dict:
    """A copy of the train+dev store with the untrained wavlm-tiny stream stored as pca:8 (of 32
    dimensions), and an `ssl+mean` run trained on it."""
    root = tmp_path_factory.mktemp("pca_scoring")
    traindev = shutil.copytree(scoring.traindev, root / "traindev.zarr")
    extract(extract_config(scoring.corpus, traindev, splits=["train", "dev"], ssl_storage="pca:8", **SSL), log=quiet)
    _train_ssl_mean(traindev, root / "run")
    return {"traindev": str(traindev), "run": root / "run"}


def test_a_pca_model_scores_new_audio_on_the_frames_its_store_gave_it(pca_scoring, scoring, tmp_path):
    """The model carries its stream's PCA basis (checkpoint and bundle): new audio's SSL frames are
    projected and reconstructed as the training reader decoded the store's, so a file scores as
    evaluate scores it from the store; unprojected frames score otherwise. A model saved before
    models carried the basis takes it from its training store, or (store gone) scores unprojected
    frames with a warning."""
    run, files = pca_scoring["run"], scoring.files("dev")
    expected = _evaluated(pca_scoring["traindev"], "dev", run, tmp_path / "dev")
    state = load_checkpoint(run)
    basis = FeatureStore(pca_scoring["traindev"]).root["streams/ssl/pca_basis"][...]
    assert state["ssl"]["storage"]["name"] == "pca:8"
    np.testing.assert_array_equal(state["model"]["ssl_pca_basis"].numpy(), basis)
    detector = Detector.load(run, batch_seconds=0)
    got = [r.score for r in detector.score_files(files)]
    # float16 frames computed afresh, projected: the stored frames to float16 rounding, the same scores
    np.testing.assert_allclose(got, [expected[p] for p in files], rtol=0, atol=3e-5)
    features = next(detector.front_end.encode_files(files[:1], 0, None))[0][1]
    source, split = detector.features_source([features])
    stored = FeatureStore(pca_scoring["traindev"])
    row = int(np.flatnonzero(stored.utterances["path"].to_numpy() == files[0])[0])
    reader, n = open_reader("store", stored, "ssl"), features.ssl.shape[0]
    from_store = reader.read(np.array([row]), np.arange(n)[None])[0].astype(np.float32)
    np.testing.assert_allclose(source.reader("ssl").read(np.array([0]), np.arange(n)[None])[0], from_store,
                               rtol=1e-2, atol=1e-2)
    assert np.abs(features.ssl - from_store).max() > 0.1  # unprojected they are another input
    detector.model.ssl_as_trained = lambda frames: frames  # the defect: frames scored unprojected
    unprojected = [r.score for r in detector.score_files(files)]
    assert np.abs(np.subtract(unprojected, got)).max() > 3e-4, (unprojected, got)

    bundle = export_model(run, tmp_path / "detector.pt", log=quiet)
    assert "ssl_pca_basis" in read_model(bundle).state["model"]
    again = [r.score for r in Detector.load(bundle, batch_seconds=0).score_files(files)]
    assert again == pytest.approx(got, abs=1e-6)

    old = {**state, "model": {k: v for k, v in state["model"].items() if not k.startswith("ssl_pca")}}
    save_checkpoint(tmp_path / "old.pt", old)  # as saved before models carried the basis
    from_store = [r.score for r in Detector.load(tmp_path / "old.pt", batch_seconds=0).score_files(files)]
    assert from_store == pytest.approx(got, abs=1e-6)
    save_checkpoint(tmp_path / "gone.pt", {**old, "store": {**old["store"], "url": str(tmp_path / "gone.zarr")}})
    with pytest.warns(UserWarning, match=r"gone\.pt: a model of a pca:K SSL stream saved without its basis.*unprojected"):
        blind = Detector.load(tmp_path / "gone.pt", batch_seconds=0,
                              codec_weights=Path(pca_scoring["traindev"]) / WEIGHTS)
    assert [r.score for r in blind.score_files(files)] == pytest.approx(unprojected, abs=1e-6)
