"""The SSL stream: WavLM layers added to a finished store, exact, resumable, cropped, with provenance.

Runs the small `wavlm-tiny` test architecture (same front end as WavLM-Large: 400-sample receptive
field, hop 320 at 16 kHz) with untrained or locally saved weights; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

from extract import ssl
from extract.audio import load_audio
from extract.run import extract
from store.reader import FeatureStore
from store.writer import StoreError

from .conftest import Killed, counting, dies_after, quiet, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
# these tests compare the stored frames with the model's output, so they ask for float16 storage;
# the default storage (int8) and the others are tested in test_ssl_storage.py
SSL = dict(ssl="wavlm-tiny", ssl_weights="untrained", ssl_storage="float16")


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not str(p.relative_to(root)).startswith("streams")}


def copy_store(tiny_store: str, dest: Path) -> Path:
    shutil.copytree(tiny_store, dest)
    return dest


@pytest.fixture(scope="module")
def ssl_store(tiny_corpus, tiny_store, tmp_path_factory) -> tuple[str, dict[str, str]]:
    """A copy of the tiny codec store with the untrained wavlm-tiny stream added; and the hashes of
    the store's files before the addition."""
    out = copy_store(tiny_store, tmp_path_factory.mktemp("ssl") / "s.zarr")
    before = file_hashes(out)
    extract(tiny_config(tiny_corpus, out, **SSL), log=quiet)
    return str(out), before


def solo_front_end(store: FeatureStore, name: str = "ssl") -> ssl.SSLFrontEnd:
    source = store.stream(name).spec.source
    weights = ssl.SSLWeights.from_dict(source["weights"])
    return ssl.front_end(weights, tuple(source["layers"]))


def test_ssl_stream_is_added_without_touching_the_store_and_equals_the_model_on_each_file(ssl_store):
    path, before = ssl_store
    assert file_hashes(Path(path)) == before  # codes, latent, tables, root attributes: byte for byte
    store = FeatureStore(path)
    stream = store.stream("ssl")
    assert stream.spec.frame_rate == 50 and stream.spec.frame_shape == (4, 32) and stream.spec.dtype == "float16"
    source = stream.spec.source
    assert source["layers"] == [1, 2, 3, 4] and source["weights"]["source"] == "untrained"
    assert "UNTRAINED" in source["weights"]["label"] and source["parameters_used"] == 57_272
    model = solo_front_end(store)
    for row in range(len(store.utterances)):
        wav = load_audio(store.utterances["path"].iloc[row], target_rate=16000)[0]
        expected = model([wav])[0].numpy()  # one utterance alone, float32
        got = stream.utterance(row)
        assert got.shape == (ssl.ssl_frames(wav.numel()), 4, 32)
        # batched and padded vs alone: equal to float16 rounding
        np.testing.assert_allclose(got.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    variance = ssl.frame_variance([stream.utterance(r) for r in range(3)])
    assert (variance > 1e-3).all()  # the untrained model's features are not constant
    assert (store.root["streams/ssl/starts"][...] == 0).all()


def test_frames_cover_the_documented_samples():
    """Frame u sees samples [320 u, 320 u + 400): changing sample 320 u + 399 changes the front end's
    frame u, and changing a sample after it leaves frame u alone."""
    torch.manual_seed(0)
    model = ssl.new_model(ssl.architecture("wavlm-tiny"), 1)
    wav = torch.randn(1, 4000)
    frames = model.feature_extractor(wav, None)[0]
    assert frames.shape[1] == ssl.ssl_frames(4000) == 12
    for u in (0, 5):
        late = wav.clone()
        late[0, 320 * u + 399] += 1.0
        after = wav.clone()
        after[0, 320 * u + 400] += 1.0
        assert not torch.allclose(model.feature_extractor(late, None)[0][0, u], frames[0, u])
        assert torch.equal(model.feature_extractor(after, None)[0][0, u], frames[0, u])
    assert ssl.ssl_frames(399) == 0 and ssl.ssl_frames(400) == 1 and ssl.ssl_frames(719) == 1 and ssl.ssl_frames(720) == 2


def test_resume_after_kill_equals_an_uninterrupted_run(tiny_corpus, tiny_store, ssl_store, tmp_path):
    out = copy_store(tiny_store, tmp_path / "killed.zarr")

    with pytest.raises(Killed):
        extract(tiny_config(tiny_corpus, out, **SSL), dies_after(2), log=quiet)
    assert FeatureStore(str(out)).pending_streams() == ["ssl"]
    ran = []

    result = extract(tiny_config(tiny_corpus, out, **SSL), counting(ran), log=quiet)
    assert sorted(ran) == [2, 3] and result.added_streams == ["ssl"]
    a, b = FeatureStore(str(out)).stream("ssl"), FeatureStore(ssl_store[0]).stream("ssl")
    assert np.array_equal(a.data[...], b.data[...]) and np.array_equal(a.offsets, b.offsets)
    # complete: nothing runs again; other settings are refused
    assert extract(tiny_config(tiny_corpus, out, **SSL), counting(ran), log=quiet).ran_units == 0
    with pytest.raises(StoreError, match="layers"):
        extract(tiny_config(tiny_corpus, out, **SSL, ssl_layers="1-2"), log=quiet)


def test_crop_keeps_the_centre_of_train_utterances_on_the_40_ms_grid(tiny_corpus, tiny_store, tmp_path):
    out = copy_store(tiny_store, tmp_path / "crop.zarr")
    extract(tiny_config(tiny_corpus, out, **SSL, ssl_crop=0.5, ssl_layers="1,3"), log=quiet)
    store = FeatureStore(str(out))
    stream = store.stream("ssl")
    starts = store.root["streams/ssl/starts"][...]
    assert stream.spec.source["crop_seconds"] == 0.5 and stream.spec.source["layers"] == [1, 3]
    model = solo_front_end(store)
    table = store.utterances
    for row in range(len(table)):
        wav = load_audio(table["path"].iloc[row], target_rate=16000)[0]
        if table["split"].iloc[row] == "train" and wav.numel() > 8000:
            first = (wav.numel() - 8000) // 2 // 640 * 640
            assert starts[row] == first // 320 and starts[row] % 2 == 0
            wav = wav[first : first + 8000]
        else:
            assert starts[row] == 0
        np.testing.assert_allclose(stream.utterance(row).astype(np.float32), model([wav])[0].numpy(),
                                   rtol=2e-3, atol=2e-3)
    assert stream.utterance(0).shape[1:] == (2, 32)


def test_bad_input_is_recorded_and_the_rest_extracted(tmp_path):
    """A file the codec took but too short for the SSL front end (10 ms) fails in the SSL stream with
    its reason; a file that failed in the store is skipped."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    rows = ["path,label,split"]
    for k in range(5):
        sf.write(tmp_path / f"ok{k}.flac", rng.standard_normal(8000 + 1000 * k) * 0.1, 16000)
        rows.append(f"ok{k}.flac,{'bonafide' if k % 2 else 'spoof'},train")
    sf.write(tmp_path / "short.flac", rng.standard_normal(160) * 0.1, 16000)
    (tmp_path / "junk.flac").write_bytes(b"not audio")
    rows += ["short.flac,spoof,train", "junk.flac,bonafide,train"]
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "bad.zarr"
    config = dict(dataset="manifest", root=str(tmp_path / "manifest.csv"), out=str(out), weights="untrained",
                  kmeans_frames=1024, kmeans_iters=2, unit_size=4, device="cpu", torch_threads=1)
    from extract.run import ExtractConfig

    extract(ExtractConfig(**config), log=quiet)
    extract(ExtractConfig(**config, **SSL), log=quiet)
    store = FeatureStore(str(out))
    failures = store.files.read_table("streams/ssl/failures.parquet").set_index("utt_id")
    table = store.utterances.set_index("path")
    short = table.loc[str(tmp_path / "short.flac"), "utt_id"]
    junk = table.loc[str(tmp_path / "junk.flac"), "utt_id"]
    assert "receptive field" in failures.loc[short, "reason"]
    assert failures.loc[junk, "reason"] == "extraction failed in this store"
    assert len(failures) == 2 and store.attrs["summary"]["ok"] == 6
    lengths = np.diff(store.stream("ssl").offsets)
    assert (lengths > 0).sum() == 5


def test_pretrained_weights_come_from_the_torch_hub_cache(tiny_corpus, tiny_store, tmp_path, monkeypatch):
    """--ssl-weights pretrained reads the architecture's checkpoint from $TORCH_HOME/hub/checkpoints
    (a locally saved state dict here), records its sha256, and truncates it to the layers used."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    arch = ssl.architecture("wavlm-tiny")
    with pytest.raises(ssl.SSLWeightsError, match="not in the torch hub cache"):
        ssl.pretrained_path(arch, download=False)
    torch.manual_seed(7)
    full = ssl.new_model(arch, arch.num_layers)
    checkpoint = tmp_path / "torch" / "hub" / "checkpoints" / arch.checkpoint
    checkpoint.parent.mkdir(parents=True)
    torch.save(full.state_dict(), checkpoint)
    out = copy_store(tiny_store, tmp_path / "pre.zarr")
    result = extract(tiny_config(tiny_corpus, out, ssl="wavlm-tiny", ssl_weights="pretrained", ssl_layers="1-2",
                                 ssl_storage="float16"), log=quiet)
    store = FeatureStore(str(out))
    weights = store.stream("ssl").spec.source["weights"]
    assert weights["source"] == "pretrained" and weights["sha256"] == ssl.file_sha256(checkpoint)
    assert "TEST architecture" in result.ssl_weights and "UNTRAINED" not in result.ssl_weights
    wav = load_audio(store.utterances["path"].iloc[0], target_rate=16000)
    with torch.no_grad():
        expected = full.extract_features(torch.nn.functional.layer_norm(wav, wav.shape[-1:]))[0]
    got = store.stream("ssl").utterance(0).astype(np.float32)
    for k in range(2):
        np.testing.assert_allclose(got[:, k], expected[k][0].numpy(), rtol=2e-3, atol=2e-3)
    # a file that is not a state dict of the architecture is refused with its name
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(ssl.SSLWeightsError, match="bad.pth: not a WavLM-tiny"):
        ssl.load_model(arch, 2, bad)


def test_wavlm_large_is_torchaudios_architecture_and_parameter_counts():
    expected = dict(torchaudio.pipelines.WAVLM_LARGE._params)
    arch = ssl.architecture("wavlm-large")
    assert arch.params == {**expected, "extractor_conv_layer_config": [tuple(c) for c in expected["extractor_conv_layer_config"]]}
    assert arch.normalize_waveform == torchaudio.pipelines.WAVLM_LARGE._normalize_waveform
    assert ssl.count_used(arch, 24) == 315_452_096
    assert ssl.count_used(arch, 12) == 315_452_096 - 12 * 12_596_760


def test_layers_are_parsed_and_checked():
    assert ssl.parse_layers("1-12", 24) == tuple(range(1, 13))
    assert ssl.parse_layers("3, 1,5-6", 24) == (1, 3, 5, 6)
    assert ssl.format_layers((1, 2, 3, 5, 7, 8)) == "1-3,5,7-8"
    for bad in ("0-3", "1-25", "a", ""):
        with pytest.raises(ValueError):
            ssl.parse_layers(bad, 24)
    assert ssl.crop_start(100_000, 32_000) == 33_920 and ssl.crop_start(32_000, 32_000) == 0


def assert_same_batches(store: FeatureStore, config: dict, online_kwargs: dict, splits=("train", "dev")) -> None:
    """Training and scoring batches from the cached stream and from online features: the same
    frames, codes and lengths; SSL features equal to float16 rounding."""
    from classify.rebuild import for_store
    from classify.sources import make_source

    online_config = {**config, "ssl_kwargs": online_kwargs}
    cached_model, online_model = for_store(config, store), for_store(online_config, store)
    for key in ("model", "layers", "crop_seconds", "crop_splits", "weights"):
        assert online_model.ssl_source[key] == cached_model.ssl_source[key], key
    cached = make_source(store, cached_model, config)
    online = make_source(store, online_model, online_config)
    assert np.array_equal(cached.reader("ssl").offsets, online.reader("ssl").offsets)
    assert np.array_equal(cached.reader("ssl").starts, online.reader("ssl").starts)
    for name in splits:
        a, b = cached.split(store, name), online.split(store, name)
        runs = [(x.train_batches(s, 4, 30, "repeat", "none", torch.Generator().manual_seed(0)))
                for x, s in ((cached, a), (online, b))]
        runs += [x.eval_batches(s, 300, 600) for x, s in ((cached, a), (online, b))]
        for first, second in ((runs[0], runs[1]), (runs[2], runs[3])):
            for (x, _), (y, _) in zip(first, second, strict=True):
                assert torch.equal(x.codes, y.codes) and torch.equal(x.lengths, y.lengths)
                torch.testing.assert_close(x.ssl.float(), y.ssl.float(), rtol=2e-3, atol=2e-3)


def test_online_features_equal_the_cached_stream(ssl_store):
    from dataclasses import asdict

    from tests.synthetic import tiny_config as train_config

    store = FeatureStore(ssl_store[0])
    assert_same_batches(store, asdict(train_config(variant="ssl+mean")), {"online": True})


def test_online_features_of_a_store_without_stream_equal_a_cached_crop(tiny_corpus, tiny_store, tmp_path):
    """The same model, weights, layers and crop given as options give the features a cached
    cropped stream holds: the codec crop is drawn inside the SSL crop either way."""
    from dataclasses import asdict

    from tests.synthetic import tiny_config as train_config

    out = copy_store(tiny_store, tmp_path / "crop.zarr")
    extract(tiny_config(tiny_corpus, out, **SSL, ssl_crop=0.4, ssl_layers="1,3"), log=quiet)
    store = FeatureStore(str(out))
    options = {"online": True, "stream": "none", "model": "wavlm-tiny", "weights": "untrained", "layers": "1,3",
               "crop_seconds": 0.4}
    assert_same_batches(store, asdict(train_config(variant="ssl+qaf-static")), options)


@pytest.mark.parametrize("seconds", [0.02, 1.0, 1.4, 1.42, 2.0, 3.0, 5.3, 12.7])
def test_windows_tile_the_frames_and_each_sees_its_context(seconds):
    """Window 1 s, context 0.2 s: up to 1.4 s of frames in one pass; beyond, the kept frames tile the
    utterance's frames in order, each window starts on the frame grid, holds the frames it keeps and
    sees 10 frames (0.2 s) on either side of them unless the utterance ends first."""
    n = int(round(seconds * 16000))
    total = ssl.ssl_frames(n)
    windows = ssl.ssl_windows(n, window_seconds=1.0, context_seconds=0.2)
    if total <= 50 + 2 * 10:
        assert windows == [(0, n, 0, total)]
        return
    assert len(windows) == -(-total // 50)
    covered = 0
    for first, end, keep_first, keep in windows:
        assert first % 320 == 0 and 0 <= first < end <= n
        global_first = first // 320 + keep_first
        assert global_first == covered  # contiguous, in order
        assert ssl.ssl_frames(end - first) >= keep_first + keep  # the window's output holds them
        assert keep_first == min(10, global_first)  # left context, clipped at the start
        right = ssl.ssl_frames(end - first) - (keep_first + keep)
        assert right == min(10, total - (global_first + keep))  # right context, clipped at the end
        assert 1 <= keep <= 50
        covered += keep
    assert covered == total
    assert ssl.ssl_windows(n, window_seconds=float("inf")) == [(0, n, 0, total)]


def test_a_long_utterance_runs_window_by_window_with_bounded_attention():
    """A 5.3 s utterance with 1 s windows and 0.2 s context: its frames are, window by window, the
    model's own outputs (torchaudio's extract_features) on the window's samples of the utterance
    normalised whole; no layer ever attends over more than 70 frames; a short utterance in the same
    batch is one plain pass."""
    torch.manual_seed(0)
    arch = ssl.architecture("wavlm-tiny")
    model = ssl.new_model(arch, 4)
    front = ssl.SSLFrontEnd(arch, model, (2, 4), window_seconds=1.0, context_seconds=0.2)
    long_wav, short_wav = torch.randn(int(5.3 * 16000)), torch.randn(16000)
    seen = []
    hooks = [layer.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[1]))
             for layer in model.encoder.transformer.layers]
    try:
        got_long, got_short = front([long_wav, short_wav])
    finally:
        for hook in hooks:
            hook.remove()
    assert max(seen) <= 50 + 2 * 10
    assert got_long.shape == (ssl.ssl_frames(long_wav.numel()), 2, 32)

    def reference(wav: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            outputs, _ = model.extract_features(wav[None], num_layers=4)
        return torch.stack([outputs[1][0], outputs[3][0]], dim=1)

    normalised = torch.nn.functional.layer_norm(long_wav, long_wav.shape)
    expected = torch.cat([reference(normalised[first:end])[keep_first : keep_first + keep]
                          for first, end, keep_first, keep in ssl.ssl_windows(long_wav.numel(), 1.0, 0.2)])
    torch.testing.assert_close(got_long, expected, rtol=1e-4, atol=1e-4)
    short_normalised = torch.nn.functional.layer_norm(short_wav, short_wav.shape)
    torch.testing.assert_close(got_short, reference(short_normalised), rtol=1e-4, atol=1e-4)
    # the windows are not the whole pass: the transformer sees each window with its context only
    assert not torch.allclose(got_long, reference(normalised), atol=1e-3)


def test_the_stream_records_its_windows_and_scoring_uses_them(ssl_store):
    from extract.frontend import ssl_front_end

    source = FeatureStore(ssl_store[0]).stream("ssl").spec.source
    assert (source["window_seconds"], source["context_seconds"]) == (ssl.SSL_WINDOW_SECONDS, ssl.SSL_CONTEXT_SECONDS)
    front, _ = ssl_front_end({**source, "window_seconds": 1.0, "context_seconds": 0.2})
    assert front.windows(int(5.3 * 16000)) == ssl.ssl_windows(int(5.3 * 16000), 1.0, 0.2)
    old = {k: v for k, v in source.items() if k not in ("window_seconds", "context_seconds")}
    front, _ = ssl_front_end(old)  # a stream extracted before windows: the defaults (equal up to 34 s)
    assert (front.window_seconds, front.context_seconds) == (ssl.SSL_WINDOW_SECONDS, ssl.SSL_CONTEXT_SECONDS)
