"""The feature store's layout: names shared by the writer (extract) and the reader (classify).

    STORE.zarr/                 a Zarr v3 group; any fsspec URL works (local path, s3://, gs://)
      zarr.json                 attributes: format, format_version, state, codec, weights, dataset,
                                config, versions, created, completed, summary
      codebooks                 float32 [n_q, 1024, 128]   the frozen RVQ tables C_q
      codes                     uint16  [total_frames, n_q] every utterance's codes, concatenated
      latent                    float16 [total_frames, 128] encoder output before quantization (optional)
      offsets                   int64   [n_utts + 1]        utterance i = frames offsets[i]:offsets[i+1]
      utterances.parquet        one row per utterance of the protocol (status "ok" or "failed")
      failures.parquet          utt_id, path, stage, reason
      codec_weights.th          the codec's state dict (torch.save; load with weights_only=True)
      plan.parquet, problems.parquet, parts/   working files while state == "extracting"

While extracting, each work unit (a fixed run of consecutive utterances) is written by exactly one
worker into its own group ``parts/uNNNNNN``; the unit is done once that group's ``records``
attribute is written, after its data. Finishing copies the parts, in order, into the contiguous
arrays above, sets state to "complete", then removes ``parts/``.
"""

from __future__ import annotations

import io
import json

import fsspec
import pandas as pd

FORMAT = "rvq-antispoof-features"
FORMAT_VERSION = 1
STATE_EXTRACTING = "extracting"
STATE_COMPLETE = "complete"

CODEBOOKS = "codebooks"
CODES = "codes"
LATENT = "latent"
OFFSETS = "offsets"
UTTERANCES = "utterances.parquet"
FAILURES = "failures.parquet"
WEIGHTS = "codec_weights.th"
PLAN = "plan.parquet"
PROBLEMS = "problems.parquet"
PARTS = "parts"

CODES_CHUNK = 1 << 16  # frames per chunk (about 14.6 min of audio at 75 Hz)
LATENT_CHUNK = 1 << 14
SHARD_CHUNKS = 16  # chunks per shard along frames

FAILURE_COLUMNS = ("utt_id", "path", "stage", "reason")


def part_name(unit: int) -> str:
    return f"{PARTS}/u{unit:06d}"


class StoreFiles:
    """Side files of a store (Parquet tables, weights) through fsspec, beside the Zarr arrays."""

    def __init__(self, url: str):
        self.url = str(url)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)

    def path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def exists(self, name: str = "zarr.json") -> bool:
        return self.fs.exists(self.path(name))

    def write_bytes(self, name: str, data: bytes) -> None:
        tmp = self.path(name + ".tmp")
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, self.path(name))

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open(self.path(name), "rb") as f:
            return f.read()

    def write_table(self, name: str, table: pd.DataFrame) -> None:
        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        self.write_bytes(name, buf.getvalue())

    def read_table(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self.read_bytes(name)))

    def read_group_attrs(self, name: str = "") -> dict:
        """Attributes of a group, read from its zarr.json without opening it through zarr."""
        meta = json.loads(self.read_bytes(f"{name}/zarr.json" if name else "zarr.json"))
        return meta.get("attributes", {})

    def size(self, name: str) -> int:
        """Bytes on disk under ``name`` (a file or a folder)."""
        path = self.path(name)
        if not self.fs.exists(path):
            return 0
        return int(self.fs.du(path)) if self.fs.isdir(path) else int(self.fs.size(path))

    def remove(self, name: str) -> None:
        if self.fs.exists(self.path(name)):
            self.fs.rm(self.path(name), recursive=True)
