"""The feature store's format: its layout, its streams, and the side files beside the Zarr arrays.

    STORE.zarr/                 a Zarr v3 group; any fsspec URL works (local path, s3://, gs://)
      zarr.json                 attributes: format, format_version, state, streams, codec, weights,
                                dataset, config, versions, provenance, created, completed, summary
      codebooks                 float32 [n_q, 1024, 128]   the frozen RVQ tables C_q (of stream codes)
      codes                     uint16  [frames, n_q]      stream "codes": every utterance's codes, concatenated
      latent                    float16 [frames, 128]      stream "latent": encoder output before quantization
      energy                    float16 [frames, 1]        stream "energy": log frame energy (dB), no codec
      offsets                   int64   [n_utts + 1]       utterance i = frames offsets[i]:offsets[i+1] of
                                                           the streams written with the store (75 Hz)
      streams/NAME/             a stream added to a finished store later (e.g. `extract --latent` on a
        zarr.json                 store made without it, or the SSL layers): attributes stream, state, config,
        data, offsets             provenance, summary; its own frame rate and offsets; parts/ while extracting
      utterances.parquet        one row per utterance of the protocol (status "ok" or "failed"): the
                                dataset's columns (utt_id, speaker, system, codec, label, split, path,
                                duration, then its metadata columns, e.g. condition, phase, vocoder,
                                language, model: named in the ``dataset.metadata`` attribute; stores
                                older than that attribute simply have none) and the extraction's
                                records (status, n_frames, sample_rate, ..., frame_offset)
      failures.parquet          utt_id, path, stage, reason
      codec_weights.th          the codec's state dict (torch.save; load with weights_only=True)
      plan.parquet, problems.parquet, parts/   working files while state == "extracting"

A *stream* is one kind of per-frame feature with its own frame rate, dtype, frame shape and offsets
(:class:`StreamSpec`). The streams written with the store share ``offsets``; a stream added later
lives in its own group with its own offsets, and adding it never touches the others. Readers ask
for a stream by name (`store.reader.FeatureStore.stream`).

While extracting, each work unit (a fixed run of consecutive utterances) is written by exactly one
worker into its own group ``parts/uNNNNNN`` (``streams/NAME/parts/uNNNNNN`` for an added stream);
the unit is done once that group's ``records`` attribute is written, after its data. Finishing copies
the parts, in order, into the contiguous arrays above, sets state to "complete", then removes
``parts/``.

Format versions: 1 (no ``streams`` attribute, no added streams) is still read, its streams inferred
from the arrays present (:func:`stream_specs`); 2 is written.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass

import fsspec
import numpy as np
import pandas as pd

FORMAT = "rvq-antispoof-features"
FORMAT_VERSION = 2
STATE_EXTRACTING = "extracting"
STATE_COMPLETE = "complete"

CODEBOOKS = "codebooks"
CODES = "codes"
LATENT = "latent"
ENERGY = "energy"
OFFSETS = "offsets"
UTTERANCES = "utterances.parquet"
FAILURES = "failures.parquet"
WEIGHTS = "codec_weights.th"
PLAN = "plan.parquet"
PROBLEMS = "problems.parquet"
PARTS = "parts"
STREAMS = "streams"
STREAM_DATA = "data"

MAX_CHUNK_FRAMES = 1 << 16  # about 14.6 min of audio at 75 Hz
CHUNK_BYTES = 4 << 20
"""Target uncompressed bytes per chunk: codes get 65,536 frames, the latent 16,384, a frame of
12 SSL layers x 1024 dims in float16 170."""
SHARD_CHUNKS = 16  # chunks per shard along frames

INTEGRITY = "attributes_sha256"
DIGESTED = ("format", "format_version", "codec", "weights", "dataset", "config", "streams")
"""The attributes that define a store's content: their sha256 (:func:`attrs_digest`) is recorded as
``attributes_sha256`` when the store is finished, so that `pipeline verify` sees an edit."""

FAILURE_COLUMNS = ("utt_id", "path", "stage", "reason")
LEGACY_SCORE_FORMATS = {"asv19": "asvspoof2019", "demo": "asvspoof2019", "asv5": "asvspoof5", "manifest": "asvspoof5"}
"""Score format of the datasets of version 1 stores, which did not record it."""


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a store: where its frames and offsets are, and what a frame is.

    ``array``/``offsets``: paths of the data array [frames, *frame_shape] and of the offsets
    [n_utts + 1] inside the store; ``frame_rate`` in frames per second; ``dtype`` numpy's name;
    ``tables``: other arrays that belong to the stream (the codes' ``codebooks``); ``about``: one line
    for reports; ``source``: what made it (the codec, the SSL model and its weights), free-form."""

    name: str
    array: str
    offsets: str
    frame_rate: float
    dtype: str
    frame_shape: tuple[int, ...]
    tables: tuple[str, ...] = ()
    about: str = ""
    source: dict | None = None

    def to_attrs(self) -> dict:
        return {**asdict(self), "frame_shape": list(self.frame_shape), "tables": list(self.tables)}

    @classmethod
    def from_attrs(cls, values: dict) -> StreamSpec:
        return cls(**{**values, "frame_shape": tuple(values["frame_shape"]), "tables": tuple(values.get("tables", ()))})

    @property
    def frame_bytes(self) -> int:
        """Uncompressed bytes of one frame."""
        return int(np.prod(self.frame_shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def chunk_frames(self) -> int:
        """Frames per chunk of the stream's array (see CHUNK_BYTES)."""
        return max(1, min(MAX_CHUNK_FRAMES, CHUNK_BYTES // self.frame_bytes))

    def describe(self) -> str:
        shape = " x ".join(str(n) for n in self.frame_shape)
        return f"{self.name} ({self.frame_rate:g} frames/s, {self.dtype} [{shape}])"


def attrs_digest(attrs: dict) -> str:
    """sha256 of the content-defining attributes (:data:`DIGESTED`), as canonical JSON."""
    content = {key: attrs.get(key) for key in DIGESTED}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def added_stream_group(name: str) -> str:
    """The group of a stream added to a finished store."""
    return f"{STREAMS}/{name}"


def added_stream_spec(name: str, frame_rate: float, dtype: str, frame_shape: tuple[int, ...], about: str = "",
                      source: dict | None = None, group: str | None = None) -> StreamSpec:
    """The spec of a stream added later: its data in ``GROUP/data`` (``group``: default
    ``streams/NAME``; an augmented view's SSL stream lives under its view, `store.views`)."""
    group = group or added_stream_group(name)
    return StreamSpec(name, f"{group}/{STREAM_DATA}", f"{group}/{OFFSETS}", frame_rate, dtype, tuple(frame_shape),
                      about=about, source=source)


def group_stream_specs(attrs: dict) -> list[StreamSpec]:
    """The streams a stream group's attributes declare: one (``stream``, a stream added to a
    finished store) or several sharing the group's offsets (``streams``, an augmented view's codec
    streams)."""
    if "streams" in attrs:
        return [StreamSpec.from_attrs(spec) for spec in attrs["streams"].values()]
    return [StreamSpec.from_attrs(attrs["stream"])] if "stream" in attrs else []


def group_of(spec: StreamSpec) -> str:
    """The group whose work units wrote ``spec`` ("" for the streams written with the store)."""
    return spec.array.rsplit("/", 1)[0] if "/" in spec.array else ""


def codec_stream_specs(codec: dict, latent: bool, energy: bool) -> list[StreamSpec]:
    """The streams a codec extraction writes with the store, from its ``codec`` attributes."""
    specs = [StreamSpec(CODES, CODES, OFFSETS, codec["frame_rate"], "uint16", (codec["n_q"],), (CODEBOOKS,),
                        "RVQ codes; level q's embedding of a frame is codebooks[q, code]")]
    if latent:
        specs.append(StreamSpec(LATENT, LATENT, OFFSETS, codec["frame_rate"], "float16", (codec["dim"],),
                                about="continuous encoder output before quantization"))
    if energy:
        specs.append(StreamSpec(ENERGY, ENERGY, OFFSETS, codec["frame_rate"], "float16", (1,),
                                about="log energy (dB) of each codec frame's 24 kHz audio: no codec"))
    return specs


def stream_specs(attrs: dict, present: set[str] | None = None) -> dict[str, StreamSpec]:
    """The streams a store's root attributes declare. Version 1 stores declare none: theirs are the
    codes and, when the array is there (``present``: names of the root arrays), the latent."""
    if "streams" in attrs:
        return {name: StreamSpec.from_attrs(spec) for name, spec in attrs["streams"].items()}
    codec = attrs.get("codec", {})
    if not codec:
        return {}
    latent = LATENT in present if present is not None else bool(attrs.get("config", {}).get("latent"))
    return {spec.name: spec for spec in codec_stream_specs(codec, latent, energy=False)}


def part_name(unit: int, group: str = "") -> str:
    return f"{group}/{PARTS}/u{unit:06d}" if group else f"{PARTS}/u{unit:06d}"


class StoreFiles:
    """Side files of a store (Parquet tables, weights, group attributes) through fsspec, beside the
    Zarr arrays."""

    def __init__(self, url: str):
        self.url = str(url)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)

    def path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}" if name else self.root.rstrip("/")

    def exists(self, name: str = "zarr.json") -> bool:
        return self.fs.exists(self.path(name))

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write ``name`` whole: a temporary file renamed into place, so a reader never sees half (and
        a failed write, e.g. a full disk, leaves the previous file as it was and no temporary one)."""
        tmp = self.path(name + ".tmp")
        try:
            with self.fs.open(tmp, "wb") as f:
                f.write(data)
            self.fs.mv(tmp, self.path(name))
        except BaseException:
            try:
                self.fs.rm_file(tmp)
            except (OSError, ValueError):
                pass
            raise

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

    def update_group_attrs(self, values: dict, name: str = "") -> None:
        """Update a group's attributes with ``values``, replacing its zarr.json whole (never torn)."""
        meta_name = f"{name}/zarr.json" if name else "zarr.json"
        meta = json.loads(self.read_bytes(meta_name))
        meta["attributes"] = {**meta.get("attributes", {}), **values}
        self.write_bytes(meta_name, json.dumps(meta, indent=2).encode())

    def list(self, name: str) -> list[str]:
        """Names of the entries directly under ``name`` (empty when it does not exist)."""
        if not self.exists(name):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.path(name), detail=False))

    def size(self, name: str) -> int:
        """Bytes on disk under ``name`` (a file or a folder). Files that a writer renames or removes
        while they are counted (a store being extracted) are counted as they are found, or not."""
        path = self.path(name)
        for _ in range(3):
            try:
                if not self.fs.exists(path):
                    return 0
                return int(self.fs.du(path)) if self.fs.isdir(path) else int(self.fs.size(path))
            except FileNotFoundError:
                continue  # something under it vanished while it was walked: count again
        return 0

    def remove(self, name: str) -> None:
        if self.fs.exists(self.path(name)):
            self.fs.rm(self.path(name), recursive=True)
