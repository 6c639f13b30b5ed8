"""How an SSL stream's frames are stored: float16, int8 with scales, or a PCA basis fitted on train.

An SSL stream holds [frames, L, H] layer outputs (`extract.ssl_stream`). Stored as float16 it takes
L x H x 2 bytes a frame (12 x 1,024 x 2 = 24 KiB, 1.2 MB per audio second at 50 Hz). Its storage is
chosen per store at extraction (``pipeline extract --ssl-storage``), recorded in the stream's
``source["storage"]`` (:meth:`SSLStorage.to_attrs`), and undone by the frame reader
(`classify.frames.StoredReader`), so that training reads [.., L, H] frames whatever the storage:

* ``float16`` (a stream that records no storage is float16): [F, L, H] float16.
* ``int8`` (the default of a new stream, `extract.ssl_stream.DEFAULT_STORAGE`): each frame's layer l is scaled by its own s = max|x| / 127 (a per-frame-per-layer
  scale) and rounded: [F, L, H + 2] int8, the last two bytes of each layer's row the scale's float16
  bits. Error per value at most s / 2; 2x smaller than float16.
* ``pca:K``: per layer, the mean and the K leading principal directions of the train split's
  frames (fitted at extraction on a sample of train utterances, stored in the stream's group as
  ``pca_mean`` [L, H] and ``pca_basis`` [L, H, K] float32); a frame is stored as its K coefficients
  in float16: [F, L, K]. H / K times smaller (4x at K = 256 for WavLM-Large).
* ``pca:K:int8``: the same coefficients as int8 with a per-frame-per-layer scale: [F, L, K + 2]
  int8, about 2 H / (K + 2) times smaller (7.9x at K = 256).

A model trained on a stream carries what it needs to see new audio's frames as the reader gave them
(:meth:`SSLStorage.round_trip`): the storage in its SSL record, and a ``pca:K`` stream's mean and basis
of the layers it reads in its parameters (`classify.fusion.FusedDetector.ssl_as_trained`).

Numpy only: the store package has no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PCA_MEAN = "pca_mean"
PCA_BASIS = "pca_basis"
STARTS = "starts"
"""The table of an SSL stream's group: int64 [n_utts], the first frame of each utterance the stream
holds, on the utterance's own frame grid (0 unless cropped; -1 without frames: `extract.ssl_stream`)."""
SCALE_BYTES = 2
"""Bytes of the float16 scale after each int8 layer row."""


class StorageError(ValueError):
    """A storage option that cannot be used."""


@dataclass(frozen=True)
class SSLStorage:
    """One storage option (see the module docstring): ``components`` K of a PCA (0: none) and
    ``int8`` (values as int8 with a per-frame-per-layer scale; else float16)."""

    components: int = 0
    int8: bool = False

    @classmethod
    def parse(cls, text: str | None) -> SSLStorage:
        """``float16`` | ``int8`` | ``pca:K`` | ``pca:K:int8`` (None: float16)."""
        value = (text or "float16").strip().lower()
        if value == "float16":
            return cls()
        if value == "int8":
            return cls(0, True)
        parts = value.split(":")
        if parts[0] == "pca" and len(parts) in (2, 3) and parts[1].isdigit() and int(parts[1]) > 0 \
                and (len(parts) == 2 or parts[2] in ("int8", "float16")):
            return cls(int(parts[1]), len(parts) == 3 and parts[2] == "int8")
        raise StorageError(f"SSL storage {text!r} is not one of float16, int8, pca:K, pca:K:int8 (K a positive integer)")

    @property
    def name(self) -> str:
        if not self.components:
            return "int8" if self.int8 else "float16"
        return f"pca:{self.components}" + (":int8" if self.int8 else "")

    @property
    def plain(self) -> bool:
        """Frames stored as they are (float16): nothing to undo."""
        return not self.components and not self.int8

    @property
    def dtype(self) -> str:
        return "int8" if self.int8 else "float16"

    def frame_shape(self, layers: int, hidden: int) -> tuple[int, int]:
        """The stored shape of one frame of ``layers`` x ``hidden``."""
        width = self.components or hidden
        return layers, width + (SCALE_BYTES if self.int8 else 0)

    def bytes_per_frame(self, layers: int, hidden: int) -> int:
        rows, width = self.frame_shape(layers, hidden)
        return rows * width * np.dtype(self.dtype).itemsize

    def check(self, hidden: int) -> None:
        if self.components > hidden:
            raise StorageError(f"SSL storage {self.name}: K = {self.components} is more than the model's {hidden} dimensions")

    def to_attrs(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "components": self.components, "int8": self.int8,
                "pca_arrays": [PCA_MEAN, PCA_BASIS] if self.components else []}

    @classmethod
    def from_source(cls, source: dict | None) -> SSLStorage:
        """The storage an SSL stream's ``source`` records (none recorded: float16, as every stream
        made before the option)."""
        storage = (source or {}).get("storage")
        return cls() if storage is None else cls(int(storage.get("components", 0)), bool(storage.get("int8", False)))

    # -- encoding and decoding ------------------------------------------------------------------

    def encode(self, frames: np.ndarray, mean: np.ndarray | None = None, basis: np.ndarray | None = None) -> np.ndarray:
        """float [F, L, H] -> the stored frames [F, L, C] (``mean`` [L, H], ``basis`` [L, H, K] for a PCA)."""
        x = np.asarray(frames, dtype=np.float32)
        if self.components:
            x = np.einsum("flh,lhk->flk", x - mean[None], basis, optimize=True)
        return quantize(x) if self.int8 else x.astype(np.float16)

    def decode(self, stored: np.ndarray, mean: np.ndarray | None = None, basis: np.ndarray | None = None) -> np.ndarray:
        """Stored frames [..., L, C] -> float32 [..., L, H] (``mean`` and ``basis`` of the same layers)."""
        x = dequantize(stored) if self.int8 else np.asarray(stored, dtype=np.float32)
        if self.components:
            x = np.einsum("...lk,lhk->...lh", x, basis, optimize=True) + mean
        return x

    def round_trip(self, frames: np.ndarray, mean: np.ndarray | None = None, basis: np.ndarray | None = None) -> np.ndarray:
        """Frames [..., L, H] computed afresh -> float16 [..., L, H] as the frame reader returns them
        from a stream of this storage (encoded as extraction writes them, decoded as the reader reads
        them: `classify.frames.StoredReader`); ``mean`` and ``basis`` of the same L layers."""
        if self.components and (mean is None or basis is None):
            raise StorageError(f"SSL storage {self.name}: the PCA's mean and basis are needed to code frames")
        return self.decode(self.encode(frames, mean, basis), mean, basis).astype(np.float16)


def stream_group(spec) -> str:
    """The group holding a stream's frames and its tables (``streams/ssl``, ``views/V/streams/ssl``)
    from its `store.format.StreamSpec`."""
    return spec.array.rsplit("/", 1)[0]


def read_starts(root, spec, n_utts: int) -> np.ndarray:
    """int64 [n_utts]: the stream's :data:`STARTS` table (``root``: the store's Zarr group; ``spec``:
    the stream's `store.format.StreamSpec`); zeros for a stream without one (no crop, not SSL)."""
    path = f"{stream_group(spec)}/{STARTS}"
    return np.asarray(root[path][...], np.int64) if path in spec.tables else np.zeros(n_utts, np.int64)


def read_pca(root, spec) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean [L, H], basis [L, H, K]) float32 of a ``pca:K`` stream (from its group; ``root`` and
    ``spec`` as in :func:`read_starts`); None for a stream of another storage."""
    if not SSLStorage.from_source(spec.source).components:
        return None
    group = stream_group(spec)
    return tuple(np.asarray(root[f"{group}/{name}"][...], np.float32) for name in (PCA_MEAN, PCA_BASIS))


def quantize(x: np.ndarray) -> np.ndarray:
    """float32 [..., W] -> int8 [..., W + 2]: round(x / s) with s = max|x| / 127 over the last axis
    (rounded up to float16, so |x / s| <= 127), s's float16 bits in the last two bytes."""
    top = np.abs(x).max(axis=-1, keepdims=True)
    scale = (top / 127.0).astype(np.float16)
    low = scale.astype(np.float32) * 127.0 < top  # float16 rounded the scale down: take the next one
    scale = np.where(low, np.nextafter(scale, np.float16(np.inf)), scale)
    safe = np.where(scale > 0, scale.astype(np.float32), 1.0)
    q = np.clip(np.rint(x / safe), -127, 127).astype(np.int8)
    return np.concatenate([q, scale.view(np.int8).reshape(*scale.shape[:-1], SCALE_BYTES)], axis=-1)


def dequantize(stored: np.ndarray) -> np.ndarray:
    """int8 [..., W + 2] -> float32 [..., W] (see :func:`quantize`)."""
    scale = np.ascontiguousarray(stored[..., -SCALE_BYTES:]).view(np.float16).astype(np.float32)
    return stored[..., :-SCALE_BYTES].astype(np.float32) * scale


class Moments:
    """Per-layer sums of frames [F, L, H] (float64), for a PCA fitted without holding the frames."""

    def __init__(self) -> None:
        self.count = 0
        self.sum: np.ndarray | None = None
        self.outer: np.ndarray | None = None

    def add(self, frames: np.ndarray) -> None:
        x = np.asarray(frames, dtype=np.float64)
        if self.sum is None:
            self.sum = np.zeros(x.shape[1:])
            self.outer = np.zeros((x.shape[1], x.shape[2], x.shape[2]))
        self.count += x.shape[0]
        self.sum += x.sum(axis=0)
        self.outer += np.einsum("flh,flg->lhg", x, x, optimize=True)

    def pca(self, components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean [L, H], basis [L, H, K]: the K leading eigenvectors of each layer's covariance,
        orthonormal columns, largest first; the share of the variance they keep [L])."""
        if self.count < 2:
            raise StorageError(f"a PCA needs at least 2 frames; the train sample has {self.count}")
        mean = self.sum / self.count
        layers, hidden = mean.shape
        basis = np.empty((layers, hidden, components), np.float32)
        kept = np.empty(layers)
        for layer in range(layers):
            covariance = self.outer[layer] / self.count - np.outer(mean[layer], mean[layer])
            values, vectors = np.linalg.eigh(covariance)
            order = np.argsort(values)[::-1][:components]
            basis[layer] = vectors[:, order]
            kept[layer] = values[order].sum() / max(values.clip(0).sum(), 1e-30)
        return mean.astype(np.float32), basis, kept


def fit_pca(frames: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`Moments.pca` of frames [F, L, H] held in memory."""
    moments = Moments()
    moments.add(frames)
    return moments.pca(components)
