"""`pipeline export`: dense per-quantizer embeddings of a store's ok utterances, as one HDF5 file.

For tools that want the embeddings themselves rather than codes plus codebooks. The file holds:

    embeddings      float32 [frames, n_q, dim]   embeddings[f, q] = codebooks[q, codes[f, q]]
    offsets         int64   [n + 1]              utterance i = frames offsets[i]:offsets[i+1]
    utterance_id    UTF-8 strings [n]
    utterances/     the store table's other columns, one dataset each ([n]); ``store_row`` is the
                    utterance's row in the store, ``store_frame_offset`` its first frame there
    codebooks       float32 [n_q, codebook_size, dim]
    latent          float16 [frames, dim]        with ``--latent`` only
    attributes      the store, the codec, the weights (label, sha256, source), the split, and the
                    augmented view (``view``, ``view_recipe``; "" for the clean features)

Memory stays bounded: codes are read a block at a time and turned into at most
:data:`DENSE_BYTES` of dense embeddings before they are written. The file is written under a
temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .reader import FeatureStore, StoreDamaged, StoreReadError

EXPORT_FORMAT = "rvq-antispoof-dense-embeddings"
EXPORT_FORMAT_VERSION = 1
DENSE_BYTES = 4 << 20
"""Most dense data (embeddings or latent) held at once."""
CODES_BYTES = 4 << 20
"""Most codes read from the store at once."""
H5_CHUNK_BYTES = 512 << 10
"""Target size of an HDF5 chunk of the embeddings and latent."""


class ExportError(ValueError):
    """The export cannot be made as asked (nothing to export, unwritable output)."""


@dataclass(frozen=True)
class ExportResult:
    out: Path
    utterances: int
    frames: int
    n_q: int
    dim: int
    latent: bool
    bytes: int


def _frame_runs(starts: np.ndarray, ends: np.ndarray) -> list[tuple[int, int]]:
    """Merge consecutive frame ranges that touch into (start, end) runs, in order."""
    runs: list[tuple[int, int]] = []
    for start, end in zip(starts.tolist(), ends.tolist()):
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end)
        elif end > start:
            runs.append((start, end))
    return runs


def _column_data(values: pd.Series) -> tuple[np.ndarray, object]:
    """A table column as an HDF5-writable array and dtype (text as variable-length UTF-8)."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        data = values.to_numpy()
        return data, data.dtype
    text = values.astype(object).where(values.notna(), "").map(str)
    return text.to_numpy(dtype=object), h5py.string_dtype("utf-8")


def _read(store: FeatureStore, name: str, array, start: int, stop: int) -> np.ndarray:
    """Frames start:stop of a store array; a damaged chunk becomes a StoreReadError naming them."""
    try:
        return np.asarray(array[start:stop])
    except Exception as err:  # codecs raise many types for corrupt bytes  # noqa: BLE001
        advice = "" if isinstance(err, StoreDamaged) else f"; run `pipeline verify {store.url}`"  # it has its own repair line
        raise StoreReadError(f"{store.url}: cannot read {name} frames {start}:{stop} ({type(err).__name__}: {err}){advice}") from None


def _rows_per_chunk(row_bytes: int, total: int) -> int:
    return max(1, min(total, H5_CHUNK_BYTES // row_bytes))


def _selection(store: FeatureStore, split: str | None) -> pd.DataFrame:
    if store.recipe and split is not None and split not in store.recipe.get("splits", []):
        raise ExportError(f"{store.url}: view {store.view_name!r} applies to split(s) "
                          f"{', '.join(store.recipe.get('splits', []))}, not {split!r}")
    table = store.split(split) if split is not None else store.utterances[store.utterances["status"] == "ok"]
    if table.empty:
        raise ExportError(f"{store.url}: no ok utterances to export" + (f" in split {split!r}" if split else ""))
    return table


def _attributes(store: FeatureStore, split: str | None, latent: bool) -> dict[str, object]:
    codec = store.codec
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "layout": "embeddings[f, q] = codebooks[q, codes[f, q]]; utterance i = frames offsets[i]:offsets[i+1]",
        "store": store.url if "://" in store.url else os.path.abspath(store.url),
        "store_created": store.attrs.get("created", ""),
        "split": split if split is not None else "all",
        "latent": latent,
        "codec": codec.name,
        "sample_rate": codec.sample_rate,
        "frame_rate": codec.frame_rate,
        "n_q": codec.n_q,
        "bandwidth": codec.bandwidth,
        "codebook_size": codec.codebook_size,
        "dim": codec.dim,
        "weights_label": codec.weights_label,
        "weights_sha256": codec.weights_sha256,
        "weights_source": store.attrs["weights"].get("source", ""),
        "weights_trained": codec.trained,
        "dataset": store.attrs.get("dataset", {}).get("name", ""),
        "exported": datetime.now(UTC).isoformat(timespec="seconds"),
        "view": store.view_name,
        "view_recipe": json.dumps(store.recipe, sort_keys=True) if store.recipe else "",
    }


def _write(f: h5py.File, store: FeatureStore, table: pd.DataFrame, latent: bool, progress: Callable[[int, int], None] | None) -> int:
    rows = table.index.to_numpy()
    starts, ends = store.offsets[rows], store.offsets[rows + 1]
    offsets = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
    total = int(offsets[-1])
    n_q, dim = store.codec.n_q, store.codec.dim
    embeddings = f.create_dataset("embeddings", shape=(total, n_q, dim), dtype="float32", chunks=(_rows_per_chunk(n_q * dim * 4, total), n_q, dim))
    latent_out = f.create_dataset("latent", shape=(total, dim), dtype="float16", chunks=(_rows_per_chunk(dim * 2, total), dim)) if latent else None
    f.create_dataset("offsets", data=offsets)
    f.create_dataset("utterance_id", data=_column_data(table["utt_id"])[0], dtype=h5py.string_dtype("utf-8"))
    columns = f.create_group("utterances")
    extra = table.drop(columns=["utt_id"]).rename(columns={"frame_offset": "store_frame_offset"}).assign(store_row=rows)
    for name in extra.columns:
        data, dtype = _column_data(extra[name])
        columns.create_dataset(str(name), data=data, dtype=dtype)
    f.create_dataset("codebooks", data=store.codebooks)

    codes = store.codes  # the Zarr array: read block by block
    read_frames = max(1, CODES_BYTES // (n_q * 2))
    dense_frames = max(1, DENSE_BYTES // (n_q * dim * 4))
    latent_frames = max(1, DENSE_BYTES // (dim * 2))
    position = 0
    for run_start, run_end in _frame_runs(starts, ends):
        for block in range(run_start, run_end, read_frames):
            block_codes = _read(store, "codes", codes, block, min(block + read_frames, run_end))
            for k in range(0, len(block_codes), dense_frames):
                part = block_codes[k : k + dense_frames]
                embeddings[position + k : position + k + len(part)] = store.embeddings(part)
            if latent_out is not None:
                for k in range(0, len(block_codes), latent_frames):
                    n = min(latent_frames, len(block_codes) - k)
                    latent_out[position + k : position + k + n] = _read(store, "latent", store.latent, block + k, block + k + n)
            position += len(block_codes)
            if progress is not None:
                progress(position, total)
    if position != total:
        raise ExportError(f"{store.url}: wrote {position} frames, expected {total}")
    return total


def export_hdf5(
    url: str,
    out: str | Path,
    split: str | None = None,
    latent: bool = False,
    progress: Callable[[int, int], None] | None = None,
    view: str | None = None,
) -> ExportResult:
    """Export the ok utterances of a finished store (or of one ``split``) to the HDF5 file ``out``;
    ``view``: those of the store's augmented view of that name instead (`store.views`), under the
    same utterance ids, the view's recipe in the attributes.

    ``progress(frames written, total frames)`` is called after each block. Raises
    :class:`StoreReadError` for an unreadable store, an unknown split or a missing latent, and
    :class:`ExportError` when there is nothing to export or the file cannot be written.
    """
    store = FeatureStore(url, in_memory=False)
    if view:
        store = store.view(view)
    if latent and not store.has_latent:
        raise StoreReadError(f"{store.url}: this store has no latent; export without --latent, or re-extract with --latent")
    table = _selection(store, split)
    out = Path(out)
    if not out.parent.is_dir():
        raise ExportError(f"{out}: the folder {out.parent} does not exist")
    tmp = out.with_name(f".{out.name}.partial")
    try:
        with h5py.File(tmp, "w", rdcc_nbytes=4 * H5_CHUNK_BYTES) as f:
            f.attrs.update(_attributes(store, split, latent))
            frames = _write(f, store, table, latent, progress)
        os.replace(tmp, out)
    except OSError as err:
        raise ExportError(f"{out}: cannot be written ({err})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(out, len(table), frames, store.codec.n_q, store.codec.dim, latent, out.stat().st_size)


EXPORTERS: dict[str, Callable[..., ExportResult]] = {"hdf5": export_hdf5}
"""Export formats by name (``pipeline export --format``): each takes (store url, out, split, latent, progress,
view)."""
