"""store.export: the HDF5 file's embeddings against codebooks[q][codes] computed here."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import zarr

from store import export
from store import format as sf
from store.export import ExportError, export_hdf5
from store.reader import StoreReadError
from tests.synthetic import verifiable_store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return verifiable_store(tmp_path_factory.mktemp("export") / "s.zarr", n_per_split=8, failed_per_split=1, seed=1)


@pytest.fixture(scope="module")
def raw(store) -> dict:
    """The store read directly: table, codes, codebooks, latent, offsets, attributes."""
    root = zarr.open_group(store, mode="r")
    return {
        "table": pd.read_parquet(Path(store) / sf.UTTERANCES),
        "codes": root[sf.CODES][...],
        "codebooks": root[sf.CODEBOOKS][...],
        "latent": root[sf.LATENT][...],
        "offsets": root[sf.OFFSETS][...],
        "attrs": dict(root.attrs),
        "store": store,
    }


def expected_embeddings(raw: dict, rows: list[int]) -> np.ndarray:
    parts = []
    for row in rows:
        codes = raw["codes"][raw["offsets"][row] : raw["offsets"][row + 1]]
        parts.append(np.stack([raw["codebooks"][q][codes[:, q]] for q in range(codes.shape[1])], axis=1))
    return np.concatenate(parts)


def check_file(path: Path, raw: dict, rows: list[int], latent: bool) -> None:
    table = raw["table"].loc[rows]
    with h5py.File(path, "r") as f:
        assert f["embeddings"].dtype == np.float32 and f["embeddings"].shape[1:] == (8, 128)
        np.testing.assert_array_equal(f["embeddings"][...], expected_embeddings(raw, rows))
        assert f["offsets"].dtype == np.int64
        np.testing.assert_array_equal(f["offsets"][...], np.concatenate([[0], np.cumsum(table["n_frames"])]))
        assert list(f["utterance_id"].asstr()[...]) == table["utt_id"].tolist()
        assert list(f["utterances/label"].asstr()[...]) == table["label"].tolist()
        assert list(f["utterances/split"].asstr()[...]) == table["split"].tolist()
        np.testing.assert_array_equal(f["utterances/duration"][...], table["duration"].to_numpy())
        np.testing.assert_array_equal(f["utterances/store_row"][...], rows)
        np.testing.assert_array_equal(f["utterances/store_frame_offset"][...], raw["offsets"][rows])
        np.testing.assert_array_equal(f["codebooks"][...], raw["codebooks"])
        assert f.attrs["weights_sha256"] == raw["attrs"]["weights"]["sha256"]
        assert f.attrs["weights_label"] == raw["attrs"]["weights"]["label"]
        assert f.attrs["store"] == str(Path(raw["store"]).resolve())
        assert ("latent" in f) == latent
        if latent:
            expected = np.concatenate([raw["latent"][raw["offsets"][r] : raw["offsets"][r + 1]] for r in rows])
            np.testing.assert_array_equal(f["latent"][...], expected)


def test_export_all_ok_utterances(store, raw, tmp_path):
    table = raw["table"]
    ok_rows = table.index[table["status"] == "ok"].tolist()
    assert len(ok_rows) == 24  # 8 per split; 3 failed
    result = export_hdf5(store, tmp_path / "all.h5")
    assert (result.utterances, result.frames) == (24, int(table.loc[ok_rows, "n_frames"].sum()))
    check_file(tmp_path / "all.h5", raw, ok_rows, latent=False)
    with h5py.File(tmp_path / "all.h5") as f:
        failed = set(table.loc[table["status"] != "ok", "utt_id"])
        assert not failed & set(f["utterance_id"].asstr()[...])
        assert f.attrs["split"] == "all"


def test_split_filter_and_latent(store, raw, tmp_path):
    table = raw["table"]
    rows = table.index[(table["split"] == "dev") & (table["status"] == "ok")].tolist()
    assert 0 < len(rows) < (table["split"] == "dev").sum()  # a failed row sits inside the split
    export_hdf5(store, tmp_path / "dev.h5", split="dev", latent=True)
    check_file(tmp_path / "dev.h5", raw, rows, latent=True)


def test_small_blocks_give_the_same_file(store, raw, tmp_path, monkeypatch):
    # dense blocks of 7 frames and code reads of 50 frames: blocks cut through utterances
    monkeypatch.setattr(export, "DENSE_BYTES", 7 * 8 * 128 * 4)
    monkeypatch.setattr(export, "CODES_BYTES", 50 * 8 * 2)
    calls = []
    table = raw["table"]
    rows = table.index[table["status"] == "ok"].tolist()
    export_hdf5(store, tmp_path / "small.h5", latent=True, progress=lambda done, total: calls.append((done, total)))
    check_file(tmp_path / "small.h5", raw, rows, latent=True)
    assert len(calls) > 10 and calls[-1][0] == calls[-1][1] and all(a <= b for (a, _), (b, _) in zip(calls, calls[1:]))


def test_errors(store, tmp_path):
    with pytest.raises(StoreReadError, match="no split 'test'; the store has dev, eval, train"):
        export_hdf5(store, tmp_path / "x.h5", split="test")
    with pytest.raises(ExportError, match="does not exist"):
        export_hdf5(store, tmp_path / "nowhere" / "x.h5")
    bare = verifiable_store(tmp_path / "bare.zarr", n_per_split=2, latent=False, failed_per_split=0, seed=1)
    with pytest.raises(StoreReadError, match="no latent"):
        export_hdf5(bare, tmp_path / "x.h5", latent=True)
    assert list(tmp_path.glob("*.h5")) == [] and list(tmp_path.glob(".*partial")) == []


def test_damaged_chunk_is_named_and_no_file_left(store, tmp_path):
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    (copy / "codes/c/1/0").write_bytes(b"\0" * 40)
    with pytest.raises(StoreReadError, match=r"(?s)cannot read codes frames .*codes/c/1/0.*pipeline verify"):
        export_hdf5(str(copy), tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists() and list(tmp_path.glob(".*partial")) == []
