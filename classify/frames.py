"""Frame readers: one small interface for every frame stream, a reader per backend registered by name
(in the spirit of lhotse's ``features/io.py``), and the one length-budget batcher.

A :class:`FrameReader` holds one stream of a set of utterances (a store's rows, or files being
scored): ``offsets`` int64 [N + 1] (utterance r = the stream's frames offsets[r]:offsets[r + 1]),
``starts`` int64 [N] (the frame of the utterance's audio where its stream begins: 0, the start of
an ``--ssl-crop`` crop, or -1 when the utterance has no frames in it) and ``read(rows, relative)``:
the frames [B, T, *frame_shape] at positions ``relative`` [B, T] (counted from each utterance's first
frame in the stream) of utterances ``rows`` [B], as a new array the caller may write to.

Backends (:data:`READERS`): ``codes`` (a store's codes, in RAM, checked against the codebooks),
``store`` (any other stream of a store: the latent, the energy, the SSL layers; in RAM when it fits,
else one contiguous read per utterance), ``memory`` (arrays already in RAM: the Detector's features
of files being scored) and ``ssl-online`` (the SSL layers computed from the audio, `classify.online`).
A new backend (the augmented views of a store, another store) is one class and one
``@register_reader(NAME)``; `classify.data.FrameSource` pairs the streams of a batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

import numpy as np

from common.malloc import keep_large_blocks
from store.reader import FeatureStore, StoreReadError
from store.sslstorage import SSLStorage, read_pca, read_starts


class DataError(ValueError):
    """A split or the store's arrays cannot be used for training or scoring."""


class FrameReader(ABC):
    """One frame stream of N utterances (see the module docstring). Subclasses set ``offsets``,
    ``starts`` and ``name`` in their ``__init__`` and implement :meth:`read`."""

    kind: ClassVar[str] = ""
    name: str = "frames"
    """The stream's name, for messages."""
    offsets: np.ndarray
    starts: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        """int64 [N]: frames of each utterance in the stream."""
        return np.diff(self.offsets)

    @abstractmethod
    def read(self, rows: np.ndarray, relative: np.ndarray) -> np.ndarray:
        """Frames [B, T, *frame_shape] at ``relative`` [B, T] of utterances ``rows`` [B]."""


READERS: dict[str, type[FrameReader]] = {}
"""Reader classes by backend name (:func:`register_reader`)."""


def register_reader(kind: str) -> Callable[[type[FrameReader]], type[FrameReader]]:
    """Class decorator: register a FrameReader under ``kind`` (each name once)."""

    def add(cls: type[FrameReader]) -> type[FrameReader]:
        if kind in READERS and READERS[kind] is not cls:
            raise ValueError(f"frame reader {kind!r} is registered twice ({READERS[kind].__name__}, {cls.__name__})")
        cls.kind = kind
        READERS[kind] = cls
        return cls

    return add


def open_reader(kind: str, *args, **kwargs) -> FrameReader:
    """A reader of the backend ``kind``; ValueError naming the known ones for another name (a backend
    registers when its module is imported: `classify.sources` imports them all)."""
    cls = READERS.get(kind)
    if cls is None:
        raise ValueError(f"unknown frame reader {kind!r}; known: {', '.join(sorted(READERS))}")
    return cls(*args, **kwargs)


def _select(array: np.ndarray, columns: np.ndarray | None) -> np.ndarray:
    return array if columns is None else array[:, columns]


@register_reader("codes")
class CodesReader(FrameReader):
    """A store's codes [F, Q] (uint16), in RAM; refused (DataError) when the codebooks do not match
    the codec attributes or a code is not below the codebook size."""

    def __init__(self, store: FeatureStore) -> None:
        info = store.codec
        expected = (info.n_q, info.codebook_size, info.dim)
        if tuple(store.codebooks.shape) != expected:
            raise DataError(f"{store.url}: codebooks have shape {tuple(store.codebooks.shape)}, but the "
                            f"codec attributes say {expected}")
        self.data = np.asarray(store.codes)
        if self.data.ndim != 2 or self.data.shape[1] != info.n_q:
            raise DataError(f"{store.url}: codes have shape {self.data.shape}, expected [frames, {info.n_q}]")
        top = int(self.data.max()) if self.data.size else 0
        if top >= info.codebook_size:
            raise DataError(f"{store.url}: a code equals {top}, but codes must be below the codebook size "
                            f"{info.codebook_size}; the store is damaged or its codebooks do not match its codes")
        self.offsets = store.offsets
        self.starts = np.zeros(len(self.offsets) - 1, np.int64)
        self.name = "codes"

    def read(self, rows: np.ndarray, relative: np.ndarray) -> np.ndarray:
        return self.data[self.offsets[rows][:, None] + relative]


@register_reader("store")
class StoredReader(FrameReader):
    """A store's stream ``name`` (``columns``: the entries of its second axis to keep, e.g. the SSL
    layers a model merges), in RAM when the kept part is no larger than ``ram_bytes``, else read per
    utterance. ``aligned``: the stream must have the codes' frames (`FeatureStore.aligned`);
    ``hint``: what to do when the store lacks it. Its ``starts`` come from the stream's ``starts``
    table when it has one (a cropped SSL stream), else 0. An SSL stream stored otherwise than as
    float16 (``--ssl-storage``, `store.sslstorage`) is held and read in its stored form and returned
    decoded, float16 [.., L, H] as a float16 stream's. ``as_trained``: a function of decoded frames
    [F, L, H] applied to every read (a model evaluated on a store whose SSL stream is stored otherwise
    than its training stream: `classify.sources.stored_as_trained`)."""

    def __init__(self, store: FeatureStore, name: str, ram_bytes: float = 0, columns: np.ndarray | None = None,
                 aligned: bool = False, hint: str = "",
                 as_trained: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        try:
            stream = store.aligned(name, hint) if aligned else store.stream(name)
        except StoreReadError as err:
            raise DataError(str(err)) from None
        self.offsets = stream.offsets
        self.starts = read_starts(store.root, stream.spec, len(self.offsets) - 1)
        self.columns = columns
        self.coding = SSLStorage.from_source(stream.spec.source)
        pca = read_pca(store.root, stream.spec)
        self.pca = None if pca is None else tuple(_select(a[None], columns)[0] for a in pca)
        self.as_trained = as_trained
        self.lazy = stream.data
        self.ram = None
        self.name = name
        share = 1.0 if columns is None else columns.size / stream.data.shape[1]
        if stream.data.nbytes * share <= ram_bytes:
            whole = columns is None or columns.size == stream.data.shape[1]
            self.ram = np.asarray(stream.data[...]) if whole else np.asarray(stream.data[:, columns])
        else:  # every batch is decompressed into large fresh blocks: keep them in the heap (common.malloc)
            keep_large_blocks()

    def read(self, rows: np.ndarray, relative: np.ndarray) -> np.ndarray:
        frames = self.decode(self.stored(rows, relative))
        if self.as_trained is None:
            return frames
        flat = frames.reshape(-1, *frames.shape[-2:])  # [B x T, L, H]: as_trained codes frame by frame
        return np.asarray(self.as_trained(flat), np.float16).reshape(frames.shape)

    def stored(self, rows: np.ndarray, relative: np.ndarray) -> np.ndarray:
        """The frames as stored."""
        index = self.offsets[rows][:, None] + relative
        if self.ram is not None:
            return self.ram[index]
        width = self.lazy.shape[1] if self.columns is None else self.columns.size
        out = np.empty((*index.shape, width, *self.lazy.shape[2:]), self.lazy.dtype)
        for b, row in enumerate(index):  # one contiguous read per utterance, into the batch
            lo, hi = int(row.min()), int(row.max())
            out[b] = _select(np.asarray(self.lazy[lo : hi + 1])[row - lo], self.columns)
        return out

    def decode(self, stored: np.ndarray) -> np.ndarray:
        """Stored frames -> the frames (unchanged for a float16 stream)."""
        if self.coding.plain:
            return stored
        return self.coding.decode(stored, *(self.pca or (None, None))).astype(np.float16)


@register_reader("memory")
class ArrayReader(FrameReader):
    """Frames already in RAM: one array [frames, ...] per utterance (``columns`` as in StoredReader)."""

    def __init__(self, arrays: Sequence[np.ndarray], columns: np.ndarray | None = None, name: str = "frames") -> None:
        self.data = _select(np.concatenate(arrays), columns)
        self.offsets = np.concatenate(([0], np.cumsum([len(a) for a in arrays]))).astype(np.int64)
        self.starts = np.zeros(len(arrays), np.int64)
        self.name = name

    def read(self, rows: np.ndarray, relative: np.ndarray) -> np.ndarray:
        return self.data[self.offsets[rows][:, None] + relative]


# -- the one batcher -------------------------------------------------------------------------------


def length_batches(lengths: Sequence[int] | np.ndarray, budget: int) -> Iterator[np.ndarray]:
    """Positions into ``lengths``, longest first (ties in order), in groups whose padded size
    (count x the group's longest) is at most ``budget`` (one item when even that is larger):
    the batching of scoring, of explanations and of online SSL features."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    first = 0
    while first < order.size:
        longest = max(1, int(lengths[order[first]]))
        chosen = order[first : first + max(1, budget // longest)]
        yield chosen
        first += chosen.size


def valid_mask(lengths: np.ndarray, frames: int) -> np.ndarray:
    """lengths [B] -> bool [B, frames], True on each row's first ``lengths`` frames."""
    return np.arange(frames)[None, :] < np.asarray(lengths)[:, None]
