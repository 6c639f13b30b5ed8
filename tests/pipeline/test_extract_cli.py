"""`pipeline extract` from the command line: bad input, worker counts, a real kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from extract.datasets import generate_demo_corpus
from pipeline.cli import main
from store.reader import FeatureStore

SMALL = ["--weights", "untrained", "--set", "kmeans_frames=1024", "--set", "kmeans_iters=3", "--set", "device='cpu'"]


def speechy(sr: int, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    voiced = np.sin(2 * np.pi * np.cumsum(f0) / sr) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return np.stack([0.2 * voiced + 0.02 * rng.standard_normal(t.size) for _ in range(channels)], axis=1)


@pytest.fixture(scope="module")
def messy_manifest(tmp_path_factory) -> Path:
    """A manifest corpus with every kind of bad input beside good files of many formats."""
    root = tmp_path_factory.mktemp("messy")
    good = {
        "g16.flac": (16000, 1.2, 1),
        "g8.wav": (8000, 1.0, 1),
        "g44.flac": (44100, 0.8, 1),
        "g48_stereo.wav": (48000, 1.0, 2),
        "g6ch.wav": (16000, 0.6, 6),
        "long.flac": (16000, 3.5, 1),
    }
    for i, (name, (sr, sec, ch)) in enumerate(good.items()):
        sf.write(root / name, speechy(sr, sec, ch, seed=i), sr)
    sf.write(root / "silence.flac", np.zeros(16000), 16000)
    sf.write(root / "toolong.flac", speechy(16000, 6.0), 16000)
    (root / "empty.flac").write_bytes(b"")
    (root / "text.flac").write_text("hello, I am not audio\n" * 30)
    blob = (root / "g16.flac").read_bytes()
    (root / "cut.flac").write_bytes(blob[: len(blob) // 3])
    nan = speechy(16000, 0.5).astype(np.float32)
    nan[50] = np.inf
    sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    rows = [(n, "bonafide" if i % 2 else "spoof") for i, n in enumerate(list(good) + ["silence.flac"])]
    rows += [(n, "spoof") for n in ["toolong.flac", "empty.flac", "text.flac", "cut.flac", "nan.wav", "missing.flac"]]
    rows += [("../outside.flac", "spoof"), ("g16.flac", "maybe")]
    pd.DataFrame(rows, columns=["path", "label"]).assign(utt_id=[f"u{i:02d}" for i in range(len(rows))]).to_csv(root / "manifest.csv", index=False)
    return root


def test_bad_input_is_recorded_and_everything_else_extracted(messy_manifest, tmp_path):
    out = tmp_path / "messy.zarr"
    args = ["extract", "--dataset", "manifest", "--root", str(messy_manifest / "manifest.csv"), "--out", str(out), "--workers", "0",
            *SMALL, "--set", "window_seconds=1.0", "--set", "max_seconds=5.0", "--set", "unit_size=3", "--bandwidth", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "UNTRAINED" in result.output
    store = FeatureStore(str(out))
    assert store.codec.n_q == 4 and store.codebooks.shape == (4, 1024, 128) and store.codes.shape[1] == 4
    table = store.utterances.set_index("utt_id")
    ok = set(table.index[table["status"] == "ok"])
    assert ok == {f"u{i:02d}" for i in range(7)}
    assert table.loc["u05", "n_windows"] == 4  # 3.5 s in windows of 1 s
    assert table.loc["u01", "sample_rate"] == 8000 and table.loc["u03", "channels"] == 2 and table.loc["u04", "channels"] == 6
    assert table.loc["u06", "n_frames"] == 75  # silence is audio
    failures = store.failures
    reasons = dict(zip(failures["path"].map(lambda p: Path(p).name), failures["reason"]))
    expected = {"toolong.flac": "max_seconds", "empty.flac": "empty", "text.flac": "not a readable audio", "cut.flac": "decoding failed|truncated",
                "nan.wav": "non-finite", "missing.flac": "not found", "outside.flac": "outside|leave|escape", "g16.flac": "label"}
    for name, pattern in expected.items():
        assert name in reasons, (name, reasons)
        assert pd.Series([reasons[name]]).str.contains(pattern, case=False).item(), (name, reasons[name])
        assert name in result.output
    # the store is consistent and inspectable despite the failures
    assert CliRunner().invoke(main, ["verify", str(out)]).exit_code == 0
    info = json.loads(CliRunner().invoke(main, ["inspect", str(out), "--json"]).output)
    assert info["weights"]["source"] == "untrained" and info["audio_seconds"] == pytest.approx(table.loc[list(ok), "duration"].sum())


def test_unknown_bandwidth_is_refused_with_the_choices(tmp_path):
    result = CliRunner().invoke(main, ["extract", "--dataset", "demo", "--root", str(tmp_path / "c"), "--out", str(tmp_path / "s.zarr"), "--bandwidth", "5"])
    assert result.exit_code == 1 and "1.5, 3.0, 6.0, 12.0, 24.0" in result.output
    assert not (tmp_path / "s.zarr").exists()


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    return generate_demo_corpus(tmp_path_factory.mktemp("c") / "demo", n_per_split={"train": 4, "dev": 2, "eval": 2}, seed=1)


@pytest.mark.slow
def test_store_is_the_same_with_one_or_two_dask_workers(small_corpus, tmp_path):
    stores = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.zarr"
        args = ["extract", "--dataset", "asv19", "--root", str(small_corpus), "--out", str(out), "--workers", str(workers),
                *SMALL, "--set", "unit_size=2", "--set", "torch_threads=1"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        stores.append(FeatureStore(str(out)))
    a, b = stores
    assert a.attrs["weights"]["sha256"] == b.attrs["weights"]["sha256"]
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.latent[...], b.latent[...])
    pd.testing.assert_frame_equal(a.utterances, b.utterances)


@pytest.mark.slow
def test_kill_at_any_moment_then_resume(small_corpus, tmp_path):
    """SIGKILL a real extraction once its first unit is committed; the re-run finishes the rest."""
    def cmd(out):
        return [sys.executable, "-m", "pipeline", "extract", "--dataset", "asv19", "--root", str(small_corpus), "--out", str(out),
                "--workers", "0", *SMALL, "--set", "unit_size=1", "--set", "torch_threads=1"]

    killed = tmp_path / "killed.zarr"
    proc = subprocess.Popen(cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    first = killed / "parts" / "u000000" / "zarr.json"
    deadline = time.time() + 240
    while time.time() < deadline and not (first.exists() and "records" in first.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), "the extraction never committed a unit"
    resumed = subprocess.run(cmd(killed), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" in resumed.stderr
    clean = tmp_path / "clean.zarr"
    assert subprocess.run(cmd(clean), capture_output=True).returncode == 0
    a, b = FeatureStore(str(killed)), FeatureStore(str(clean))
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.latent[...], b.latent[...]) and np.array_equal(a.offsets, b.offsets)


def test_cpu_default_runs_in_this_process_without_a_cluster(small_corpus, tmp_path, monkeypatch):
    """Without --workers, extraction on CPUs runs in the command's own process (a worker process
    would only add start-up and transfers): no LocalCluster starts, every utterance is extracted."""
    import pipeline.commands.extract as command

    def no_cluster(*args, **kwargs):
        raise AssertionError("a LocalCluster was started")

    monkeypatch.setattr(command, "background_client", no_cluster)
    out = tmp_path / "default.zarr"
    result = CliRunner().invoke(main, ["extract", "--dataset", "asv19", "--root", str(small_corpus), "--out", str(out),
                                       *SMALL, "--set", "unit_size=2"])
    assert result.exit_code == 0, result.output
    table = FeatureStore(str(out)).utterances
    assert len(table) == 8 and (table["status"] == "ok").all()


def test_a_manifest_of_m4a_webm_and_video_files_is_extracted_and_a_cut_one_reported(tmp_path):
    """`extract --dataset manifest` takes every format FFmpeg reads: the M4A of a FLAC recording gets
    the FLAC's duration, a WebM and a video clip's sound are extracted, a cut M4A is reported truncated."""
    from tests.media import write

    wav = speechy(16000, 1.2).astype(np.float32)[:, 0]
    sf.write(tmp_path / "a.flac", wav, 16000)
    write(tmp_path / "a.m4a", wav, 16000)
    write(tmp_path / "b.webm", speechy(16000, 1.0, seed=1).astype(np.float32)[:, 0], 16000)
    write(tmp_path / "c.mp4", speechy(16000, 1.0, seed=2).astype(np.float32)[:, 0], 16000, video=True)
    blob = (tmp_path / "a.m4a").read_bytes()
    (tmp_path / "cut.m4a").write_bytes(blob[: len(blob) // 2])
    names = ["a.flac", "a.m4a", "b.webm", "c.mp4", "cut.m4a"]
    pd.DataFrame({"path": names, "label": ["bonafide", "spoof"] * 2 + ["spoof"]}).to_csv(tmp_path / "manifest.csv",
                                                                                         index=False)
    out = tmp_path / "s.zarr"
    result = CliRunner().invoke(main, ["extract", "--dataset", "manifest", "--root", str(tmp_path / "manifest.csv"),
                                       "--out", str(out), "--workers", "0", *SMALL, "--bandwidth", "3"])
    assert result.exit_code == 1, result.output
    table = FeatureStore(str(out)).utterances.set_index("utt_id")
    assert set(table.index[table["status"] == "ok"]) == {"a", "a_2", "b", "c"}, table
    ok = table[table["status"] == "ok"]
    flac, m4a = ok[ok["path"].str.endswith("a.flac")].iloc[0], ok[ok["path"].str.endswith("a.m4a")].iloc[0]
    assert m4a["duration"] == pytest.approx(flac["duration"], abs=0.1)  # AAC adds its priming and padding
    assert abs(int(m4a["n_frames"]) - int(flac["n_frames"])) <= 8
    reasons = dict(zip(FeatureStore(str(out)).failures["path"].map(lambda p: Path(p).name),
                       FeatureStore(str(out)).failures["reason"]))
    assert reasons["cut.m4a"].startswith("truncated")


def test_ssl_from_recodes_a_stream_in_this_process_and_refuses_a_missing_one(small_corpus, tmp_path, monkeypatch):
    """`--ssl-from ssl --ssl-storage int8 --set ssl_stream=ssl8`: the stored SSL stream re-coded, in this
    process, no SSL model built; a source the store lacks is refused in one line."""
    import extract.ssl_stream as ssl_stream
    import pipeline.commands.extract as command

    out = tmp_path / "s.zarr"
    base = ["extract", "--dataset", "asv19", "--root", str(small_corpus), "--out", str(out), *SMALL, "--set", "unit_size=4",
            "--set", "torch_threads=1"]
    made = CliRunner().invoke(main, [*base, "--workers", "0", "--ssl", "wavlm-tiny", "--ssl-weights", "untrained"])
    assert made.exit_code == 0, made.output

    def refuse(*args, **kwargs):
        raise AssertionError("a LocalCluster or the SSL model was started")

    monkeypatch.setattr(command, "background_client", refuse)
    monkeypatch.setattr(ssl_stream, "front_end", refuse)
    ssl_stream._front_end.cache_clear()
    result = CliRunner().invoke(main, [*base, "--ssl-from", "ssl", "--ssl-storage", "int8", "--set", "ssl_stream='ssl8'"])
    assert result.exit_code == 0, result.output
    assert "re-coding stream 'ssl' runs in this process" in result.output
    store = FeatureStore(str(out))
    assert store.stream("ssl8").spec.dtype == "int8" and store.stream("ssl8").spec.source["recoded_from"]["stream"] == "ssl"
    bad = CliRunner().invoke(main, [*base, "--ssl-from", "nope", "--set", "ssl_stream='x'"])
    assert bad.exit_code != 0 and "no stream 'nope' to re-code" in bad.output
    assert not (out / "streams" / "x").exists()
