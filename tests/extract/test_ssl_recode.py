"""`--ssl-from`: an SSL stream re-coded from another of the store into another storage, through the
driver, without running the SSL model; its bad sources refused in one line before any work."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from classify.frames import open_reader
from classify.train import train
from extract import ssl as ssl_module
from extract import ssl_stream
from extract.run import extract
from store.reader import FeatureStore
from store.sslstorage import SSLStorage
from store.verify import verify_store
from store.writer import StoreError
from tests.synthetic import tiny_config as train_config

from .conftest import Killed, counting, dies_after, quiet, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SSL = dict(ssl="wavlm-tiny", ssl_weights="untrained")


@pytest.fixture(scope="module")
def source(tiny_corpus, tiny_store, tmp_path_factory) -> str:
    """The tiny store with a float16 SSL stream ``ssl`` whose train utterances are cropped to 1 s."""
    out = tmp_path_factory.mktemp("recode") / "s.zarr"
    shutil.copytree(tiny_store, out)
    extract(tiny_config(tiny_corpus, out, **SSL, ssl_crop=1.0, ssl_storage="float16"), log=quiet)
    return str(out)


@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to build or load the SSL model fails the test."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("the SSL model was loaded")
    for module, name in ((ssl_stream, "front_end"), (ssl_stream, "resolve_weights"), (ssl_module, "front_end")):
        monkeypatch.setattr(module, name, refuse)
    ssl_stream._front_end.cache_clear()


def decoded(store: FeatureStore, name: str, row: int) -> np.ndarray:
    """Utterance ``row`` of stream ``name`` decoded to float32 (an independent re-statement of the source read)."""
    stream = store.stream(name)
    coding = SSLStorage.from_source(stream.spec.source)
    assert not coding.components
    return coding.decode(stream.utterance(row))


def recode(corpus, out, log=quiet, submit=None, **settings):
    return extract(tiny_config(corpus, out, ssl_from="ssl", **settings), submit, log=log)


def test_int8_recoding_is_the_encoding_of_the_source_frames(source, tiny_corpus, tmp_path, no_model):
    out = tmp_path / "r.zarr"
    shutil.copytree(source, out)
    messages = []
    recode(tiny_corpus, out, messages.append, ssl_stream="ssl8", ssl_storage="int8")
    assert any("re-coded from stream 'ssl' (float16), no SSL model run" in m for m in messages)
    store = FeatureStore(str(out))
    spec, plain = store.stream("ssl8").spec, store.stream("ssl").spec
    assert spec.source["recoded_from"] == {"stream": "ssl", "storage": "float16"}
    assert spec.source["weights"] == plain.source["weights"] and spec.source["crop_seconds"] == 1.0
    assert (spec.dtype, spec.frame_shape) == ("int8", (4, 34))
    assert store.root["streams/ssl8"].attrs["config"]["ssl_from"] == "ssl"
    np.testing.assert_array_equal(store.root["streams/ssl8/starts"][...], store.root["streams/ssl/starts"][...])
    assert (store.root["streams/ssl/starts"][...] > 0).any()  # some train utterance really was cropped
    coded = store.stream("ssl8")
    for row in range(len(store.utterances)):
        want = SSLStorage(0, True).encode(decoded(store, "ssl", row))
        np.testing.assert_array_equal(coded.utterance(row), want)
    assert verify_store(str(out)).ok
    # a re-run finds it complete; other settings are refused by the fingerprint
    assert recode(tiny_corpus, out, ssl_stream="ssl8", ssl_storage="int8").ran_units == 0
    with pytest.raises(StoreError, match="storage: stream has 'int8', asked 'pca:4'"):
        recode(tiny_corpus, out, ssl_stream="ssl8", ssl_storage="pca:4")
    # training reads the re-coded stream (ssl_kwargs.stream), decoded like the source within half a step
    reader = open_reader("store", store, "ssl8")
    x = decoded(store, "ssl", 0)
    got = reader.read(np.array([0]), np.arange(len(x))[None])[0].astype(np.float64)
    assert np.abs(got - x).max() <= np.abs(x).max() / 127
    alone = tmp_path / "alone.zarr"  # the source dropped: training can only read the re-coded stream
    shutil.copytree(out, alone)
    shutil.rmtree(alone / "streams" / "ssl")
    config = train_config(variant="ssl", epochs=1, crop_seconds=0.4, ssl_kwargs={"proj_dim": 8, "stream": "ssl8"})
    result = train(config, FeatureStore(str(alone)), tmp_path / "run", log=quiet)
    assert result.n_trainable > 0 and (tmp_path / "run" / "config.json").exists()
    with pytest.raises(Exception, match="no stream 'ssl'"):
        train(train_config(variant="ssl", epochs=1, crop_seconds=0.4, ssl_kwargs={"proj_dim": 8}),
              FeatureStore(str(alone)), tmp_path / "run2", log=quiet)


def test_pca_of_a_layer_subset_fits_the_source_train_frames(source, tiny_corpus, tmp_path, no_model):
    out = tmp_path / "p.zarr"
    shutil.copytree(source, out)
    recode(tiny_corpus, out, ssl_stream="pca", ssl_storage="pca:6:int8", ssl_layers="2,4")
    store = FeatureStore(str(out))
    assert store.stream("pca").spec.source["layers"] == [2, 4]
    mean, basis = (np.asarray(store.root[f"streams/pca/{n}"][...]) for n in ("pca_mean", "pca_basis"))
    train_rows = np.flatnonzero(store.utterances["split"].astype(str).to_numpy() == "train")
    x = np.concatenate([decoded(store, "ssl", r)[:, [1, 3]] for r in train_rows]).astype(np.float64)
    for layer in range(2):  # the basis spans the source train frames' 6 leading directions (an SVD)
        _, _, vt = np.linalg.svd(x[:, layer] - x[:, layer].mean(axis=0), full_matrices=False)
        np.testing.assert_allclose(basis[layer] @ basis[layer].T, vt[:6].T @ vt[:6], atol=1e-3)
    for row in (0, int(train_rows[-1]), len(store.utterances) - 1):
        want = SSLStorage(6, True).encode(decoded(store, "ssl", row)[:, [1, 3]], mean, basis)
        np.testing.assert_array_equal(store.stream("pca").utterance(row), want)


def test_a_killed_recoding_resumes_to_the_same_stream(source, tiny_corpus, tmp_path, no_model):
    whole, out = tmp_path / "w.zarr", tmp_path / "k.zarr"
    shutil.copytree(source, whole)
    shutil.copytree(source, out)
    recode(tiny_corpus, whole, ssl_stream="ssl8", ssl_storage="int8")

    with pytest.raises(Killed):
        recode(tiny_corpus, out, submit=dies_after(1), ssl_stream="ssl8", ssl_storage="int8")
    ran = []

    recode(tiny_corpus, out, submit=counting(ran), ssl_stream="ssl8", ssl_storage="int8")
    assert 0 not in ran and ran
    a, b = FeatureStore(str(out)).stream("ssl8"), FeatureStore(str(whole)).stream("ssl8")
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.data[...], b.data[...])


def _edit_stream(out, name: str, change) -> None:
    meta = out / "streams" / name / "zarr.json"
    doc = json.loads(meta.read_text())
    change(doc["attributes"])
    meta.write_text(json.dumps(doc))


@pytest.mark.parametrize(("settings", "message"), [
    (dict(ssl_from="nope"), "--ssl-from nope: no stream 'nope' to re-code; this store has: codes"),
    (dict(ssl_from="codecish"), "stream 'codecish' is not an SSL stream"),
    (dict(ssl_from="codes"), "stream 'codes' is not an SSL stream"),
    (dict(ssl_from="half"), "stream 'half' is unfinished"),
    (dict(ssl_from="ssl", ssl_layers="1,5"), None),
    (dict(ssl_from="ssl", ssl_layers="3-4", ssl="wavlm-large"), "was made by wavlm-tiny, not --ssl wavlm-large"),
])
def test_bad_sources_are_refused_in_one_line_before_any_work(source, tiny_corpus, tmp_path, no_model, settings, message):
    out = tmp_path / "b.zarr"
    shutil.copytree(source, out)
    for name in ("codecish", "half"):
        shutil.copytree(out / "streams" / "ssl", out / "streams" / name)
    _edit_stream(out, "codecish", lambda a: a["stream"]["source"].update(kind="codec"))
    _edit_stream(out, "half", lambda a: a.update(state="adding"))
    if settings.get("ssl_layers") == "1,5":  # wavlm-tiny has 4 layers; a stream of layers 1-2 lacks 3
        _edit_stream(out, "ssl", lambda a: a["stream"]["source"].update(layers=[1, 2]))
        settings, message = dict(ssl_from="ssl", ssl_layers="2-3"), "asks for layer(s) 3 that stream 'ssl' does not hold"
    before = sorted(p.name for p in (out / "streams").iterdir())
    with pytest.raises((StoreError, ValueError)) as caught:
        extract(tiny_config(tiny_corpus, out, ssl_stream="new", **settings), log=quiet)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert sorted(p.name for p in (out / "streams").iterdir()) == before  # nothing written


def test_the_recoded_stream_needs_its_own_name(tiny_corpus, tmp_path):
    with pytest.raises(ValueError, match="the re-coded stream needs another name"):
        tiny_config(tiny_corpus, tmp_path / "x.zarr", ssl_from="ssl")
    with pytest.raises(ValueError, match="takes no --ssl-crop"):
        tiny_config(tiny_corpus, tmp_path / "x.zarr", ssl_from="ssl", ssl_stream="b", ssl_crop=1.0)


def test_an_int8_stream_recoded_to_float16_is_its_dequantized_frames(source, tiny_corpus, tmp_path, no_model):
    out = tmp_path / "f.zarr"
    shutil.copytree(source, out)
    recode(tiny_corpus, out, ssl_stream="ssl8", ssl_storage="int8")
    extract(tiny_config(tiny_corpus, out, ssl_from="ssl8", ssl_stream="back", ssl_layers="4", ssl_storage="float16"),
            log=quiet)
    store = FeatureStore(str(out))
    assert store.stream("back").spec.source["recoded_from"] == {"stream": "ssl8", "storage": "int8"}
    for row in range(len(store.utterances)):
        stored = store.stream("ssl8").utterance(row)[:, 3]
        scale = stored[:, -2:].copy().view(np.float16).astype(np.float32)  # the scale's float16 bits
        want = (stored[:, :-2].astype(np.float32) * scale).astype(np.float16)[:, None]
        np.testing.assert_array_equal(store.stream("back").utterance(row), want)
