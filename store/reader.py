"""The feature store reader: a finished store's streams, codebooks and utterance table.

Layout and names are in :mod:`store.format`. A store holds named frame streams
(:class:`~store.format.StreamSpec`); :meth:`FeatureStore.stream` returns one by name and says which
streams the store has when it lacks the one asked for. The codec's streams have shortcuts:
``codes`` (small, 1.2 KB per audio second at 8 levels: read into RAM by default; ``in_memory=False``
reads them chunk-wise from the Zarr array instead), ``latent`` (read lazily) and ``offsets``.

``FeatureStore(url, check=True)`` first runs the store's quick check (`store.verify.quick_check`)
and refuses a damaged store (:class:`StoreDamaged`, naming the damage, the utterances affected and
the repair); a chunk that fails to decode later, as it is read, raises the same error.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import zarr

from . import format as sf
from .format import StoreFiles, StreamSpec


class StoreReadError(ValueError):
    """The store is missing, unfinished, of another format, or lacks what was asked for."""


class StoreDamaged(StoreReadError):
    """The store is damaged: the message names the damage, the utterances affected and the repair."""


class GuardedArray:
    """A store array whose reads turn a damaged chunk into :class:`StoreDamaged` (naming the chunk,
    the utterances whose frames it holds, and the repair) instead of a codec's error. Everything
    else is the Zarr array's."""

    def __init__(self, array: zarr.Array, url: str):
        self._array = array
        self._url = url

    def __getitem__(self, selection):
        try:
            return self._array[selection]
        except Exception as err:  # the codecs raise many types for damaged bytes  # noqa: BLE001
            raise StoreDamaged(damage_message(self._url, self._array.path, err)) from None

    def __getattr__(self, name: str):
        return getattr(self._array, name)

    def __len__(self) -> int:
        return len(self._array)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype)


def damage_message(url: str, array: str, err: BaseException) -> str:
    """The message for a read of ``array`` that failed with ``err``: the store's damage as
    `pipeline verify` reports it (found by decoding that array's chunks), or ``err`` itself."""
    from .verify import verify_store  # verify imports nothing of the reader; imported late to keep it light  # noqa: PLC0415

    report = verify_store(url)
    ours = [a for a in report.affected if a.array == array]
    if report.ok or not report.problems:
        return f"{url}: reading {array} failed ({type(err).__name__}: {err}); run `pipeline verify {url}`"
    report.affected = ours or report.affected
    return f"reading {array} failed ({type(err).__name__}): " + report.summary()


@dataclass(frozen=True)
class CodecInfo:
    """What made the features: must match between a store and a checkpoint."""

    name: str
    sample_rate: int
    frame_rate: int
    n_q: int
    bandwidth: float
    codebook_size: int
    dim: int
    parameters: int
    weights_sha256: str
    weights_label: str
    trained: bool

    def compatible_with(self, other: CodecInfo) -> list[str]:
        """Names of the fields that differ in a way that makes features incomparable."""
        keys = ("name", "n_q", "bandwidth", "codebook_size", "dim", "weights_sha256")
        return [k for k in keys if getattr(self, k) != getattr(other, k)]


@dataclass(frozen=True)
class Stream:
    """One stream of a finished store: ``data`` [frames, *frame_shape] (the Zarr array, read lazily)
    and ``offsets`` int64 [n_utts + 1] (utterance i = frames offsets[i]:offsets[i+1])."""

    spec: StreamSpec
    data: GuardedArray
    offsets: np.ndarray

    def utterance(self, row: int) -> np.ndarray:
        """[frames, *frame_shape] of utterance ``row``."""
        return np.asarray(self.data[self.offsets[row] : self.offsets[row + 1]])


def check_format(url: str, attrs: dict) -> None:
    """StoreReadError unless ``attrs`` are a finished store of a version this tool reads."""
    if attrs.get("format") != sf.FORMAT:
        raise StoreReadError(f"{url}: not a feature store of this tool (format {attrs.get('format')!r})")
    if attrs.get("format_version", 0) > sf.FORMAT_VERSION:
        raise StoreReadError(f"{url}: store format version {attrs['format_version']} is newer than this tool's "
                             f"{sf.FORMAT_VERSION}; upgrade rvq-antispoof to read it")
    if attrs.get("state") != sf.STATE_COMPLETE:
        raise StoreReadError(f"{url}: extraction is not finished (state {attrs.get('state')!r}); run `pipeline "
                             "extract` again to resume it")


class FeatureStore:
    """A finished feature store, opened read-only. ``url``: a path or an fsspec URL. ``view_name``
    and ``recipe``: "" and None (the clean features; :meth:`view` opens an augmented view)."""

    view_name: str = ""
    recipe: dict | None = None

    def __init__(self, url: str, in_memory: bool = True, check: bool = False):
        self.url = str(url)
        self.files = StoreFiles(self.url)
        if not self.files.exists():
            raise StoreReadError(f"{self.url}: no feature store here (no zarr.json)")
        try:
            self.attrs = self.files.read_group_attrs()
        except ValueError as err:
            raise StoreReadError(f"{self.url}: zarr.json is not readable JSON ({err}); run `pipeline verify`") from None
        check_format(self.url, self.attrs)
        if check:
            from .verify import quick_check  # noqa: PLC0415

            report = quick_check(self.url)
            if not report.ok:
                raise StoreDamaged(report.summary())
        self.root = zarr.open_group(self.url, mode="r")
        self.in_memory = in_memory
        self._offsets_read: dict[str, np.ndarray] = {}

    # -- streams ------------------------------------------------------------------------------

    @cached_property
    def streams(self) -> dict[str, StreamSpec]:
        """Every finished stream: those written with the store, then those added later."""
        specs = sf.stream_specs(self.attrs, present={name for name in (sf.LATENT,) if name in self.root})
        for name in self.files.list(sf.STREAMS):
            group = sf.added_stream_group(name)
            if not self.files.exists(f"{group}/zarr.json"):
                continue
            attrs = self.files.read_group_attrs(group)
            if attrs.get("state") == sf.STATE_COMPLETE and "stream" in attrs:
                specs[name] = StreamSpec.from_attrs(attrs["stream"])
        return specs

    def view(self, name: str) -> FeatureStore:
        """This store seen through its augmented view ``name`` (`store.views.ViewStore`: the view's
        streams under the same utterance rows and ids); StoreReadError naming the views there are."""
        from .views import ViewStore  # noqa: PLC0415 - views builds on this module

        return ViewStore(self, name)

    @cached_property
    def views(self) -> dict[str, dict]:
        """The recipe of each augmented view the store has (finished or not), by name."""
        from .views import recipes  # noqa: PLC0415

        return recipes(self.files)

    def pending_streams(self) -> list[str]:
        """Streams whose addition started but did not finish."""
        pending = []
        for name in self.files.list(sf.STREAMS):
            group = sf.added_stream_group(name)
            if self.files.exists(f"{group}/zarr.json") and \
                    self.files.read_group_attrs(group).get("state") != sf.STATE_COMPLETE:
                pending.append(name)
        return pending

    def stream(self, name: str) -> Stream:
        """The finished stream ``name``; StoreReadError naming the streams there are otherwise."""
        spec = self.streams.get(name)
        if spec is None:
            have = ", ".join(s.describe() for s in self.streams.values()) or "none"
            pending = self.pending_streams()
            hint = (f"; stream(s) {', '.join(pending)} are still being added: run the same `pipeline extract` "
                    "again to finish them") if pending else ""
            raise StoreReadError(f"{self.url}: no stream {name!r}; this store has: {have}{hint}")
        return Stream(spec, GuardedArray(self.root[spec.array], self.url), self._offsets(spec.offsets))

    def _offsets(self, path: str) -> np.ndarray:
        if path not in self._offsets_read:
            self._offsets_read[path] = GuardedArray(self.root[path], self.url)[...]
        return self._offsets_read[path]

    # -- the codec streams ----------------------------------------------------------------------

    @cached_property
    def codec(self) -> CodecInfo:
        c, w = self.attrs["codec"], self.attrs["weights"]
        return CodecInfo(
            name=c["name"],
            sample_rate=c["sample_rate"],
            frame_rate=c["frame_rate"],
            n_q=c["n_q"],
            bandwidth=c["bandwidth"],
            codebook_size=c["codebook_size"],
            dim=c["dim"],
            parameters=c["parameters"],
            weights_sha256=w["sha256"],
            weights_label=w["label"],
            trained=w["trained"],
        )

    @property
    def score_format(self) -> str | None:
        """The official score format of the store's dataset (recorded at extraction), or None."""
        dataset = self.attrs.get("dataset", {})
        return dataset.get("score_format") or sf.LEGACY_SCORE_FORMATS.get(dataset.get("name"))

    @cached_property
    def utterances(self) -> pd.DataFrame:
        """Every utterance of the protocol; rows with status "failed" have no frames."""
        return self.files.read_table(sf.UTTERANCES)

    @property
    def metadata_columns(self) -> list[str]:
        """The dataset's metadata columns of the utterance table (condition, phase, vocoder, ...),
        as recorded at extraction; ``[]`` for datasets and stores without them."""
        names = self.attrs.get("dataset", {}).get("metadata") or []
        return [name for name in names if name in self.utterances.columns]

    @cached_property
    def failures(self) -> pd.DataFrame:
        return self.files.read_table(sf.FAILURES)

    @property
    def offsets(self) -> np.ndarray:
        """int64 [n_utts + 1]: frame offsets of the codes (and of every stream written with them)."""
        return self._offsets(self.streams[sf.CODES].offsets)

    @cached_property
    def codebooks(self) -> np.ndarray:
        """float32 [n_q, codebook_size, dim]"""
        return GuardedArray(self.root[sf.CODEBOOKS], self.url)[...]

    @cached_property
    def codes(self) -> np.ndarray | zarr.Array:
        """uint16 [total_frames, n_q]: in RAM, or the Zarr array itself when in_memory=False."""
        array = self.stream(sf.CODES).data
        return array[...] if self.in_memory else array

    @property
    def has_latent(self) -> bool:
        return sf.LATENT in self.streams

    @cached_property
    def latent(self) -> zarr.Array:
        """float16 [total_frames, dim], read lazily, frame-aligned with the codes."""
        return self.aligned(sf.LATENT, "the `latent` variant needs it: re-extract with --latent").data

    def aligned(self, name: str, hint: str = "") -> Stream:
        """Stream ``name``, checked to have the codes' frames (same offsets): per-frame features
        that can be gathered with the codes' frame indices."""
        try:
            stream = self.stream(name)
        except StoreReadError as err:
            raise StoreReadError(f"{err}; {hint}" if hint else str(err)) from None
        if stream.spec.offsets != self.streams[sf.CODES].offsets and not np.array_equal(stream.offsets, self.offsets):
            raise StoreReadError(f"{self.url}: stream {name!r} is not frame-aligned with the codes (other offsets)")
        return stream

    def split(self, name: str) -> pd.DataFrame:
        """The ok utterances of one split (the table's index is the utterance's row number)."""
        table = self.utterances
        known = sorted(table["split"].unique())
        if name not in known:
            raise StoreReadError(f"{self.url}: no split {name!r}; the store has {', '.join(known)}")
        return table[(table["split"] == name) & (table["status"] == "ok")]

    def utterance_codes(self, row: int) -> np.ndarray:
        """uint16 [frames, n_q] of utterance ``row``."""
        return np.asarray(self.codes[self.offsets[row] : self.offsets[row + 1]])

    def utterance_latent(self, row: int) -> np.ndarray:
        """float16 [frames, dim] of utterance ``row``."""
        return self.latent[self.offsets[row] : self.offsets[row + 1]]

    def embeddings(self, codes: np.ndarray) -> np.ndarray:
        """Dense per-level embeddings float32 [frames, n_q, dim] for codes [frames, n_q] (C_q[code_q])."""
        levels = np.arange(codes.shape[1])
        return self.codebooks[levels[None, :], codes.astype(np.int64)]
