"""store.inspect on synthetic stores: counts, seconds and bytes against what the test wrote."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from encodec import EncodecModel

from store import format as sf
from store.inspect import format_report, inspect_store
from store.reader import StoreReadError
from store.writer import PartData, create_store, write_part
from tests.synthetic import verifiable_store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return verifiable_store(tmp_path_factory.mktemp("inspect") / "s.zarr", n_per_split=8, failed_per_split=1, problems=1)


@pytest.fixture(scope="module")
def info(store) -> dict:
    return inspect_store(store)


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def test_counts_by_split_label_system(store, info):
    table = pd.read_parquet(Path(store) / sf.UTTERANCES)
    ok = table["status"] == "ok"
    assert info["state"] == "complete"
    assert (info["utterances"], info["ok"], info["failed"]) == (27, 24, 3)
    for column in ("split", "label", "system"):
        expected = {str(k): int(v) for k, v in table[column].value_counts().items()}
        assert {k: v["utterances"] for k, v in info["breakdown"][column].items()} == expected
        expected_ok = {str(k): int(v) for k, v in table.loc[ok, column].value_counts().items()}
        assert {k: v["ok"] for k, v in info["breakdown"][column].items() if v["ok"]} == expected_ok


def test_audio_seconds_and_frames(store, info):
    table = pd.read_parquet(Path(store) / sf.UTTERANCES)
    ok = table[table["status"] == "ok"]
    assert info["audio_seconds"] == pytest.approx(ok["duration"].sum())
    assert info["frames"] == int(ok["n_frames"].sum())
    for split, rows in ok.groupby("split"):
        assert info["breakdown"]["split"][split]["audio_seconds"] == pytest.approx(rows["duration"].sum())
        assert info["breakdown"]["split"][split]["frames"] == int(rows["n_frames"].sum())


def test_bytes_per_array_and_per_second(store, info):
    names = (sf.CODES, sf.LATENT, sf.CODEBOOKS, sf.OFFSETS, sf.UTTERANCES, sf.FAILURES, sf.WEIGHTS)
    for name in names:
        assert info["bytes"][name] > 0
        assert info["bytes"][name] == disk_bytes(Path(store) / name)
    assert info["bytes"]["total"] == disk_bytes(Path(store))
    for name in (sf.CODES, sf.LATENT):
        assert info["bytes_per_audio_second"][name] == pytest.approx(info["bytes"][name] / info["audio_seconds"])


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
def test_weights_file_is_absolute_and_loads_into_encodec(store, info):
    weights = info["weights"]
    assert os.path.isabs(weights["file"]) and Path(weights["file"]) == Path(store).resolve() / sf.WEIGHTS
    assert weights["source"] == "untrained"
    assert hashlib.sha256(Path(weights["file"]).read_bytes()).hexdigest() == weights["sha256"]
    model = EncodecModel.encodec_model_24khz(pretrained=False)
    model.load_state_dict(torch.load(weights["file"], weights_only=True))


def test_provenance_and_failures(info):
    assert info["codec"]["name"] == "encodec_24khz" and info["codec"]["n_q"] == 8 and info["codec"]["bandwidth"] == 6.0
    assert info["dataset"]["name"] == "asv19"
    assert info["created"] and "torch" in info["versions"] and info["config"]["latent"] is True
    assert info["failures"]["count"] == 4  # three failed utterances, one protocol problem
    reasons = [f["reason"] for f in info["failures"]["first"]]
    assert sum("cannot be decoded" in r for r in reasons) == 3


def test_report_text(store, info):
    text = format_report(info)
    for needle in ("complete", "encodec_24khz", "UNTRAINED", str(Path(store).resolve() / sf.WEIGHTS), "27 (24 ok, 3 failed)", "cannot be decoded", "per audio second"):
        assert needle in text


def test_store_without_latent(tmp_path):
    info = inspect_store(verifiable_store(tmp_path / "s.zarr", n_per_split=2, latent=False, failed_per_split=0))
    assert info["has_latent"] is False and sf.LATENT not in info["bytes"] and set(info["streams"]) == {sf.CODES}
    assert set(info["bytes_per_audio_second"]) == {sf.CODES}


def unfinished_store(path: Path) -> str:
    """A store made by the real writer with 2 of 3 work units (unit_size 4) committed."""
    plan = pd.DataFrame(
        {
            "utt_id": [f"U{i}" for i in range(10)],
            "speaker": "S",
            "system": "-",
            "codec": "-",
            "label": "bonafide",
            "split": ["train"] * 6 + ["dev"] * 4,
            "path": [f"/a/{i}.flac" for i in range(10)],
            "duration": np.nan,
        }
    )
    attrs = {
        "codec": {"name": "encodec_24khz", "n_q": 2, "bandwidth": 1.5, "sample_rate": 24000, "frame_rate": 75, "codebook_size": 1024, "dim": 128},
        "weights": {"source": "untrained", "sha256": hashlib.sha256(b"w").hexdigest(), "label": "test weights", "file": sf.WEIGHTS},
        "config": {"unit_size": 4, "latent": False},
    }
    problems = pd.DataFrame(columns=list(sf.FAILURE_COLUMNS))
    streams = sf.codec_stream_specs(attrs["codec"], latent=False, energy=False)
    create_store(str(path), attrs, plan, problems, streams, {sf.CODEBOOKS: np.zeros((2, 1024, 128), np.float32)}, b"w")
    for unit in (0, 2):
        rows = range(unit * 4, min(10, unit * 4 + 4))
        records = [{"row": r, "status": "ok", "n_frames": 75, "duration": 1.0} for r in rows]
        records[0] = {"row": rows[0], "status": "failed", "stage": "audio", "reason": "unreadable"}
        codes = [np.zeros((75, 2), np.uint16) for _ in rows[1:]]
        write_part(str(path), PartData(unit, records, {sf.CODES: codes}))
    return str(path)


def test_unfinished_store_reports_progress(tmp_path):
    info = inspect_store(unfinished_store(tmp_path / "u.zarr"))
    assert info["state"] == sf.STATE_EXTRACTING
    assert info["progress"] == {"units_done": 2, "units_total": 3, "utterances_done": 6, "utterances_planned": 10}
    assert (info["utterances"], info["ok"], info["failed"]) == (10, 4, 2)
    assert info["audio_seconds"] == pytest.approx(4.0) and info["frames"] == 300
    assert info["failures"]["count"] == 2 and info["failures"]["first"][0]["reason"] == "unreadable"
    assert info["bytes"][sf.PARTS] > 0
    text = format_report(info)
    assert "not finished" in text and "2 of 3 work units" in text


def test_not_a_store(tmp_path):
    with pytest.raises(StoreReadError, match="no feature store here"):
        inspect_store(str(tmp_path / "missing.zarr"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {"format": "x"}}')
    with pytest.raises(StoreReadError, match="not a feature store"):
        inspect_store(str(tmp_path / "other"))


def test_damaged_table_is_named(tmp_path, store):
    copy = tmp_path / "c.zarr"
    shutil.copytree(store, copy)
    (copy / sf.UTTERANCES).write_bytes(b"not parquet")
    with pytest.raises(StoreReadError, match="utterances.parquet: not readable"):
        inspect_store(str(copy))
