"""Batches from a feature store (or from files' features in RAM), in-process: random fixed-length
crops for training, whole utterances (or evenly spread windows of long ones) for scoring.

The frames come through the readers of `classify.frames` (one per stream: the codes, the latent or
energy, the SSL layers cached or computed online, arrays in RAM); :class:`FrameSource` cuts the
streams a model reads in units that span the same audio in each. The codes sit in RAM as one uint16
array [F, Q] (F = frames of the whole store); a batch is one numpy fancy-indexing of a frame-index
matrix [B, T], so loading costs microseconds per batch and needs no worker processes. The latent
[F, D] (float16) is gathered the same way when it is in RAM, or read per crop from the store when it
is too large (`TrainConfig.latent_ram_mb`); the SSL stream likewise (``ssl_kwargs.ram_mb``).

The SSL variants read the SSL stream (50 Hz) beside the codec stream (75 Hz), in pairs of SSL frames:
a pair (40 ms) spans exactly 3 codec frames (`classify.align`). Utterance r's SSL stream holds U_r
frames starting at its SSL frame s_r (``streams/NAME/starts``: 0, or the start of the ``--ssl-crop``
crop, always even); its pairs are k = 0 .. U_r // 2 - 1 (an odd last frame is left out), and pair k
covers SSL stream frames 2k, 2k + 1 and the utterance's codec frames 3 (s_r / 2 + k) + {0, 1, 2}. A
training crop of T seconds is round(25 T) consecutive pairs drawn inside the SSL stream's frames, so
with ``--ssl-crop`` the codec crop always lies inside the SSL crop. Batch: ``codes`` [B, 3P, Q]
(empty [B, 0] for `ssl` alone), ``latent`` [B, 3P, D] (`ssl+latent`), ``ssl`` float16 [B, 2P, L, H],
``lengths`` [B] valid SSL frames.

Randomness (crop offsets, epoch order) comes only from the ``torch.Generator`` passed in, so a
run is reproducible from its seed and resumable from the generator's saved state.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from classify.align import CODEC_PER_PAIR, SSL_PER_PAIR
from classify.config import BALANCE_MODES, PAD_POLICIES
from classify.frames import DataError, FrameReader, length_batches, valid_mask
from store.reader import FeatureStore, StoreReadError

LABELS = {"bonafide": True, "spoof": False}


@dataclass(frozen=True)
class SplitData:
    """The ok utterances of one split, in the store's table order; arrays are [N].

    ``starts``/``lengths``: each utterance's first codec frame in the store and its codec frame count;
    ``attacks``: the `system` column (``bonafide`` on bona fide rows); ``n_failed``: utterances of
    the split whose extraction failed (they have no frames and are not included); ``rows``: their
    rows in the store's utterance table (the readers' utterance numbers).
    """

    name: str
    utt_ids: list[str]
    starts: np.ndarray
    lengths: np.ndarray
    is_bonafide: np.ndarray
    attacks: list[str]
    codecs: list[str]
    n_failed: int
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.utt_ids)

    def subset(self, pick: np.ndarray, n_failed: int) -> SplitData:
        """The utterances at positions ``pick``, with ``n_failed`` failed ones."""
        return SplitData(self.name, [self.utt_ids[i] for i in pick], self.starts[pick], self.lengths[pick],
                         self.is_bonafide[pick], [self.attacks[i] for i in pick], [self.codecs[i] for i in pick],
                         n_failed, self.rows[pick])


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
        rows=rows.astype(np.int64),
    )


@dataclass
class Batch:
    """codes int64 [B, T, Q]; lengths int64 [B] (valid frames per row, the rest is padding);
    latent float16 [B, T, D] or None; ssl float16 [B, T', L, H] or None (the SSL variants, whose
    lengths count SSL frames: see the module docstring)."""

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


@dataclass(frozen=True)
class Track:
    """One stream of a batch: the Batch field it fills (``codes``, ``latent`` or ``ssl``), its reader,
    and its frames per unit (see :class:`FrameSource`)."""

    slot: str
    reader: FrameReader
    per_unit: int


class FrameSource:
    """Batches of the streams a model reads, cut in units that span the same audio in each.

    The first track leads: utterance r has ``units[r]`` = its lead frames // the lead's frames per
    unit (0 when its lead stream holds none, ``starts`` -1), and unit k takes frames ``first[r] +
    per_unit * k + (0 .. per_unit - 1)`` of every track (clipped to the utterance's last frame), where
    ``first`` is 0 for the lead and, for the others, where the lead's stream begins (its ``starts``,
    e.g. a cropped SSL stream) in their frames. The codec variants: the codes lead, one codec frame per
    unit (and the latent or energy beside them). The SSL variants (:meth:`of` with ``ssl``): the SSL
    layers lead, a unit is a pair of SSL frames and its 3 codec frames (`classify.align`). Batch
    ``lengths`` count lead frames; ``codec_per_unit`` converts crops, windows and budgets given in
    codec frames into units.
    """

    def __init__(self, tracks: Sequence[Track], codec_per_unit: int) -> None:
        self.tracks = {t.slot: t for t in tracks}
        self.lead = tracks[0]
        self.codec_per_unit = codec_per_unit
        starts = self.lead.reader.starts
        self.units = np.where(starts >= 0, self.lead.reader.counts // self.lead.per_unit, 0)
        unit_start = np.maximum(starts, 0) // self.lead.per_unit
        self.first = {t.slot: np.zeros_like(unit_start) if t is self.lead else unit_start * t.per_unit for t in tracks}
        self.last = {t.slot: t.reader.counts - 1 for t in tracks}

    @classmethod
    def of(cls, codes: FrameReader | None = None, latent: FrameReader | None = None,
           ssl: FrameReader | None = None) -> FrameSource:
        """The source of a model's readers: the codes (and the latent or energy: ``latent``) at the
        codec's rate, or with ``ssl`` the SSL layers in pairs of frames, with the codec's beside them."""
        if ssl is None:
            return cls([Track("codes", codes, 1)] + ([Track("latent", latent, 1)] if latent is not None else []), 1)
        codec = [Track(slot, reader, CODEC_PER_PAIR) for slot, reader in (("codes", codes), ("latent", latent))
                 if reader is not None]
        return cls([Track("ssl", ssl, SSL_PER_PAIR), *codec], CODEC_PER_PAIR)

    def reader(self, slot: str) -> FrameReader:
        return self.tracks[slot].reader

    # -- splits -----------------------------------------------------------------------------------

    def split(self, store: FeatureStore, name: str, both_classes: bool = True) -> SplitData:
        """The ok utterances of split ``name`` (`load_split`) that have at least one unit here."""
        return self.keep(load_split(store, name, both_classes), store.url, both_classes)

    def keep(self, split: SplitData, where: str, both_classes: bool = True) -> SplitData:
        """``split`` without its utterances that have no unit here (counted as failed); DataError
        when none is left or (``both_classes``) one class only."""
        keep = self.units[split.rows] > 0
        if keep.all():
            return split
        stream = self.lead.reader.name
        if not keep.any():
            raise DataError(f"{where}: split {split.name!r} has no utterance with frames in stream {stream!r}")
        split = split.subset(np.flatnonzero(keep), split.n_failed + int((~keep).sum()))
        if both_classes and (split.is_bonafide.all() or not split.is_bonafide.any()):
            raise DataError(f"{where}: split {split.name!r} has utterances of one class only with frames in "
                            f"stream {stream!r}")
        return split

    def stream_moments(self, split: SplitData) -> tuple[np.ndarray, float]:
        """(mean [S], standard deviation over frames and dims) of the stream beside the codes
        (``latent``: the latent or energy) over ``split``'s frames (float64), to standardise it
        (`HierarchyWeighting.fit_stream`)."""
        reader = self.reader("latent")
        total, square, count = 0.0, 0.0, 0
        for row in split.rows:
            x = reader.read(np.array([row]), np.arange(reader.counts[row])[None])[0].astype(np.float64)
            total, square, count = total + x.sum(0), square + np.square(x).sum(0), count + len(x)
        if count == 0:
            raise DataError(f"split {split.name!r} has no frames to standardise the {reader.name!r} stream with")
        mean = np.asarray(total / count)
        return mean, float(np.sqrt(np.maximum(np.mean(square / count - np.square(mean)), 0.0)))

    # -- batches ----------------------------------------------------------------------------------

    def gather(self, rows: np.ndarray, unit: np.ndarray, valid: np.ndarray, n_units: np.ndarray) -> Batch:
        """Units ``unit`` [B, P] (counted from each utterance's first) of utterances ``rows`` [B];
        where ``valid`` [B, P] is False the frames become 0 (padding, masked by the batch's lengths,
        ``n_units`` [B] units each)."""
        frames = {}
        for slot, track in self.tracks.items():
            k = track.per_unit
            relative = (self.first[slot][rows][:, None, None] + k * unit[:, :, None] + np.arange(k)).reshape(len(rows), -1)
            x = track.reader.read(rows, np.minimum(relative, self.last[slot][rows][:, None]))
            x = x.astype(np.int64) if slot == "codes" else x
            x[~np.repeat(valid, k, axis=1)] = 0
            frames[slot] = torch.from_numpy(np.ascontiguousarray(x))
        codes = frames.get("codes", torch.zeros((len(rows), 0), dtype=torch.int64))
        lengths = torch.from_numpy(self.lead.per_unit * n_units.astype(np.int64))
        return Batch(codes, lengths, frames.get("latent"), frames.get("ssl"))

    def train_batches(self, split: SplitData, batch_size: int, crop: int, pad: str, balance: str,
                      generator: torch.Generator) -> Iterator[tuple[Batch, np.ndarray]]:
        """One epoch of random crops of ``crop`` codec frames (whole units): (batch, bona fide
        targets bool [B]). The epoch order and every crop position are drawn from ``generator``
        before the first batch."""
        crop_units = max(1, round(crop / self.codec_per_unit))
        order = epoch_order(split.is_bonafide, balance, generator)
        positions = torch.rand(order.size, generator=generator, dtype=torch.float64).numpy()
        units = self.units[split.rows]
        for first in range(0, order.size, batch_size):
            chosen = order[first : first + batch_size]
            unit, valid, n_units = crop_index(np.zeros(chosen.size, dtype=np.int64), units[chosen], crop_units, pad,
                                              positions[first : first + batch_size])
            yield self.gather(split.rows[chosen], unit, valid, n_units), split.is_bonafide[chosen]

    def eval_batches(self, split: SplitData, window: int, frame_budget: int) -> Iterator[tuple[Batch, np.ndarray]]:
        """Every utterance of ``split`` as segments of at most ``window`` codec frames (see
        :func:`eval_segments`), longest first, in zero-padded batches of at most ``frame_budget``
        codec frames (B * T_max; at least one segment). Yields (batch, utterance index of each row [B])."""
        window_units = max(1, window // self.codec_per_unit)
        budget = max(window_units, frame_budget // self.codec_per_unit)
        utt, start, length = eval_segments(self.units[split.rows], window_units)
        for chosen in length_batches(length, budget):
            t_max = int(length[chosen[0]])
            valid = valid_mask(length[chosen], t_max)
            unit = start[chosen][:, None] + np.where(valid, np.arange(t_max)[None, :], 0)
            yield self.gather(split.rows[utt[chosen]], unit, valid, length[chosen]), utt[chosen]


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
