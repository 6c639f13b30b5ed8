"""`pipeline extract --views`: a view's frames are the codec's frames of the augmented audio, made
again bit for bit, resumable, repairable, refused when a view of the same name has another recipe."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from encodec.utils import convert_audio

from extract.augment import apply_view, load_views
from extract.repair import repair_store
from extract.run import extract
from extract.views import ViewAudio
from store.reader import FeatureStore
from store.verify import verify_store
from store.writer import StoreError

from .conftest import Killed, counting, dies_after, quiet, tiny_config
from .test_run import store_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VIEWS = """
[view.noisy]
seed = 11
splits = ["train"]
chain = [{augment = "noise", snr_db = [5, 15]}, {augment = "gain", db = [-6, 6]}]

[view.ulaw]
seed = 12
splits = ["eval"]
streams = ["codes"]
chain = [{augment = "telephony", codec = "ulaw"}]
"""


@pytest.fixture(scope="module")
def views_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("views") / "views.toml"
    path.write_text(VIEWS)
    return path


def copy_store(tiny_store: str, to) -> str:
    shutil.copytree(tiny_store, to)
    return str(to)


@pytest.fixture(scope="module")
def viewed(tiny_corpus, tiny_store, views_file, tmp_path_factory):
    out = copy_store(tiny_store, tmp_path_factory.mktemp("viewed") / "s.zarr")
    messages: list[str] = []
    result = extract(tiny_config(tiny_corpus, out, views=str(views_file)), log=messages.append)
    return out, result, messages


def test_views_are_added_to_a_finished_store_after_their_estimate(viewed, tiny_store):
    out, result, messages = viewed
    assert result.views == ["noisy", "ulaw"] and result.resumed_units == 0
    assert messages.index(next(m for m in messages if m.startswith("estimated cost"))) < \
        messages.index(next(m for m in messages if m.startswith("adding streams")))
    store, clean = FeatureStore(out), FeatureStore(tiny_store)
    assert np.array_equal(store.codes, clean.codes)  # the clean streams are not touched
    assert set(store.view("noisy").streams) == {"codes", "latent", "energy"} and set(store.view("ulaw").streams) == {"codes"}
    assert verify_store(out).ok
    for name, splits in (("noisy", {"train"}), ("ulaw", {"eval"})):
        view = store.view(name)
        have = view.utterances["status"] == "ok"
        assert set(view.utterances.loc[have, "split"]) == splits and have.sum() == (clean.utterances["split"].isin(splits)).sum()
        assert view.recipe == load_views_recipe(name)


def load_views_recipe(name: str) -> dict:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(VIEWS)
        f.flush()
        recipe = load_views(f.name)[name].recipe()
    return recipe


def test_a_views_codes_are_encodecs_codes_of_the_augmented_file(viewed, views_file):
    """Independently: the file read by soundfile, the chain applied at its rate (the view's rule),
    EnCodec's convert_audio to 24 kHz and EncodecModel.encode; batches of one (no padding) are not
    needed: the store's batches equal one-by-one encoding (tests/extract/test_run.py)."""
    out, _, _ = viewed
    store = FeatureStore(out)
    model = store_model(store)
    view = load_views(views_file)["noisy"]
    table = store.utterances
    for row in table.index[table["split"] == "train"][:3]:
        data, rate = sf.read(table["path"].iloc[row], dtype="float32", always_2d=True)
        wav = apply_view(view, table["utt_id"].iloc[row], data.mean(1), rate)
        with torch.no_grad():
            expected = model.encode(convert_audio(torch.from_numpy(wav)[None], rate, 24000, 1)[None])[0][0][0].t().numpy()
        got = store.view("noisy").utterance_codes(row)
        assert got.shape == expected.shape
        assert np.mean(got == expected) > 0.99, table["utt_id"].iloc[row]  # batch padding may flip a rare code
        assert not np.array_equal(got, store.utterance_codes(row))


def test_a_view_is_made_again_bit_for_bit_and_resumes_after_a_kill(viewed, tiny_corpus, tiny_store, views_file, tmp_path):
    out, _, _ = viewed
    again = copy_store(tiny_store, tmp_path / "again.zarr")

    with pytest.raises(Killed):
        extract(tiny_config(tiny_corpus, again, views=str(views_file), views_only="noisy"), dies_after(1), log=quiet)
    ran = []

    result = extract(tiny_config(tiny_corpus, again, views=str(views_file)), counting(ran), log=quiet)
    assert result.views == ["noisy", "ulaw"] and 0 not in ran[:3]  # unit 0 of the killed view was kept
    first, second = FeatureStore(out), FeatureStore(again)
    for name in ("noisy", "ulaw"):
        for stream in first.view(name).streams:
            a, b = first.view(name).stream(stream), second.view(name).stream(stream)
            assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.data[...], b.data[...]), (name, stream)
    assert extract(tiny_config(tiny_corpus, again, views=str(views_file)), counting(ran), log=quiet).views == []


def test_a_view_of_the_same_name_with_another_recipe_is_refused_in_one_line(viewed, tiny_corpus, tmp_path, monkeypatch):
    out, _, _ = viewed
    other = tmp_path / "other.toml"
    other.write_text(VIEWS.replace("seed = 12", "seed = 13"))
    before = {p: p.stat().st_mtime_ns for p in Path(out).rglob("*") if p.is_file() and p.name != ".lock"}
    import extract.audio as audio

    monkeypatch.setattr(audio, "load_audio", lambda *a, **k: pytest.fail("audio was read"))
    with pytest.raises(StoreError) as err:
        extract(tiny_config(tiny_corpus, out, views=str(other)), log=quiet)
    assert "already has a view 'ulaw' made with another recipe (seed differ)" in str(err.value)
    assert "\n" not in str(err.value)
    assert before == {p: p.stat().st_mtime_ns for p in Path(out).rglob("*") if p.is_file() and p.name != ".lock"}


def test_a_length_changing_chain_is_probed_at_its_augmented_length(tiny_store, tmp_path):
    views = tmp_path / "speed.toml"
    views.write_text('[view.fast]\nseed = 1\nsplits = ["train"]\nchain = [{augment = "speed", factors = [1.25]}]\n')
    view = load_views(views)["fast"]
    audio = ViewAudio.of(tiny_store, view)
    table = FeatureStore(tiny_store).utterances
    path = table["path"].iloc[0]
    info = audio.probe(path, 0)
    native = sf.info(path)
    assert info.frames == len(audio.load(path, 0, native.samplerate)[0])
    assert abs(info.frames - native.frames / 1.25) <= 1 and info.sample_rate == native.samplerate


def test_a_damaged_view_chunk_is_repaired_from_the_recorded_recipe(viewed, tmp_path):
    out = copy_store(viewed[0], tmp_path / "damaged.zarr")
    original = FeatureStore(out).view("noisy").stream("latent").data[...]
    victim = next(p for p in (tmp_path / "damaged.zarr" / "views" / "noisy" / "latent").rglob("c/*/*") if p.is_file())
    victim.unlink()
    report = verify_store(out)
    assert not report.ok and report.affected and report.affected[0].array == "views/noisy/latent"
    result = repair_store(out, log=quiet)
    assert result.report.ok and result.compared_frames >= 0
    np.testing.assert_array_equal(FeatureStore(out).view("noisy").stream("latent").data[...], original)


def test_a_view_asking_for_the_ssl_stream_gets_the_ssl_model_on_its_augmented_audio(tiny_corpus, tiny_store, tmp_path):
    from extract import ssl

    views = tmp_path / "ssl.toml"
    views.write_text('[view.loud]\nseed = 3\nsplits = ["dev"]\nstreams = ["ssl"]\nchain = [{augment = "noise", snr_db = [10, 10]}]\n')
    out = copy_store(tiny_store, tmp_path / "s.zarr")
    with pytest.raises(ValueError, match="streams has 'ssl': give --ssl MODEL"):
        extract(tiny_config(tiny_corpus, out, views=str(views)), log=quiet)
    extract(tiny_config(tiny_corpus, out, views=str(views), ssl="wavlm-tiny", ssl_weights="untrained", ssl_storage="float16"),
            log=quiet)  # float16: the frames are compared with the model's output
    store = FeatureStore(out)
    view = store.view("loud")
    assert set(view.streams) == {"ssl"} and set(store.streams) == {"codes", "latent", "energy", "ssl"}
    stream = view.stream("ssl")
    assert stream.spec.array == "views/loud/streams/ssl/data"
    source = stream.spec.source
    model = ssl.front_end(ssl.SSLWeights.from_dict(source["weights"]), tuple(source["layers"]))
    table = store.utterances
    for row in range(len(table)):
        if table["split"].iloc[row] != "dev":
            assert len(stream.utterance(row)) == 0
            continue
        data, rate = sf.read(table["path"].iloc[row], dtype="float32")
        noisy = apply_view(load_views(views)["loud"], table["utt_id"].iloc[row], data, rate)  # at the file's 16 kHz
        expected = model([torch.from_numpy(noisy)])[0].numpy()
        np.testing.assert_allclose(stream.utterance(row).astype(np.float32), expected, rtol=2e-3, atol=2e-3)
        assert not np.allclose(stream.utterance(row), store.stream("ssl").utterance(row), atol=1e-2)
    assert verify_store(out).ok


def test_bad_views_input_is_one_line_before_any_audio(tiny_corpus, tmp_path, views_file, monkeypatch):
    import extract.audio as audio
    from extract.augment import AugmentError
    from extract.run import ExtractConfig

    monkeypatch.setattr(audio, "load_audio", lambda *a, **k: pytest.fail("audio was read"))
    out = tmp_path / "never.zarr"
    cases = [(dict(views=str(tmp_path / "missing.toml")), AugmentError, "views file not found"),
             (dict(views=str(views_file), views_only="noisy,nope"), AugmentError, "view 'nope': not defined; defined: noisy, ulaw")]
    for settings, kind, message in cases:
        with pytest.raises(kind, match=message) as err:
            extract(tiny_config(tiny_corpus, out, **settings), log=quiet)
        assert "\n" not in str(err.value)
    assert not out.exists()
    with pytest.raises(ValueError, match="views_only names views of a views file"):
        ExtractConfig(dataset="asv19", root="x", out="y", views_only="a")
