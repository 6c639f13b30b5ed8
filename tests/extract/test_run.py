"""End-to-end extraction: the store holds EnCodec's own codes, losslessly, and survives kills."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import zarr
from encodec.utils import convert_audio

from extract.audio import load_audio
from extract.codec import new_model
from extract.run import ExtractConfig, extract
from store.reader import FeatureStore
from store.writer import StoreError

from .conftest import Killed, counting, dies_after, quiet, tiny_config


def store_model(store: FeatureStore):
    model = new_model()
    model.load_state_dict(torch.load(io.BytesIO(store.files.read_bytes("codec_weights.th")), weights_only=True))
    model.set_target_bandwidth(store.codec.bandwidth)
    return model


def test_store_codes_equal_encodec_encode_of_each_file(tiny_corpus, tmp_path):
    """With one utterance per batch the store must hold exactly EncodecModel.encode(convert_audio(...))."""
    out = tmp_path / "solo.zarr"
    extract(tiny_config(tiny_corpus, out, batch_seconds=0), log=quiet)
    store = FeatureStore(str(out))
    model = store_model(store)
    table = store.utterances
    assert (table["status"] == "ok").all() and len(table) == 14
    for row in table.itertuples():
        data, sr = sf.read(row.path, dtype="float32", always_2d=True)
        wav = convert_audio(torch.from_numpy(data.T.copy()), sr, 24000, 1)
        with torch.no_grad():
            expected = model.encode(wav[None])[0][0][0].t().numpy()
            latent = model.encoder(wav[None])[0].t().numpy()
        got = store.utterance_codes(row.Index)
        assert got.dtype == np.uint16 and np.array_equal(got, expected), row.utt_id
        np.testing.assert_array_equal(store.utterance_latent(row.Index), latent.astype(np.float16))
        assert row.n_frames == expected.shape[0] and row.frame_offset == store.offsets[row.Index]


def test_embeddings_rebuilt_from_store_equal_the_codecs_dequantization(tiny_store):
    store = FeatureStore(tiny_store)
    model = store_model(store)
    codes = store.utterance_codes(3)
    dense = store.embeddings(codes)  # [frames, n_q, dim]
    q = torch.from_numpy(codes.astype(np.int64)).t()  # [n_q, frames]
    for level, layer in enumerate(model.quantizer.vq.layers[: store.codec.n_q]):
        per_level = layer.decode(q[level][None])[0].t().numpy()  # EnCodec's own dequantization
        assert np.array_equal(dense[:, level], per_level)
    summed = model.quantizer.decode(q[:, None])[0].t().numpy()
    np.testing.assert_allclose(dense.sum(1), summed, atol=1e-5)


def test_store_layout_and_provenance(tiny_store):
    store = FeatureStore(tiny_store)
    n = len(store.utterances)
    assert store.offsets.shape == (n + 1,) and store.offsets[0] == 0 and store.offsets[-1] == store.codes.shape[0]
    assert np.array_equal(np.diff(store.offsets), store.utterances["n_frames"].to_numpy())
    assert store.codebooks.shape == (8, 1024, 128) and store.codes.shape[1] == 8
    assert int(store.codes.max()) < 1024
    assert store.latent.shape == (store.codes.shape[0], 128) and store.latent.dtype == np.float16
    attrs = store.attrs
    assert attrs["weights"]["source"] == "untrained" and "UNTRAINED" in attrs["weights"]["label"]
    assert attrs["codec"]["bandwidth"] == 6.0 and attrs["codec"]["frame_rate"] == 75
    assert {"torch", "encodec", "zarr"} <= set(attrs["versions"]) and attrs["created"] and attrs["completed"]
    assert not store.files.exists("parts")
    assert set(store.utterances["split"]) == {"train", "dev", "eval"}
    for record in (attrs["provenance"], attrs["finished_by"]):  # what made it: created, finished
        assert record["project"] == "rvq-antispoof" and record["device"] == "cpu" and record["command"]
        assert {"version", "git", "lock", "python", "host", "created"} <= record.keys()


def test_resume_after_kill_equals_uninterrupted_run(tiny_corpus, tiny_store, tmp_path):
    out = tmp_path / "killed.zarr"
    config = tiny_config(tiny_corpus, out)

    with pytest.raises(Killed):
        extract(config, dies_after(2), log=quiet)
    assert zarr.open_group(str(out), mode="r").attrs["state"] == "extracting"
    # a unit whose data was written but not its records (killed mid-commit) is redone
    zarr.open_group(str(out), mode="r+").require_group("parts/u000002").create_array("codes", data=np.zeros((3, 8), np.uint16))

    ran = []

    result = extract(tiny_config(tiny_corpus, out), counting(ran), log=quiet)
    assert result.resumed_units == 2 and sorted(ran) == [2, 3]
    a, b = FeatureStore(str(out)), FeatureStore(tiny_store)
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.offsets, b.offsets)
    assert np.array_equal(a.latent[...], b.latent[...])
    pd.testing.assert_frame_equal(a.utterances.drop(columns="path"), b.utterances.drop(columns="path"))
    # a finished store is not touched again
    assert extract(tiny_config(tiny_corpus, out), counting(ran), log=quiet).ran_units == 0


def test_resume_with_other_settings_is_refused(tiny_corpus, tiny_store):
    with pytest.raises(StoreError, match="bandwidth"):
        extract(tiny_config(tiny_corpus, tiny_store, bandwidth=3.0), log=quiet)


def test_never_overwrites_a_foreign_folder(tiny_corpus, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not a feature store"):
        extract(tiny_config(tiny_corpus, out), log=quiet)
    assert (out / "thesis.tex").read_text() == "precious"


def test_config_validation():
    with pytest.raises(ValueError, match="kmeans_frames"):
        ExtractConfig(dataset="demo", root="x", out="y", kmeans_frames=10)
    with pytest.raises(ValueError, match="unit_size"):
        ExtractConfig(dataset="demo", root="x", out="y", unit_size=0)


def test_saved_untrained_weights_stay_untrained_in_a_second_store(tiny_corpus, tiny_store, tmp_path):
    """Extracting with the weights an untrained extraction saved (the way to give a second corpus the
    same codec) gives a store that says UNTRAINED, with the same weights and the same codes."""
    first = FeatureStore(tiny_store)
    weights = tmp_path / "codec_weights.th"
    weights.write_bytes(first.files.read_bytes("codec_weights.th"))
    out = tmp_path / "again.zarr"
    result = extract(tiny_config(tiny_corpus, out, weights=str(weights)), log=quiet)
    second = FeatureStore(str(out))
    recorded = second.attrs["weights"]
    assert recorded["source"] == "file" and recorded["trained"] is False and str(weights.resolve()) in recorded["origin"]
    assert recorded["sha256"] == first.attrs["weights"]["sha256"]
    for label in (result.weights.label, recorded["label"], second.codec.weights_label, second.attrs["summary"]["weights"]):
        assert label.startswith("UNTRAINED EnCodec 24 kHz") and "pretrained" not in label
    assert second.codec.trained is False and not second.codec.compatible_with(first.codec)
    assert np.array_equal(second.codes, first.codes)


def test_a_stream_asked_of_a_finished_store_is_added_without_touching_it(tiny_corpus, tiny_store, tmp_path):
    out = tmp_path / "late.zarr"
    extract(tiny_config(tiny_corpus, out, latent=False, energy=False), log=quiet)
    root_files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    messages: list[str] = []
    result = extract(tiny_config(tiny_corpus, out, latent=True, energy=True), log=messages.append)
    assert result.added_streams == ["latent", "energy"]
    assert all(p.read_bytes() == data for p, data in root_files.items())  # codes, tables, attributes untouched
    late, whole = FeatureStore(str(out)), FeatureStore(tiny_store)
    assert [late.streams[n].array for n in ("latent", "energy")] == ["streams/latent/data", "streams/energy/data"]
    # the same codec, batches and audio: the latent added later is the one extracted with the codes
    assert np.array_equal(late.latent[...], whole.latent[...])
    assert np.array_equal(late.stream("energy").data[...], whole.stream("energy").data[...])
    assert extract(tiny_config(tiny_corpus, out, latent=True, energy=True), log=messages.append).ran_units == 0
    assert "already complete; nothing to do" in messages[-1]


def test_energy_stream_is_each_codec_frames_log_energy(tiny_store):
    store = FeatureStore(tiny_store)
    energy = store.stream("energy")
    assert energy.spec.frame_rate == 75 and np.array_equal(energy.offsets, store.offsets)
    for row in (0, len(store.utterances) - 1):
        wav = load_audio(store.utterances["path"].iloc[row]).numpy()[0].astype(np.float64)
        frames = [wav[t * 320 : (t + 1) * 320] for t in range(-(-wav.size // 320))]
        expected = np.array([10 * np.log10(np.mean(f**2) + 1e-10) for f in frames], dtype=np.float16)
        np.testing.assert_array_equal(energy.utterance(row)[:, 0], expected)
