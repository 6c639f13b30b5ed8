"""Streams: read by name, added to a finished store without touching it, and stores of format 1."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from classify.train import train
from store import format as sf
from store.inspect import inspect_store
from store.reader import FeatureStore, StoreReadError
from store.verify import verify_store
from store.writer import PartData, create_stream, finish_stream, write_part
from tests.synthetic import synthetic_store, tiny_config, verifiable_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def file_hashes(root: Path, skip: str = "streams") -> dict[str, str]:
    """sha256 of every file of a store, except those under ``skip``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not str(p.relative_to(root)).startswith(skip)}


def add_ssl_like_stream(store: str, n_units: int = 2, finish: bool = True, rate: float = 50.0) -> dict[int, np.ndarray]:
    """Add a 50 Hz float16 [3, 4] stream through the writer: 2/3 as many frames as the codes, none
    for failed utterances. Returns each row's frames."""
    table = pd.read_parquet(Path(store) / sf.UTTERANCES)
    spec = sf.added_stream_spec("ssl", rate, "float16", (3, 4), about="test stream")
    create_stream(store, spec, {"config": {"layers": 3}})
    rng = np.random.default_rng(1)
    frames = {}
    size = -(-len(table) // n_units)
    for unit in range(n_units):
        records, data = [], []
        for row in range(unit * size, min(len(table), (unit + 1) * size)):
            if table["status"].iloc[row] != "ok":
                records.append({"row": row, "status": "failed", "n_frames": 0, "stage": "store", "reason": "failed before"})
                continue
            n = int(table["n_frames"].iloc[row]) * 2 // 3
            frames[row] = rng.standard_normal((n, 3, 4)).astype(np.float16)
            data.append(frames[row])
            records.append({"row": row, "status": "ok", "n_frames": n})
        write_part(store, PartData(unit, records, {"ssl": data}), sf.added_stream_group("ssl"))
    if finish:
        finish_stream(store, "ssl", n_units)
    return frames


def test_streams_of_a_new_store_and_a_clear_error_for_a_missing_one(tmp_path):
    store = FeatureStore(synthetic_store(str(tmp_path / "s.zarr"), n_per_split=4, energy=True))
    assert list(store.streams) == [sf.CODES, sf.LATENT, sf.ENERGY]
    codes = store.stream(sf.CODES)
    assert codes.spec.frame_rate == 75 and codes.spec.frame_shape == (8,) and codes.spec.tables == (sf.CODEBOOKS,)
    assert np.array_equal(codes.utterance(3), store.utterance_codes(3))
    assert store.stream(sf.ENERGY).data.shape == (store.codes.shape[0], 1)
    with pytest.raises(StoreReadError) as err:
        store.stream("ssl")
    message = str(err.value)
    assert "no stream 'ssl'" in message and "codes (75 frames/s, uint16 [8])" in message and "latent (75" in message


def test_adding_a_stream_touches_nothing_else(tmp_path):
    path = verifiable_store(tmp_path / "s.zarr", n_per_split=4, failed_per_split=1)
    before = file_hashes(Path(path))
    frames = add_ssl_like_stream(path)
    assert file_hashes(Path(path)) == before  # root zarr.json, codes, tables: byte for byte
    store = FeatureStore(path)
    ssl = store.stream("ssl")
    assert ssl.spec.frame_rate == 50 and ssl.data.shape[1:] == (3, 4)
    for row, data in frames.items():
        np.testing.assert_array_equal(ssl.utterance(row), data)
    failed = np.flatnonzero(store.utterances["status"].to_numpy() != "ok")
    assert all(ssl.offsets[r + 1] == ssl.offsets[r] for r in failed)
    report = verify_store(path)
    assert report.ok, report.format()
    assert "streams/ssl/offsets" in report.checks[2].detail
    info = inspect_store(path)
    assert info["streams"]["ssl"]["frame_rate"] == 50 and info["streams"]["ssl"]["bytes"] > 0


def test_a_stream_still_being_added_is_named_everywhere(tmp_path):
    path = verifiable_store(tmp_path / "s.zarr", n_per_split=3, failed_per_split=0, problems=0)
    add_ssl_like_stream(path, finish=False)
    store = FeatureStore(path)
    assert "ssl" not in store.streams and store.pending_streams() == ["ssl"]
    with pytest.raises(StoreReadError, match="ssl are still being added: run the same `pipeline extract` again"):
        store.stream("ssl")
    assert any("stream 'ssl' is still being added" in p for p in verify_store(path).problems)
    assert inspect_store(path)["pending_streams"] == ["ssl"]


def write_format1_store(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A store exactly as the format 1 writer left it: codes, latent and offsets at the root, no
    ``streams`` attribute, format_version 1 (unsharded, Zarr's default compressors)."""
    rng = np.random.default_rng(0)
    n_per_split, n_q, size, dim = 8, 8, 64, 16
    rows, lengths = [], []
    for split in ("train", "dev", "eval"):
        for i in range(n_per_split):
            label = "bonafide" if i < 3 else "spoof"
            lengths.append(int(rng.integers(40, 90)))
            rows.append({"utt_id": f"U{len(rows)}", "speaker": f"S{i % 2}", "system": "bonafide" if label == "bonafide" else "A01",
                         "codec": "-", "label": label, "split": split, "path": f"/x/{len(rows)}.flac", "duration": lengths[-1] / 75,
                         "status": "ok", "n_frames": lengths[-1], "n_windows": 1, "sample_rate": 16000, "channels": 1})
    table = pd.DataFrame(rows)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    table["frame_offset"] = offsets[:-1]
    codes = rng.integers(0, size, (offsets[-1], n_q)).astype(np.uint16)
    codes[:, 0] = np.where(np.repeat(table["label"] == "bonafide", lengths), codes[:, 0] % 32, 32 + codes[:, 0] % 32)
    codebooks = rng.standard_normal((n_q, size, dim)).astype(np.float32)
    latent = rng.standard_normal((offsets[-1], dim)).astype(np.float16)
    root = zarr.open_group(str(path), mode="w")
    for name, data in (("codebooks", codebooks), ("codes", codes), ("latent", latent), ("offsets", offsets)):
        root.create_array(name, data=data)
    table.to_parquet(path / "utterances.parquet", index=False)
    pd.DataFrame(columns=["utt_id", "path", "stage", "reason"]).to_parquet(path / "failures.parquet", index=False)
    sha = hashlib.sha256(codebooks.tobytes()).hexdigest()
    root.attrs.update({
        "format": "rvq-antispoof-features", "format_version": 1, "state": "complete",
        "codec": {"name": "encodec_24khz", "sample_rate": 24000, "frame_rate": 75, "n_q": n_q, "bandwidth": 6.0,
                  "codebook_size": size, "dim": dim, "parameters": 14851810},
        "weights": {"source": "untrained", "sha256": sha, "trained": False, "origin": "test", "label": f"UNTRAINED test, {sha[:12]}"},
        "dataset": {"name": "asv19", "root": "/x", "splits": ["dev", "eval", "train"]},
        "config": {"latent": True, "unit_size": 32},
        "summary": {"utterances": len(table), "ok": len(table), "failed": 0, "frames": int(offsets[-1])},
    })
    return codes, latent


def test_a_format_1_store_is_read_checked_and_trained_on(tmp_path):
    path = tmp_path / "v1.zarr"
    codes, latent = write_format1_store(path)
    store = FeatureStore(str(path))
    assert list(store.streams) == [sf.CODES, sf.LATENT] and store.score_format == "asvspoof2019"
    assert np.array_equal(store.codes, codes) and np.array_equal(store.latent[...], latent)
    assert json.loads((path / "zarr.json").read_text())["attributes"]["format_version"] == 1
    report = verify_store(str(path))
    assert [p for p in report.problems if not p.startswith("weights")] == []  # no weights file in a bare v1 test store
    assert inspect_store(str(path))["streams"][sf.CODES]["frames"] == len(codes)
    result = train(tiny_config(epochs=1), store, tmp_path / "run", log=lambda _: None)
    assert result.epochs_run == 1 and 0 <= result.best_dev_eer <= 1


def test_a_newer_format_is_refused_with_what_to_do(tmp_path):
    path = synthetic_store(str(tmp_path / "s.zarr"), n_per_split=2)
    root = zarr.open_group(path, mode="r+")
    root.attrs["format_version"] = sf.FORMAT_VERSION + 1
    with pytest.raises(StoreReadError, match="newer than this tool's .*upgrade rvq-antispoof"):
        FeatureStore(path)
