"""A catalogue of bad input: each file either works (many are valid audio) or is recorded in
failures.parquet with a clear reason, and everything else is extracted; each bad protocol line
becomes a problem naming FILE:LINE and the reason. RELIABILITY.md lists what each case gets.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from extract.datasets import get_dataset
from pipeline.cli import main
from store.reader import FeatureStore
from store.verify import verify_store

from .helpers import SMALL_CODEC

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tone(sr: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    return np.repeat(wave[:, None], channels, axis=1)


def write_as(path: Path, data: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> None:
    """Audio of format ``fmt`` written under ``path``, whatever its extension says."""
    tmp = path.with_name(path.name + "." + fmt.lower())
    sf.write(tmp, data, sr, format=fmt, subtype=subtype)
    tmp.rename(path)


# name -> (how to make it, expected: "ok" or a pattern of the failure reason)
AUDIO_CASES = {
    "one_sample.flac": (lambda p: sf.write(p, np.array([0.1]), 16000), "ok"),
    "wav_named.flac": (lambda p: write_as(p, tone(16000, 1.0), 16000, "WAV"), "ok"),
    "mp3_named.flac": (lambda p: write_as(p, tone(16000, 1.0), 16000, "MP3"), "ok"),
    "ogg_named.flac": (lambda p: write_as(p, tone(16000, 1.0), 16000, "OGG", "VORBIS"), "ok"),
    "plain.mp3": (lambda p: sf.write(p, tone(22050, 1.0), 22050, format="MP3"), "ok"),
    "sr8k.wav": (lambda p: sf.write(p, tone(8000, 1.0), 8000), "ok"),
    "sr96k.flac": (lambda p: sf.write(p, tone(96000, 1.0), 96000), "ok"),
    "six_channels.wav": (lambda p: sf.write(p, tone(16000, 1.0, 6), 16000), "ok"),
    "pcm24.wav": (lambda p: sf.write(p, tone(44100, 1.0), 44100, subtype="PCM_24"), "ok"),
    "float.wav": (lambda p: sf.write(p, tone(16000, 1.0).astype(np.float32), 16000, subtype="FLOAT"), "ok"),
    "silence.flac": (lambda p: sf.write(p, np.zeros(16000), 16000), "ok"),
    "empty.flac": (lambda p: p.write_bytes(b""), r"^empty file \(0 bytes\)$"),
    "truncated.flac": (lambda p: (sf.write(p, tone(16000, 2.0), 16000), p.write_bytes(p.read_bytes()[:3000])),
                       r"^(decoding failed|truncated: header says \d+ frames, decoded \d+)"),
    "text.flac": (lambda p: p.write_text("not audio\n" * 50), r"^not a readable audio file: "),
    "nan.wav": (lambda p: sf.write(p, np.where(np.arange(16000) == 99, np.nan, tone(16000, 1.0)[:, 0]).astype(np.float32),
                                   16000, subtype="FLOAT"), r"^1 non-finite \(NaN/inf\) samples$"),
    "inf.wav": (lambda p: sf.write(p, np.where(np.arange(16000) % 1000 == 0, np.inf, tone(16000, 1.0)[:, 0]).astype(np.float32),
                                   16000, subtype="FLOAT"), r"^16 non-finite \(NaN/inf\) samples$"),
    "hour.flac": (lambda p: _hour(p), r"^longer than max_seconds=3600 s \(3601\.0 s\)$"),
    "missing.flac": (lambda p: None, r"^file not found$"),
    "loop.flac": (lambda p: os.symlink(p.name, p), r"^symbolic link loop$"),
    "folder.flac": (lambda p: p.mkdir(), r"^not a regular file \(a directory\?\)$"),
    "unreadable.flac": (lambda p: (sf.write(p, tone(16000, 1.0), 16000), p.chmod(0)),
                        r"^permission denied \(the file is not readable by this user\)$"),
}


def _hour(path: Path) -> None:
    """3601 s of 8 kHz silence (small as FLAC): refused from its header, never decoded."""
    with sf.SoundFile(path, "w", 8000, 1, format="FLAC") as f:
        block = np.zeros(8000 * 60)
        for _ in range(60):
            f.write(block)
        f.write(np.zeros(8000))


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    for name, (make, _) in AUDIO_CASES.items():
        make(root / name)
    rows = [(name, "bonafide" if k % 2 else "spoof", Path(name).stem) for k, name in enumerate(AUDIO_CASES)]
    pd.DataFrame(rows, columns=["path", "label", "utt_id"]).assign(speaker="s1", extra="ignored").to_csv(
        root / "manifest.csv", index=False)
    out = tmp_path_factory.mktemp("store") / "s.zarr"
    unreadable = str(root / "unreadable.flac")
    real_access = os.access
    with pytest.MonkeyPatch.context() as patch:  # as root every file is readable: act as another user for this one
        patch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == unreadable else real_access(p, mode, **kw))
        result = CliRunner().invoke(main, ["extract", "--dataset", "manifest", "--root", str(root / "manifest.csv"),
                                           "--out", str(out), "--workers", "0", *SMALL_CODEC, "--set", "unit_size=4",
                                           "--bandwidth", "1.5"])
    return result, out


def test_each_bad_file_gets_its_reason_and_the_rest_is_extracted(extracted):
    result, out = extracted
    assert result.exit_code == 1, result.output  # some files failed
    assert "Traceback" not in result.output
    store = FeatureStore(str(out))
    table = store.utterances.set_index("utt_id")
    reasons = store.failures.set_index("utt_id")["reason"]
    for name, (_, expected) in AUDIO_CASES.items():
        utt = Path(name).stem
        if expected == "ok":
            assert table.loc[utt, "status"] == "ok", (name, reasons.get(utt))
            assert table.loc[utt, "n_frames"] >= 1
        else:
            assert table.loc[utt, "status"] == "failed", name
            assert pd.Series([reasons[utt]]).str.match(expected).item(), (name, reasons[utt])
            assert f"{name}: {reasons[utt]}" in result.output  # the summary lists each
    assert table.loc["six_channels", "channels"] == 6 and table.loc["sr96k", "sample_rate"] == 96000
    assert table.loc["one_sample", "n_frames"] == 1
    assert verify_store(str(out)).ok


def la_tree(root: Path, lines: list[bytes]) -> Path:
    protocols = root / "LA" / "ASVspoof2019_LA_cm_protocols"
    audio = root / "LA" / "ASVspoof2019_LA_train" / "flac"
    protocols.mkdir(parents=True)
    audio.mkdir(parents=True)
    for utt in ("LA_T_0000001", "LA_T_0000004", "LA_T_0000005", "LA_T_0000006"):
        sf.write(audio / f"{utt}.flac", tone(16000, 0.5), 16000)
    outside = root.parent / f"{root.name}-outside.flac"
    sf.write(outside, tone(16000, 0.5), 16000)
    os.symlink(outside, audio / "LA_T_0000009.flac")
    (protocols / "ASVspoof2019.LA.cm.train.trn.txt").write_bytes(b"\n".join(lines) + b"\n")
    return root


PROTOCOL_CASES = [
    (b"LA_0079 LA_T_0000001 - - bonafide", None),
    (b"LA_0079 LA_T_\xff\xfe0002 - A01 spoof", "line is not valid UTF-8"),
    (b"LA_0079 LA_T_0000003 - spoof", "expected 5 columns (SPEAKER UTT - SYSTEM KEY), found 4"),
    (b"LA_0079 LA_T_0000004 - A01 spoof extra", "expected 5 columns (SPEAKER UTT - SYSTEM KEY), found 6"),
    (b"LA_0079 LA_T_0000005 - A02 spoof", None),
    (b"LA_0079 LA_T_0000005 - A02 spoof", "duplicate utterance id 'LA_T_0000005' (first at "),
    (b"LA_0079 LA_T_0000006 - A01 maybe", "unknown key 'maybe' (expected bonafide or spoof)"),
    (b"LA_0079 ../../../../../../etc/passwd - A01 spoof", "outside"),
    (b"LA_0079 LA_T_0000009 - A01 spoof", "outside"),
]


def test_each_bad_protocol_line_is_a_problem_naming_its_line(tmp_path):
    root = la_tree(tmp_path / "corpus", [line for line, _ in PROTOCOL_CASES])
    loaded = get_dataset("asv19").load(root, ["train"])
    assert list(loaded.table["utt_id"]) == ["LA_T_0000001", "LA_T_0000005"]
    protocol = root / "LA" / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.train.trn.txt"
    problems = {int(p.reason.split(":", 2)[1]): p.reason for p in loaded.problems}
    for lineno, (_, expected) in enumerate(PROTOCOL_CASES, start=1):
        if expected is None:
            assert lineno not in problems
        else:
            assert problems[lineno].startswith(f"{protocol}:{lineno}: ") and expected in problems[lineno], problems[lineno]


def test_a_manifest_without_a_required_column_is_refused_in_one_line(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,kind\na.flac,spoof\n")
    result = CliRunner().invoke(main, ["extract", "--dataset", "manifest", "--root", str(tmp_path / "manifest.csv"),
                                       "--out", str(tmp_path / "s.zarr"), *SMALL_CODEC])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"manifest {tmp_path / 'manifest.csv'} lacks column(s) label; it has: path, kind" in result.output
    assert not (tmp_path / "s.zarr").exists()


def test_a_protocol_that_is_not_text_at_all(tmp_path):
    root = la_tree(tmp_path / "corpus", [])
    protocol = root / "LA" / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.train.trn.txt"
    protocol.write_bytes(bytes(range(256)) * 4)  # binary garbage, e.g. a protocol replaced by an archive
    loaded = get_dataset("asv19").load(root, ["train"])
    assert loaded.table.empty and loaded.problems and all(str(protocol) in p.reason for p in loaded.problems)
