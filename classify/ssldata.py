"""Batches for the SSL variants: the same audio span from the SSL stream (50 Hz) and the codec stream
(75 Hz), cut in pairs of SSL frames.

A pair of SSL frames (40 ms) spans exactly 3 codec frames (`classify.align`). Utterance r's SSL
stream holds U_r frames starting at its SSL frame s_r (``streams/NAME/starts``: 0, or the start of the
``--ssl-crop`` crop, always even); its pairs are k = 0 .. U_r // 2 - 1 (an odd last frame is left
out), and pair k covers SSL stream frames 2k, 2k + 1 and the utterance's codec frames
3 (s_r / 2 + k) + {0, 1, 2}. A training crop of T seconds is round(25 T) consecutive pairs drawn
inside the SSL stream's frames, so with ``--ssl-crop`` the codec crop always lies inside the SSL crop;
shorter utterances are tiled pair by pair (``pad = "repeat"``) or zero-padded and masked. Scoring
takes whole utterances (windows of ``max_eval_seconds`` for longer ones) the same way.

Batch: ``codes`` [B, 3P, Q] (empty [B, 0] for `ssl` alone), ``latent`` [B, 3P, D] (`ssl+latent`),
``ssl`` float16 [B, 2P, L, H], ``lengths`` [B] valid SSL frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from classify.align import CODEC_PER_PAIR, SSL_PER_PAIR
from classify.data import (
    Batch,
    DataError,
    FrameSource,
    SplitData,
    crop_index,
    epoch_order,
    eval_segments,
    load_split,
)
from store.reader import FeatureStore


@dataclass(frozen=True)
class SSLSplit(SplitData):
    """A split's utterances that have SSL pairs; arrays [N] beside SplitData's: ``rows`` (store
    rows), ``ssl_first`` (first frame in the SSL stream's data), ``pairs``, ``codec_base`` (store codec
    frame of pair 0's first codec frame), ``codec_last`` (the utterance's last codec frame)."""

    rows: np.ndarray = None
    ssl_first: np.ndarray = None
    pairs: np.ndarray = None
    codec_base: np.ndarray = None
    codec_last: np.ndarray = None


class SSLFrames:
    """The SSL stream's frames, in RAM or read per utterance from the store: ``frames(rows, first,
    relative)`` -> float16 [B, T, L, H] (the chosen layers)."""

    def __init__(self, store: FeatureStore, stream: str, layer_index: np.ndarray, ram_bytes: float) -> None:
        data = store.stream(stream).data
        self.layer_index = layer_index
        whole = layer_index.size == data.shape[1]
        self.ram = None
        self.lazy = data
        if data.nbytes * layer_index.size / data.shape[1] <= ram_bytes:
            self.ram = np.asarray(data[...] if whole else data[:, layer_index])

    def frames(self, rows: np.ndarray, first: np.ndarray, relative: np.ndarray) -> np.ndarray:
        index = first[:, None] + relative
        if self.ram is not None:
            return self.ram[index]
        out = []
        for row in index:  # one contiguous read per utterance
            lo, hi = int(row.min()), int(row.max())
            out.append(np.asarray(self.lazy[lo : hi + 1])[row - lo][:, self.layer_index])
        return np.stack(out)


class SSLSource:
    """What the SSL variants read: the SSL frames (cached, or computed online: ``frames``), and the
    codec's codes (and latent) through a FrameSource (None for `ssl` alone)."""

    def __init__(self, store: FeatureStore, stream: str, frames, codec: FrameSource | None,
                 ssl_offsets: np.ndarray, ssl_starts: np.ndarray) -> None:
        self.store, self.stream = store, stream
        self.ssl_frames = frames
        self.codec = codec
        self.ssl_offsets = ssl_offsets
        self.ssl_starts = ssl_starts

    # -- splits -----------------------------------------------------------------------------------

    def split(self, store: FeatureStore, name: str, both_classes: bool = True) -> SSLSplit:
        """The ok utterances of split ``name`` that have at least one SSL pair."""
        base = load_split(store, name, both_classes=False)
        rows = store.split(name).index.to_numpy()
        counts = self.ssl_offsets[rows + 1] - self.ssl_offsets[rows]
        pairs = counts // SSL_PER_PAIR
        keep = (pairs > 0) & (self.ssl_starts[rows] >= 0)
        if not keep.any():
            raise DataError(f"{store.url}: split {name!r} has no utterance with SSL frames in stream {self.stream!r}")
        pick = np.flatnonzero(keep)
        offsets = store.offsets
        split = SSLSplit(
            name=name,
            utt_ids=[base.utt_ids[i] for i in pick],
            starts=base.starts[pick],
            lengths=base.lengths[pick],
            is_bonafide=base.is_bonafide[pick],
            attacks=[base.attacks[i] for i in pick],
            codecs=[base.codecs[i] for i in pick],
            n_failed=base.n_failed + int((~keep).sum()),
            rows=rows[pick],
            ssl_first=self.ssl_offsets[rows[pick]],
            pairs=pairs[pick],
            codec_base=offsets[rows[pick]] + CODEC_PER_PAIR * (self.ssl_starts[rows[pick]] // SSL_PER_PAIR),
            codec_last=offsets[rows[pick] + 1] - 1,
        )
        if both_classes and (split.is_bonafide.all() or not split.is_bonafide.any()):
            raise DataError(f"{store.url}: split {name!r} has utterances of one class only with SSL frames")
        return split

    # -- batches ----------------------------------------------------------------------------------

    def gather(self, split: SSLSplit, chosen: np.ndarray, pair: np.ndarray, valid: np.ndarray,
               n_pairs: np.ndarray) -> Batch:
        """Pairs ``pair`` [B, P] (relative to each chosen utterance; ``valid`` [B, P]) -> a Batch."""
        within = np.arange(SSL_PER_PAIR)[None, None, :]
        ssl_rel = (SSL_PER_PAIR * pair[:, :, None] + within).reshape(len(chosen), -1)
        ssl_valid = np.repeat(valid, SSL_PER_PAIR, axis=1)
        lengths = SSL_PER_PAIR * n_pairs.astype(np.int64)
        features = self.ssl_frames.frames(split.rows[chosen], split.ssl_first[chosen], ssl_rel)
        features[~ssl_valid] = 0
        if self.codec is None:
            batch = Batch(torch.zeros((len(chosen), 0), dtype=torch.int64), torch.from_numpy(lengths))
        else:
            steps = np.arange(CODEC_PER_PAIR)[None, None, :]
            codec = split.codec_base[chosen][:, None, None] + CODEC_PER_PAIR * pair[:, :, None] + steps
            codec = np.minimum(codec.reshape(len(chosen), -1), split.codec_last[chosen][:, None])
            batch = self.codec.gather(codec, np.repeat(valid, CODEC_PER_PAIR, axis=1), lengths)
        return dataclasses.replace(batch, ssl=torch.from_numpy(np.ascontiguousarray(features)))

    def train_batches(self, split: SSLSplit, batch_size: int, crop: int, pad: str, balance: str,
                      generator: torch.Generator) -> Iterator[tuple[Batch, np.ndarray]]:
        """One epoch of random crops of ``crop`` codec frames (rounded to whole pairs), drawn as
        `classify.data.train_batches` draws them."""
        n_pairs = max(1, round(crop / CODEC_PER_PAIR))
        order = epoch_order(split.is_bonafide, balance, generator)
        positions = torch.rand(order.size, generator=generator, dtype=torch.float64).numpy()
        for first in range(0, order.size, batch_size):
            chosen = order[first : first + batch_size]
            pair, valid, lengths = crop_index(np.zeros(chosen.size, dtype=np.int64), split.pairs[chosen], n_pairs,
                                              pad, positions[first : first + batch_size])
            yield self.gather(split, chosen, pair, valid, lengths), split.is_bonafide[chosen]

    def eval_batches(self, split: SSLSplit, window: int, frame_budget: int) -> Iterator[tuple[Batch, np.ndarray]]:
        """Whole utterances (windows of ``window`` codec frames for longer ones), longest first, in
        batches of at most ``frame_budget`` codec frames, as `classify.data.eval_batches`."""
        window_pairs = max(1, window // CODEC_PER_PAIR)
        budget = max(window_pairs, frame_budget // CODEC_PER_PAIR)
        utt, start, length = eval_segments(split.pairs, window_pairs)
        order = np.argsort(-length, kind="stable")
        first = 0
        while first < order.size:
            t_max = int(length[order[first]])
            chosen = order[first : first + max(1, budget // t_max)]
            steps = np.arange(t_max)[None, :]
            valid = steps < length[chosen][:, None]
            pair = start[chosen][:, None] + np.where(valid, steps, 0)
            yield self.gather(split, utt[chosen], pair, valid, length[chosen]), utt[chosen]
            first += chosen.size
