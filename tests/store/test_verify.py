"""store.verify: a good store passes; each kind of damage fails, naming the file or chunk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from store import format as sf
from store.verify import ChunkLayout, verify_store
from tests.synthetic import verifiable_store

CHECKS = ["format", "tables", "offsets", "utterances", "arrays", "weights", "chunks", "values"]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> str:
    # 27 utterances (3 failed), about 1.8k frames: codes and latent in 8 shards of 4 chunks of 64 frames
    return verifiable_store(tmp_path_factory.mktemp("verify") / "s.zarr", n_per_split=8, failed_per_split=1)


def _copy(src: str, dst: str) -> None:
    """Copy a store file; the large weights file is hard-linked (damage always writes a new file)."""
    if Path(src).name == sf.WEIGHTS:
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


@pytest.fixture
def store(good, tmp_path) -> Path:
    copy = tmp_path / "s.zarr"
    shutil.copytree(good, copy, copy_function=_copy)
    return copy


def overwrite_middle(path: Path, data: bytes = b"\xff" * 16) -> None:
    """Overwrite bytes in the middle of a file, as a new file (never through a hard link)."""
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + len(data)] = data
    path.unlink()
    path.write_bytes(bytes(raw))


def problems(store: Path) -> list[str]:
    report = verify_store(str(store))
    assert not report.ok
    return report.problems


def test_good_store_passes(good):
    report = verify_store(good)
    assert report.ok, report.format()
    assert [c.name for c in report.checks] == CHECKS
    assert report.format().endswith("OK: every check passed")


def test_synthetic_store_spans_several_shards_of_several_chunks(good):
    for name in (sf.CODES, sf.LATENT):
        array = zarr.open_group(good, mode="r")[name]
        assert array.shards[0] == 4 * array.chunks[0] and array.shape[0] > 6 * array.shards[0]


def test_missing_shard_is_named(store):
    (store / "codes/c/3/0").unlink()
    found = problems(store)
    assert found == ["chunks: codes/c/3/0: missing (Zarr would read it as fill value 0)"]


def test_missing_chunk_is_named(store):
    (store / "latent/c/5/0").unlink()
    assert problems(store) == ["chunks: latent/c/5/0: missing (Zarr would read it as fill value 0.0)"]


def test_chunk_missing_inside_a_shard_is_named(store):
    # an inner chunk equal to the fill value is left out of its shard by Zarr: the shard index says so
    zarr.open_group(str(store), mode="r+")[sf.CODES][64:128] = 0
    found = problems(store)
    assert len(found) == 1 and found[0].startswith("chunks: codes/c/0/0 (chunk 1 of the shard, rows 64:128") and "missing from the shard" in found[0]


def test_corrupted_shard_is_named(store):
    overwrite_middle(store / "codes/c/2/0")
    found = problems(store)
    assert len(found) == 1 and found[0].startswith("chunks: codes/c/2/0 ") and "cannot be decoded" in found[0]


def test_truncated_shard_and_chunk_are_named(store):
    for key in ("codes/c/1/0", "latent/c/4/0"):
        path = store / key
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    found = problems(store)
    assert len(found) == 2
    assert found[0].startswith("chunks: codes/c/1/0: ") and "shard index" in found[0]
    assert found[1].startswith("chunks: latent/c/4/0: ") and "shard index" in found[1]


def test_corrupted_checksummed_chunk_is_named(tmp_path):
    # a chunk in the middle of a shard: the shard index is intact, the chunk's checksum is not
    store = Path(verifiable_store(tmp_path / "c.zarr", n_per_split=3))
    assert verify_store(str(store)).ok
    overwrite_middle(store / "latent/c/0/0", bytes(range(16)))
    found = problems(store)
    assert len(found) == 1 and found[0].startswith("chunks: latent/c/0/0 (chunk ") and "cannot be decoded" in found[0]


def test_out_of_range_codes_are_named(store):
    zarr.open_group(str(store), mode="r+")[sf.CODES][300, 2] = 1024
    assert problems(store) == ["values: codes/c/1/0 (chunk 0 of the shard, rows 256:320, 0:8): 1 codes >= codebook size 1024 (max 1024)"]


def test_inconsistent_offsets(store):
    offsets = zarr.open_group(str(store), mode="r+")[sf.OFFSETS]
    offsets[5] = offsets[5] + 1
    found = problems(store)
    assert all(p.startswith("offsets: ") for p in found) and len(found) == 2
    assert "n_frames disagrees with offsets for 2 utterances" in found[0]
    assert "frame_offset disagrees with offsets for 1 utterances" in found[1]


def test_offsets_end_and_length(store):
    root = zarr.open_group(str(store), mode="r+")
    data = root[sf.OFFSETS][...]
    root.create_array(sf.OFFSETS, data=np.append(data, data[-1] + 5), chunks=(len(data) + 1,), overwrite=True)
    found = "\n".join(problems(store))
    assert "offsets: offsets: 29 values for 27 utterances (expected 28)" in found
    assert f"ends at {data[-1] + 5}, but its stream has {data[-1]} frames" in found
    assert "arrays: offsets: shape [29], expected [28]" in found


def test_table_disagrees_with_offsets(store):
    table = pd.read_parquet(store / sf.UTTERANCES)
    table.loc[3, "n_frames"] += 1
    table.to_parquet(store / sf.UTTERANCES, index=False)
    found = problems(store)
    assert any("n_frames disagrees with offsets for 1 utterances, first LA_T_0000003" in p for p in found)


def test_failure_without_record(store):
    failures = pd.read_parquet(store / sf.FAILURES)
    failures[failures["stage"] != "audio"].to_parquet(store / sf.FAILURES, index=False)
    found = problems(store)
    assert sum("failed, but not in failures.parquet" in p for p in found) == 3
    assert any("summary says failed 4, the tables give 1" in p for p in found)


def test_unfinished_utterance(store):
    table = pd.read_parquet(store / sf.UTTERANCES)
    table.loc[0, "status"] = "pending"
    table.to_parquet(store / sf.UTTERANCES, index=False)
    assert any("1 utterances not done (status ['pending'])" in p for p in problems(store))


def test_altered_weights_file(store):
    overwrite_middle(store / sf.WEIGHTS, b"\x01\x02\x03")
    found = problems(store)
    assert len(found) == 1 and found[0].startswith("weights: codec_weights.th: sha256 ") and "differs from the attributes'" in found[0]


def test_missing_weights_file(store):
    (store / sf.WEIGHTS).unlink()
    assert problems(store) == ["weights: codec_weights.th: missing"]


def test_codebooks_that_are_not_the_codecs(store):
    root = zarr.open_group(str(store), mode="r+")
    root[sf.CODEBOOKS][3, 0, 0] = 7.0
    assert problems(store) == ["weights: codebooks differ from codec_weights.th's quantizer codebooks at levels 3"]


def test_non_finite_codebooks(store):
    zarr.open_group(str(store), mode="r+")[sf.CODEBOOKS][0, 5, 5] = np.nan
    found = problems(store)
    assert "values: codebooks/c/0/0/0 (rows 0:8, 0:1024, 0:128): 1 values not finite" in found


def test_damaged_array_metadata(store):
    (store / "latent/zarr.json").write_text("{")
    found = problems(store)
    assert len(found) == 1 and found[0].startswith("arrays: latent/zarr.json: not readable")


def test_unfinished_store_fails_format(store):
    root = zarr.open_group(str(store), mode="r+")
    root.attrs["state"] = sf.STATE_EXTRACTING
    report = verify_store(str(store))
    assert not report.ok and [c.name for c in report.checks] == ["format"]
    assert "extraction not finished" in report.problems[0]


def test_not_a_store(tmp_path):
    assert verify_store(str(tmp_path)).problems == ["format: zarr.json: missing (no feature store here)"]


def test_chunk_keys_of_other_encodings():
    meta = {"shape": [10, 4], "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4, 4]}}}
    v2 = ChunkLayout.from_metadata("a", {**meta, "chunk_key_encoding": {"name": "v2", "configuration": {"separator": "."}}})
    assert [key for _, key in v2.stored()] == ["0.0", "1.0", "2.0"]
    dotted = ChunkLayout.from_metadata("a", {**meta, "chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}}})
    assert [key for _, key in dotted.stored()] == ["c.0.0", "c.1.0", "c.2.0"]
    assert dotted.chunks_in((2, 0)) == [(0, (slice(8, 10), slice(0, 4)))]
