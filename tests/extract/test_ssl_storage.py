"""`--ssl-storage`: the SSL stream stored as int8 or a PCA basis fitted on train, recorded in the
stream, read back as frames by the training reader within the coding's bounds of the float16
stream of the same model; float16 streams that record no storage still open and resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from classify.frames import open_reader
from extract.run import extract
from store.reader import FeatureStore
from store.verify import verify_store
from store.writer import StoreError

from .conftest import quiet, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SSL = dict(ssl="wavlm-tiny", ssl_weights="untrained")


@pytest.fixture(scope="module")
def stored(tiny_corpus, tiny_store, tmp_path_factory) -> str:
    """A copy of the tiny store with the same SSL model's stream added three times: float16, int8, pca:12."""
    out = tmp_path_factory.mktemp("storage") / "s.zarr"
    shutil.copytree(tiny_store, out)
    for name, storage in (("ssl", "float16"), ("ssl8", "int8"), ("sslpca", "pca:12")):
        extract(tiny_config(tiny_corpus, out, **SSL, ssl_stream=name, ssl_storage=storage), log=quiet)
    return str(out)


def frames(store: FeatureStore, name: str) -> list[np.ndarray]:
    """Each utterance's frames as the training reader returns them."""
    reader = open_reader("store", store, name)
    return [reader.read(np.array([r]), np.arange(n)[None])[0] for r, n in enumerate(reader.counts)]


def test_storage_is_recorded_and_sized(stored):
    store = FeatureStore(stored)
    specs = {name: store.stream(name).spec for name in ("ssl", "ssl8", "sslpca")}
    assert [specs[n].source["storage"]["name"] for n in specs] == ["float16", "int8", "pca:12"]
    assert (specs["ssl8"].dtype, specs["ssl8"].frame_shape) == ("int8", (4, 34))
    assert (specs["sslpca"].dtype, specs["sslpca"].frame_shape) == ("float16", (4, 12))
    assert specs["sslpca"].source["hidden"] == 32  # what the model is built for
    assert store.root["streams/sslpca/pca_basis"].shape == (4, 32, 12)
    fit = store.root["streams/sslpca"].attrs["pca_fit"]
    assert fit["split"] == "train" and fit["frames"] > 12
    config = store.root["streams/ssl8"].attrs["config"]
    assert config["storage"] == "int8"
    report = verify_store(stored)  # every stream's arrays, shapes, dtypes and checksums as recorded
    assert report.ok, report


def test_int8_frames_are_the_float16_frames_within_half_a_step(stored):
    store = FeatureStore(stored)
    for plain, coded in zip(frames(store, "ssl"), frames(store, "ssl8")):
        x = plain.astype(np.float64)
        step = np.abs(x).max(axis=-1, keepdims=True) / 127
        # half a step, plus float16's rounding of the float16 frames and of the decoded ones
        assert (np.abs(coded - x) <= step / 2 * 1.01 + np.abs(x) * 2**-10 + 1e-6).all()
        assert coded.dtype == np.float16 and coded.shape == plain.shape


def test_pca_frames_are_as_close_as_the_best_rank_k_fit_of_train(stored):
    store = FeatureStore(stored)
    train = np.flatnonzero(store.utterances["split"].astype(str).to_numpy() == "train")
    plain = np.concatenate([frames(store, "ssl")[r] for r in train]).astype(np.float64)
    coded = np.concatenate([frames(store, "sslpca")[r] for r in train]).astype(np.float64)
    for layer in range(4):
        x = plain[:, layer]
        m = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - m, full_matrices=False)  # the independent rank-12 fit
        best = np.linalg.norm(x - (m + (x - m) @ vt[:12].T @ vt[:12]))
        got = np.linalg.norm(x - coded[:, layer])
        # fitted on (every, here) train utterance's float32 frames: as good as the SVD, to float16 rounding
        assert got <= best * 1.02 + 1e-3 * np.linalg.norm(x)


def test_a_stream_without_storage_opens_and_resumes_as_float16(stored, tiny_corpus, tmp_path):
    old = tmp_path / "old.zarr"
    shutil.copytree(stored, old)
    meta = old / "streams" / "ssl" / "zarr.json"
    doc = json.loads(meta.read_text())
    attrs = doc["attributes"]
    del attrs["stream"]["source"]["storage"], attrs["config"]["storage"]  # as made before --ssl-storage
    meta.write_text(json.dumps(doc))
    store = FeatureStore(str(old))
    assert "storage" not in store.stream("ssl").spec.source
    for a, b in zip(frames(store, "ssl"), frames(FeatureStore(stored), "ssl")):
        np.testing.assert_array_equal(a, b)
    messages = []
    extract(tiny_config(tiny_corpus, old, **SSL), log=messages.append)  # none asked: the stream's own, complete
    assert any("already complete" in m for m in messages)
    with pytest.raises(StoreError, match="storage: stream has 'float16', asked 'int8'"):
        extract(tiny_config(tiny_corpus, old, **SSL, ssl_storage="int8"), log=quiet)


def test_a_new_stream_is_int8_unless_asked_and_an_existing_one_keeps_its_storage(stored, tiny_corpus, tmp_path):
    from extract.ssl_stream import DEFAULT_STORAGE

    assert DEFAULT_STORAGE == "int8"  # BENCHMARKS section 18's choice; the rest of the test follows it
    copy = tmp_path / "s.zarr"
    shutil.copytree(stored, copy)
    extract(tiny_config(tiny_corpus, copy, **SSL, ssl_stream="plain"), log=quiet)  # no --ssl-storage
    store = FeatureStore(str(copy))
    made = store.stream("plain")
    assert made.spec.source["storage"]["name"] == "int8" and store.root["streams/plain"].attrs["config"]["storage"] == "int8"
    explicit = store.stream("ssl8")  # the same model asked for int8 explicitly
    for row in range(len(store.utterances)):
        np.testing.assert_array_equal(made.utterance(row), explicit.utterance(row))
    # re-running the commands that made the float16 and the pca:12 streams without --ssl-storage
    # finds them complete instead of refusing them as made otherwise
    for name in ("ssl", "sslpca"):
        messages = []
        extract(tiny_config(tiny_corpus, copy, **SSL, ssl_stream=name), log=messages.append)
        assert any(f"stream {name!r} is already complete" in m for m in messages), messages
    assert FeatureStore(str(copy)).stream("ssl").spec.source["storage"]["name"] == "float16"


def test_a_pca_basis_is_written_only_while_the_runs_lease_is_held(stored, tiny_corpus, tmp_path):
    import zarr

    from common.lease import Lease, LeaseLost
    from extract.driver import store_rows
    from extract.ssl_stream import ssl_backend
    from store.format import StoreFiles

    copy = tmp_path / "s.zarr"
    shutil.copytree(stored, copy)
    group = zarr.open_group(str(copy), mode="r+")["streams/sslpca"]
    kept = np.asarray(group["pca_basis"][...])
    for name in ("pca_mean", "pca_basis"):  # as a run stopped before its basis was written
        del group[name]
    config = tiny_config(tiny_corpus, copy, **SSL, ssl_stream="sslpca", ssl_storage="pca:12", batch_seconds=8)
    rows, skip = store_rows(StoreFiles(str(copy)))
    with Lease(str(copy), "store", log=quiet) as lease:  # another run holds the store now
        stale = ssl_backend(config, "cpu", 1, "a-token-of-an-earlier-run")
        with pytest.raises(LeaseLost, match=r"s\.zarr: the lease this work was started under is no longer held"):
            stale.prepare(rows, skip, quiet)
        assert "pca_basis" not in zarr.open_group(str(copy), mode="r")["streams/sslpca"]
        ssl_backend(config, "cpu", 1, lease.token).prepare(rows, skip, quiet)  # the holder's token: written
    np.testing.assert_allclose(zarr.open_group(str(copy), mode="r")["streams/sslpca/pca_basis"][...], kept, atol=1e-5)


def test_online_features_of_a_pca_stream_are_its_cached_frames(stored):
    """`--ssl-online` over a store whose stream is pca:K: the frames computed from the audio are
    projected onto the stream's basis (which the model carries) and reconstructed, as the cached
    stream's reader gives them; unprojected they would differ by the PCA's residual."""
    from dataclasses import asdict

    from classify.rebuild import for_store
    from tests.synthetic import tiny_config as train_config

    from .test_ssl import assert_same_batches

    store = FeatureStore(stored)
    config = asdict(train_config(variant="ssl+mean", ssl_kwargs={"stream": "sslpca", "layers": "2-4"}))
    model = for_store(config, store)
    basis = store.root["streams/sslpca/pca_basis"][...]
    np.testing.assert_array_equal(model.ssl_pca_basis.numpy(), basis[1:])  # the layers it reads, in its state
    assert "ssl_pca_basis" in model.state_dict()
    assert_same_batches(store, config, {"stream": "sslpca", "layers": "2-4", "online": True})
    plain, coded = frames(store, "ssl")[0][:, 1:], frames(store, "sslpca")[0][:, 1:]
    assert np.abs(plain.astype(np.float32) - coded).max() > 0.05  # what the comparison above tells apart


def test_a_pca_model_loads_parameters_saved_with_and_without_its_basis(stored):
    """A run resumed from parameters saved before models carried their basis keeps the basis it was
    built with; a model's saved basis is rebuilt over a store whose stream is float16 (evaluation on
    another store) without an unexpected key."""
    from dataclasses import asdict

    import torch

    from classify.rebuild import build, for_store, store_inputs
    from tests.synthetic import tiny_config as train_config

    store = FeatureStore(stored)
    config = asdict(train_config(variant="ssl+mean", ssl_kwargs={"stream": "sslpca"}))
    model = for_store(config, store)
    saved = {k: v for k, v in model.state_dict().items() if not k.startswith("ssl_pca")}
    with torch.no_grad():
        model.ssl_pca_basis.mul_(2)
    changed = model.ssl_pca_basis.clone()
    model.load_state_dict(saved)  # strict: the missing buffers keep their values
    assert torch.equal(model.ssl_pca_basis, changed)
    plain = {**config, "ssl_kwargs": {"stream": "ssl"}}
    again = build(plain, *store_inputs(plain, store), model.state_dict())
    assert torch.equal(again.ssl_pca_basis, changed) and again.ssl_storage.name == "float16"
    assert "ssl_pca_basis" not in for_store(plain, store).state_dict()  # a float16 stream's model has none


@pytest.mark.parametrize("trained_on", ["ssl8", "sslpca"])
def test_a_coded_model_evaluated_on_a_float16_store_reads_its_frames_coded_as_in_training(
        stored, trained_on, tiny_corpus, tiny_store, tmp_path):
    """A model trained on an int8 or pca:K stream, evaluated on another store whose stream (same SSL
    model, same name) is float16: the evaluation reader codes that store's frames as the model's
    training stream was coded (its own basis), so they match the training store's frames of the same
    audio up to float16 rounding of the coding's input; read as they are they would not. On its own
    training store, and for a model trained on float16 frames, nothing is applied."""
    from dataclasses import asdict

    from classify.checkpoint import model_from_checkpoint
    from classify.rebuild import for_store
    from classify.sources import make_source, stored_as_trained
    from tests.synthetic import tiny_config as train_config

    train = FeatureStore(stored)
    config = asdict(train_config(variant="ssl+mean", ssl_kwargs={"stream": trained_on, "layers": "2-4"}))
    model = for_store(config, train)
    assert stored_as_trained(train, trained_on, model) is None  # its training store: as trained already
    checkpoint = {"config": config, "ssl": train.streams[trained_on].source, "model": model.state_dict()}

    other = tmp_path / "f16.zarr"
    shutil.copytree(tiny_store, other)
    extract(tiny_config(tiny_corpus, other, **SSL, ssl_stream=trained_on, ssl_storage="float16"), log=quiet)
    evaluated = FeatureStore(str(other))
    again = model_from_checkpoint(checkpoint, evaluated)
    assert again.ssl_storage == model.ssl_storage  # the storage it was trained on, not the store's
    reader = make_source(evaluated, again, config).lead.reader
    rows = np.arange(len(reader.counts))
    for row in rows[reader.counts > 0][:4]:
        n = int(reader.counts[row])
        got = reader.read(np.array([row]), np.arange(n)[None])[0].astype(np.float32)
        coded = frames(train, trained_on)[row][:, 1:].astype(np.float32)  # extraction's coding, layers 2-4
        plain = frames(evaluated, trained_on)[row][:, 1:].astype(np.float32)
        step = np.abs(plain).max(axis=-1, keepdims=True) / 127  # an int8 step of each frame's layer
        assert np.abs(got - coded).max() <= max(1.01 * step.max(), 0.02 * np.abs(coded).max())
        # what the reader's coding changes: read as they are, the frames would be further off
        if trained_on == "ssl8":  # the same int8 steps (to a float16 ulp of the scale), but where float16
            # rounding of the input flips one
            same, left = (np.mean(np.isclose(a, coded, rtol=2e-3, atol=1e-6)) for a in (got, plain))
            assert same > 0.9 > 0.5 > left
        else:  # the PCA's residual
            assert np.sqrt(np.mean((plain - coded) ** 2)) > 4 * np.sqrt(np.mean((got - coded) ** 2))

    plain_model = for_store({**config, "ssl_kwargs": {"stream": "ssl", "layers": "2-4"}}, train)
    assert stored_as_trained(train, "ssl8", plain_model) is None  # a float16 model reads coded frames as they are
