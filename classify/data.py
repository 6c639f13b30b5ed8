"""Batches from a feature store, in-process: random fixed-length crops for training, whole
utterances (or evenly spread windows of long ones) for scoring.

All codes sit in RAM as one uint16 array [F, Q] (F = frames of the whole store); a batch is one
numpy fancy-indexing of a frame-index matrix [B, T], so loading costs microseconds per batch and
needs no worker processes. The latent [F, D] (float16) is gathered the same way when it is in RAM,
or read per crop from the store when it is too large (`TrainConfig.latent_ram_mb`).

Randomness (crop offsets, epoch order) comes only from the ``torch.Generator`` passed in, so a
run is reproducible from its seed and resumable from the generator's saved state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from classify.config import BALANCE_MODES, PAD_POLICIES
from store.reader import FeatureStore, StoreReadError

LABELS = {"bonafide": True, "spoof": False}


class DataError(ValueError):
    """A split or the store's arrays cannot be used for training or scoring."""


@dataclass(frozen=True)
class SplitData:
    """The ok utterances of one split, in the store's table order; arrays are [N].

    ``starts``/``lengths``: each utterance's first frame in the store and its frame count;
    ``attacks``: the `system` column (``bonafide`` on bona fide rows); ``n_failed``: utterances of
    the split whose extraction failed (they have no frames and are not included).
    """

    name: str
    utt_ids: list[str]
    starts: np.ndarray
    lengths: np.ndarray
    is_bonafide: np.ndarray
    attacks: list[str]
    codecs: list[str]
    n_failed: int

    def __len__(self) -> int:
        return len(self.utt_ids)


def load_split(store: FeatureStore, name: str, both_classes: bool = True) -> SplitData:
    """The ok utterances of split ``name``; DataError naming the store and the split when it is
    missing, empty, has an unknown label, or (with ``both_classes``) lacks a class."""
    try:
        table = store.split(name)
    except StoreReadError as err:
        raise DataError(str(err)) from None
    everything = store.utterances
    n_failed = int(((everything["split"] == name) & (everything["status"] != "ok")).sum())
    if table.empty:
        raise DataError(f"{store.url}: split {name!r} has no usable utterances ({n_failed} failed extraction)")
    unknown = sorted(set(table["label"]) - set(LABELS))
    if unknown == ["-"]:  # a trial list extracted without its keys (ASVspoof 2021 before the keys' release)
        keys = store.attrs.get("dataset", {}).get("keys", "the dataset's keys file")
        raise DataError(f"{store.url}: split {name!r} was extracted without keys: evaluation needs {keys}; put the "
                        "keys package there and extract again into a new --out")
    if unknown:
        raise DataError(f"{store.url}: split {name!r} has unknown label(s) {', '.join(map(repr, unknown))}; "
                        f"expected {', '.join(LABELS)}")
    is_bonafide = table["label"].map(LABELS).to_numpy(dtype=bool)
    if both_classes and (is_bonafide.all() or not is_bonafide.any()):
        only = "bona fide" if is_bonafide.all() else "spoof"
        raise DataError(f"{store.url}: split {name!r} has {only} utterances only ({len(table)}); "
                        "training and the EER need both bona fide and spoof utterances")
    rows = table.index.to_numpy()
    offsets = store.offsets
    return SplitData(
        name=name,
        utt_ids=table["utt_id"].astype(str).tolist(),
        starts=offsets[rows].astype(np.int64),
        lengths=(offsets[rows + 1] - offsets[rows]).astype(np.int64),
        is_bonafide=is_bonafide,
        attacks=table["system"].astype(str).tolist(),
        codecs=table["codec"].astype(str).tolist() if "codec" in table else ["-"] * len(table),
        n_failed=n_failed,
    )


@dataclass
class Batch:
    """codes int64 [B, T, Q]; lengths int64 [B] (valid frames per row, the rest is padding);
    latent float16 [B, T, D] or None; ssl float16 [B, T', L, H] or None (the SSL variants:
    `classify.ssldata`, whose lengths count SSL frames)."""

    codes: Tensor
    lengths: Tensor
    latent: Tensor | None = None
    ssl: Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        latent = None if self.latent is None else self.latent.to(device, non_blocking=True)
        ssl = None if self.ssl is None else self.ssl.to(device, non_blocking=True)
        return Batch(self.codes.to(device, non_blocking=True), self.lengths, latent, ssl)

    def inputs(self) -> tuple:
        """The model's arguments: (codes, lengths, latent), and ssl when there is one."""
        return (self.codes, self.lengths, self.latent) + ((self.ssl,) if self.ssl is not None else ())


class FrameSource:
    """A store's codes in RAM (and the continuous stream a variant reads, in RAM or read lazily)
    gathered by frame index.

    ``stream``: the frame stream to gather beside the codes (None, or `latent` / `energy`: the
    variants of `classify.variants` that read one; it must share the codes' frames), carried in
    ``Batch.latent``; ``ram_bytes``: read it into RAM when it is no larger, else per crop from the
    store. Codes are checked once: every code must be below the codebook size.
    """

    def __init__(self, store: FeatureStore, stream: str | None = None, ram_bytes: float = 0) -> None:
        info = store.codec
        expected = (info.n_q, info.codebook_size, info.dim)
        if tuple(store.codebooks.shape) != expected:
            raise DataError(f"{store.url}: codebooks have shape {tuple(store.codebooks.shape)}, but the "
                            f"codec attributes say {expected}")
        self.codes = np.asarray(store.codes)
        if self.codes.ndim != 2 or self.codes.shape[1] != info.n_q:
            raise DataError(f"{store.url}: codes have shape {self.codes.shape}, expected [frames, {info.n_q}]")
        top = int(self.codes.max()) if self.codes.size else 0
        if top >= info.codebook_size:
            raise DataError(f"{store.url}: a code equals {top}, but codes must be below the codebook size "
                            f"{info.codebook_size}; the store is damaged or its codebooks do not match its codes")
        self.stream = stream
        self.latent: np.ndarray | None = None
        self._lazy_latent = None
        if stream is not None:
            hint = (f"the {stream!r} variant needs it: re-extract with --{stream} (an existing store gets the "
                    "stream added, untouched otherwise)")
            try:
                array = store.aligned(stream, hint).data
            except StoreReadError as err:
                raise DataError(str(err)) from None
            if array.nbytes <= ram_bytes:
                self.latent = np.asarray(array[...])
            else:
                self._lazy_latent = array

    def stream_moments(self, split: SplitData) -> tuple[np.ndarray, float]:
        """(mean [S], standard deviation over frames and dims) of the stream over ``split``'s frames
        (float64), to standardise it (`HierarchyWeighting.fit_stream`)."""
        total, square, count = 0.0, 0.0, 0
        for start, length in zip(split.starts, split.lengths):
            rows = np.arange(start, start + length)
            x = (self.latent[rows] if self.latent is not None else self._read_latent(rows)).astype(np.float64)
            total, square, count = total + x.sum(0), square + np.square(x).sum(0), count + len(x)
        if count == 0:
            raise DataError(f"split {split.name!r} has no frames to standardise the {self.stream!r} stream with")
        mean = np.asarray(total / count)
        return mean, float(np.sqrt(np.maximum(np.mean(square / count - np.square(mean)), 0.0)))

    def split(self, store: FeatureStore, name: str, both_classes: bool = True) -> SplitData:
        """The split's data for this source (`load_split`; the SSL variants' source has its own)."""
        return load_split(store, name, both_classes)

    @property
    def with_latent(self) -> bool:
        return self.latent is not None or self._lazy_latent is not None

    def gather(self, index: np.ndarray, valid: np.ndarray, lengths: np.ndarray) -> Batch:
        """Frames at ``index`` int64 [B, T] (store frame numbers); frames where ``valid`` [B, T]
        is False become code 0 and latent 0 (padding, masked by ``lengths`` [B])."""
        codes = self.codes[index].astype(np.int64)  # [B, T, Q]
        codes[~valid] = 0
        latent = None
        if self.latent is not None:
            latent = self.latent[index]
        elif self._lazy_latent is not None:
            latent = np.stack([self._read_latent(row) for row in index])
        if latent is not None:
            latent[~valid] = 0
            latent = torch.from_numpy(latent)
        return Batch(torch.from_numpy(codes), torch.from_numpy(lengths.astype(np.int64)), latent)

    def _read_latent(self, row: np.ndarray) -> np.ndarray:
        """Latent [T, D] at the frame numbers ``row`` [T] of one utterance: one contiguous read."""
        first, last = int(row.min()), int(row.max())
        return np.asarray(self._lazy_latent[first : last + 1])[row - first]


def crop_index(starts: np.ndarray, lengths: np.ndarray, crop: int, pad: str,
               position: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame indices of one fixed-length crop per utterance.

    Args:
        starts, lengths: [B] first frame and frame count of each utterance.
        crop: frames per crop (T).
        pad: for utterances shorter than ``crop``: ``repeat`` tiles the utterance from its start
            (all T frames valid); ``zero`` takes it once and marks the rest as padding.
        position: [B] floats in [0, 1): where the crop starts within a longer utterance
            (offset = floor(position * (length - crop + 1))).

    Returns:
        ``(index [B, T], valid [B, T], crop_lengths [B])``.
    """
    if pad not in PAD_POLICIES:
        raise ValueError(f"unknown pad {pad!r}; valid choices: {', '.join(PAD_POLICIES)}")
    steps = np.arange(crop)[None, :]
    length = lengths[:, None]
    offset = np.floor(position * np.maximum(lengths - crop + 1, 1)).astype(np.int64)[:, None]
    short = length < crop
    if pad == "repeat":
        relative = np.where(short, steps % length, offset + steps)
        valid = np.ones(relative.shape, dtype=bool)
        crop_lengths = np.full(lengths.shape, crop, dtype=np.int64)
    else:
        relative = np.where(short, np.minimum(steps, length - 1), offset + steps)
        valid = ~short | (steps < length)
        crop_lengths = np.minimum(lengths, crop)
    return starts[:, None] + relative, valid, crop_lengths


def class_weights(is_bonafide: np.ndarray) -> tuple[float, float]:
    """(bona fide, spoof) loss weights N / (2 N_class): each class carries half the loss."""
    n = is_bonafide.size
    n_bona = int(is_bonafide.sum())
    return n / (2 * n_bona), n / (2 * (n - n_bona))


def epoch_order(is_bonafide: np.ndarray, balance: str, generator: torch.Generator) -> np.ndarray:
    """Utterance indices [N] for one epoch: a permutation, or (``sampler``) N draws with
    replacement in which bona fide and spoof are equally likely."""
    if balance not in BALANCE_MODES:
        raise ValueError(f"unknown balance {balance!r}; valid choices: {', '.join(BALANCE_MODES)}")
    n = is_bonafide.size
    if balance == "sampler":
        w_bona, w_spoof = class_weights(is_bonafide)
        weights = torch.from_numpy(np.where(is_bonafide, w_bona, w_spoof))
        return torch.multinomial(weights, n, replacement=True, generator=generator).numpy()
    return torch.randperm(n, generator=generator).numpy()


def train_batches(source: FrameSource, split: SplitData, batch_size: int, crop: int, pad: str,
                  balance: str, generator: torch.Generator) -> Iterator[tuple[Batch, np.ndarray]]:
    """One epoch of random crops: (batch with T = ``crop``, bona fide targets bool [B]).

    The epoch order and every crop position are drawn from ``generator`` before the first batch.
    A source with batches of its own (the SSL variants', `classify.ssldata`) makes them.
    """
    if not isinstance(source, FrameSource):
        yield from source.train_batches(split, batch_size, crop, pad, balance, generator)
        return
    order = epoch_order(split.is_bonafide, balance, generator)
    positions = torch.rand(order.size, generator=generator, dtype=torch.float64).numpy()
    for first in range(0, order.size, batch_size):
        chosen = order[first : first + batch_size]
        index, valid, lengths = crop_index(split.starts[chosen], split.lengths[chosen], crop, pad,
                                           positions[first : first + batch_size])
        yield source.gather(index, valid, lengths), split.is_bonafide[chosen]


def n_train_batches(split: SplitData, batch_size: int) -> int:
    return -(-len(split) // batch_size)


def eval_segments(lengths: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scoring segments: an utterance of L <= ``window`` frames is one segment; a longer one is
    ceil(L / window) windows of ``window`` frames whose starts are spread evenly from 0 to L - window.

    Returns ``(utterance [S], start [S] relative to the utterance, length [S])``.
    """
    counts = np.where(lengths > window, -(-lengths // window), 1)
    utt = np.repeat(np.arange(lengths.size), counts)
    within = np.arange(utt.size) - np.repeat(np.cumsum(counts) - counts, counts)  # 0..count-1
    span = np.maximum(lengths[utt] - window, 0)
    start = np.rint(span * within / np.maximum(counts[utt] - 1, 1)).astype(np.int64)
    return utt, start, np.minimum(lengths[utt], window)


def eval_batches(source: FrameSource, split: SplitData, window: int,
                 frame_budget: int) -> Iterator[tuple[Batch, np.ndarray]]:
    """Every utterance of ``split`` as segments (see :func:`eval_segments`), longest first, in
    zero-padded batches of at most ``frame_budget`` frames (B * T_max; at least one segment).
    Yields (batch, utterance index of each row [B]). A source with batches of its own makes them."""
    if not isinstance(source, FrameSource):
        yield from source.eval_batches(split, window, frame_budget)
        return
    utt, start, length = eval_segments(split.lengths, window)
    order = np.argsort(-length, kind="stable")
    first = 0
    while first < order.size:
        t_max = int(length[order[first]])
        chosen = order[first : first + max(1, frame_budget // t_max)]
        steps = np.arange(t_max)[None, :]
        valid = steps < length[chosen][:, None]
        index = split.starts[utt[chosen]][:, None] + start[chosen][:, None] + np.where(valid, steps, 0)
        yield source.gather(index, valid, length[chosen]), utt[chosen]
        first += chosen.size
