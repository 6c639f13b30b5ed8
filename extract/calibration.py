"""The untrained codec's calibration: which audio it is fitted on, and its codebook k-means.

The sample (:func:`draw_sample`). LSUV (`extract.lsuv`) and the codebook k-means see a seeded
sample of the corpus, never the protocol's first files (on ASVspoof 2019 LA those are one class of
one speaker). The sample is drawn from the training split only, so the codec never sees dev or
eval audio. Within it, each label has a queue that goes round-robin over that label's
(speaker, system) strata, in a seeded order of strata and of the utterances in each; the sample
takes one utterance of each label in turn (bona fide, spoof, bona fide, ...) and stops after a
whole pair once it holds the audio asked for, or when a label has no utterance left. Both labels
therefore have the same number of utterances, and as many speakers and systems as the split has
are in it. A corpus with no training split (an eval-only corpus) is sampled the same way from the
splits it has; the record and the weights' origin say so (:data:`NO_TRAIN_SPLIT`). A file the
extraction would refuse (unreadable, longer than ``max_seconds``) is passed over for the next one
of its label; at most the first ``window_seconds`` of a file are used.

The k-means (:func:`kmeans`, :func:`init_codebooks`). EnCodec's codebook initialisation (Lloyd
iterations from a random sample of the frames), level by level on the residual, plus re-seeding of
dead codewords: a codeword that attracts fewer than ``dead_below`` frames is moved onto a random
frame of the batch (EnCodec's training replaces rarely used codewords so, see its
``expire_codes_``), here drawn among the frames that no codeword reproduces exactly, so that the
new codeword attracts at least that frame. Without it, deep levels keep codewords that no frame
uses, most of them equal to the zero vector: once a frame is alone in its cluster its residual is
exactly zero, and the random initial sample then holds many copies of that zero frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from encodec.quantization.core_vq import sample_vectors

from .audio import CODEC_SAMPLE_RATE, AudioError, load_audio, probe

TRAIN = "train"
LABELS = ("bonafide", "spoof")
NO_TRAIN_SPLIT = "no training split"
"""Phrase of a calibration record's note and of the weights' origin when the sample could not come
from a training split (`extract.codec.WeightsInfo.label` repeats it)."""
DEAD_BELOW = 1
"""A codeword attracting fewer frames than this is re-seeded (1: only codewords that attract none)."""
FINAL_RESEEDS = 8
"""Re-seeding rounds after the last Lloyd iteration (each: re-seed the dead, assign again)."""


@dataclass
class CalibrationSample:
    """The drawn clips ([1, T] at 24 kHz, in draw order) and what they are."""

    clips: list[torch.Tensor]
    utterances: list[str]
    record: dict = field(default_factory=dict)

    @property
    def note(self) -> str:
        return self.record.get("note", "")


def _label_queue(rows: pd.DataFrame, rng: np.random.Generator) -> list[int]:
    """Row positions of one label, round-robin over its (speaker, system) strata, seeded."""
    strata = [rng.permutation(group.to_numpy()) for _, group in rows.groupby(["speaker", "system"], sort=True)["_pos"]]
    strata = [strata[i] for i in rng.permutation(len(strata))]
    longest = max((len(s) for s in strata), default=0)
    return [int(s[k]) for k in range(longest) for s in strata if k < len(s)]


def draw_order(plan: pd.DataFrame, seed: int) -> tuple[list[int], list[str], str]:
    """The sample's candidate rows of ``plan`` in draw order (labels alternating, bona fide first,
    as long as both have rows), the splits they come from, and a note ("" when from the training
    split). Only the training split is used when the plan has one."""
    table = plan.reset_index(drop=True).assign(_pos=np.arange(len(plan)))
    splits = sorted(table["split"].astype(str).unique().tolist())
    note = ""
    if TRAIN in splits:
        table, splits = table[table["split"] == TRAIN], [TRAIN]
    else:
        note = f"{NO_TRAIN_SPLIT}: calibration sample drawn from {', '.join(splits) or 'nothing'}"
    rng = np.random.default_rng(seed)
    queues = [_label_queue(table[table["label"] == label], rng) for label in LABELS]
    queues = [q for q in queues if q]
    if len(queues) == 1:
        note = "; ".join(filter(None, [note, f"one label only ({table['label'].iloc[0]})"]))
    length = min((len(q) for q in queues), default=0)
    return [q[k] for k in range(length) for q in queues], splits, note


def draw_sample(plan: pd.DataFrame, seed: int, seconds: float, max_seconds: float, window_seconds: float,
                load: Callable[[str], torch.Tensor] = load_audio) -> CalibrationSample:
    """Load the calibration sample: whole rounds (one utterance per label) along :func:`draw_order`
    until it holds ``seconds`` of audio (at most ``window_seconds`` per file), or a label runs out."""
    order, splits, note = draw_order(plan, seed)
    labels = plan["label"].to_numpy()
    n_labels = len({labels[i] for i in order}) or 1
    queues: dict[str, list[int]] = {}
    for i in order:
        queues.setdefault(str(labels[i]), []).append(i)
    clips, rows, total = [], [], 0
    needed = int(seconds * CODEC_SAMPLE_RATE)
    window = int(window_seconds * CODEC_SAMPLE_RATE)
    while total < needed:
        pair = []
        for queue in queues.values():
            while queue:
                i = queue.pop(0)
                clip = _readable(plan["path"].iat[i], max_seconds, load)
                if clip is not None:
                    pair.append((i, clip[:, :window]))
                    break
        if len(pair) < n_labels:
            break  # a label has no readable utterance left: stop with the labels equal
        for i, clip in pair:
            rows.append(i)
            clips.append(clip)
            total += clip.shape[-1]
    ids = [str(plan["utt_id"].iat[i]) for i in rows]
    picked = plan.iloc[rows]
    record = {
        "seed": int(seed),
        "utterances": ids,
        "seconds": round(total / CODEC_SAMPLE_RATE, 3),
        "splits": splits,
        "labels": {str(k): int(v) for k, v in picked["label"].value_counts().sort_index().items()},
        "speakers": {str(k): int(v) for k, v in picked["speaker"].value_counts().sort_index().items()},
        "systems": {str(k): int(v) for k, v in picked["system"].value_counts().sort_index().items()},
    }
    if note:
        record["note"] = note
    return CalibrationSample(clips, ids, record)


def describe(record: dict) -> str:
    """One line for the weights' origin: what the sample holds (and its note)."""
    labels = ", ".join(f"{n} {label}" for label, n in record.get("labels", {}).items())
    text = (f"calibration sample of {len(record.get('utterances', []))} utterances of {', '.join(record.get('splits', []))} "
            f"(seed {record.get('seed')}; {labels}; {len(record.get('speakers', {}))} speakers, "
            f"{len(record.get('systems', {}))} systems)")
    return f"{text}; {record['note']}" if record.get("note") else text


def _readable(path: str, max_seconds: float, load: Callable[[str], torch.Tensor]) -> torch.Tensor | None:
    try:
        if probe(path).duration > max_seconds:
            return None
        return load(path)
    except AudioError:
        return None


def _assign(samples: torch.Tensor, sq: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Index of each sample's nearest mean (squared distances as |x|^2 - 2 x.c + |c|^2)."""
    return (-(sq - 2 * samples @ means.t() + means.pow(2).sum(1)[None])).max(dim=-1).indices


def _reseed(samples: torch.Tensor, means: torch.Tensor, buckets: torch.Tensor, bins: torch.Tensor,
            dead_below: int) -> bool:
    """Move the dead codewords (``bins < dead_below``) onto random frames that their codeword does not
    reproduce exactly; returns whether any was moved."""
    dead = torch.nonzero(bins < dead_below).flatten()
    if dead.numel() == 0:
        return False
    candidates = torch.nonzero((samples - means[buckets]).pow(2).sum(1) > 0).flatten()
    if candidates.numel() == 0:
        return False
    pick = candidates[torch.randperm(candidates.numel())[: dead.numel()]]
    means[dead[: pick.numel()]] = samples[pick]
    return True


def kmeans(samples: torch.Tensor, num_clusters: int, num_iters: int = 50,
           dead_below: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """EnCodec's codebook k-means (``encodec.quantization.core_vq.kmeans``), computed with matmuls,
    with dead codewords re-seeded when ``dead_below`` > 0.

    ``dead_below=0``: EnCodec's algorithm exactly (centroids start as its ``sample_vectors`` of the
    data, then Lloyd iterations; an empty cluster keeps its centroid). Its version materialises
    [n, clusters, dim] differences, which takes minutes on a CPU. With ``dead_below`` > 0, before
    each update the codewords that attract fewer frames are re-seeded (see the module's text), and
    after the last update up to :data:`FINAL_RESEEDS` more rounds re-seed and re-assign. Returns
    (means [c, dim], bins [c]): the frames each codeword attracted at the last assignment.
    """
    means = sample_vectors(samples, num_clusters)
    sq = samples.pow(2).sum(1, keepdim=True)
    bins = torch.zeros(num_clusters, dtype=torch.long)
    for _ in range(num_iters):
        buckets = _assign(samples, sq, means)
        bins = torch.bincount(buckets, minlength=num_clusters)
        if dead_below > 0 and _reseed(samples, means, buckets, bins, dead_below):
            buckets = _assign(samples, sq, means)
            bins = torch.bincount(buckets, minlength=num_clusters)
        zero_mask = bins == 0
        sums = torch.zeros_like(means).index_add_(0, buckets, samples)
        new_means = sums / bins.masked_fill(zero_mask, 1)[:, None]
        means = torch.where(zero_mask[:, None], means, new_means)
    if dead_below > 0:
        for _ in range(FINAL_RESEEDS + 1):
            buckets = _assign(samples, sq, means)
            bins = torch.bincount(buckets, minlength=num_clusters)
            if not _reseed(samples, means, buckets, bins, dead_below):
                break
    return means, bins


def encoder_frames(model, audio: Sequence[torch.Tensor], max_frames: int) -> torch.Tensor:
    """Encoder frames [n, dim] of every clip, then ``max_frames`` of them evenly spaced over all (so
    that every clip of the sample contributes, the last as much as the first)."""
    frames = [model.encoder(wav[None])[0].t() for wav in audio]
    if not frames:
        return torch.zeros(0, 0)
    every = torch.cat(frames)
    if every.shape[0] <= max_frames:
        return every
    return every[torch.arange(max_frames) * every.shape[0] // max_frames]


@torch.no_grad()
def init_codebooks(model, audio: Sequence[torch.Tensor], n_q: int, max_frames: int, iters: int = 50,
                   dead_below: int = DEAD_BELOW) -> int:
    """Initialise the first ``n_q`` codebooks of an EnCodec model by k-means on its encoder's frames
    of ``audio`` (at most ``max_frames``, see :func:`encoder_frames`), level by level on the
    residual, as EnCodec's first training step does, re-seeding dead codewords (:func:`kmeans`).
    Each codebook's ``cluster_size`` holds the frames its codewords attracted. Returns the number
    of frames used (0: no audio, codebooks untouched)."""
    residual = encoder_frames(model, audio, max_frames)
    if residual.shape[0] == 0:
        return 0
    for layer in model.quantizer.vq.layers[:n_q]:
        book = layer._codebook
        means, bins = kmeans(residual, book.codebook_size, iters, dead_below)
        book.embed.copy_(means)
        book.embed_avg.copy_(means)
        book.cluster_size.copy_(bins.float())
        book.inited.fill_(1.0)
        residual = residual - book.dequantize(book.quantize(residual))
    return residual.shape[0]


def usage(model, n_q: int) -> list[dict]:
    """Per level of an initialised model: codewords that attracted a calibration frame, and
    codewords equal to the zero vector."""
    out = []
    for layer in model.quantizer.vq.layers[:n_q]:
        book = layer._codebook
        out.append({"used": int((book.cluster_size > 0).sum()), "zero": int((book.embed == 0).all(dim=1).sum())})
    return out
