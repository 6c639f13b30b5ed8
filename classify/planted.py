"""Planted-signal stores: synthetic RVQ codes whose label is carried by chosen levels (and dims) only.

They check that the hierarchy weights can find where the information is (bench/bench_planted.py,
tests/classify/test_planted.py). Nothing here is a codec: codebooks are random, and every output
says so.

The construction (``make_planted``). Codebooks: level q is i.i.d. N(0, 1) [K, D] times
``level_scale ** (q - 1)`` (RVQ levels shrink; `level_norm` removes the scale again). Codes of
levels without a plant are uniform over the K codes for both classes: they carry no label. A
*plant* at level k over dims S makes that level's code distribution depend on the class: each frame
of a bona fide utterance draws, with probability ``share``, a code from the lower half of the
codebook (else uniform over all K); a spoofed frame draws from the upper half with probability
``share``. When S is not every dim, the upper half's codewords are copies of the lower half's
outside S (code i + K/2 equals code i there), so the two halves, and hence the two classes' frame
distributions, differ in the dims of S only.

Sizing the effect, from first principles (fixed once, not tuned to any model). What a head can use
is, to first order, the shift of the time-mean of the level's embedding between the classes. On
the standardised codebook (what the model sees with ``level_norm``: mean codeword subtracted,
divided by the level's RMS), the class-conditional mean frames differ by share * Delta, with
Delta = mean(lower half) - mean(upper half) [D], zero outside S. The matched filter v = Delta on
the mean of T frames separates the classes with

    d' = share * sqrt(T) * |Delta|^2 / sqrt(Delta' Sigma Delta)

(Sigma [D, D]: covariance of the level's standardised codewords under uniform codes, the frame
noise), and an equal-error rate of Phi(-d'/2). ``share`` is solved from a target ``d_prime`` at a
reference length of ``ref_frames`` frames (75 = 1 s). The default target d' = 5 at 1 s means:

* the planted level alone, with an ideal linear read-out of its time mean, gives EER
  Phi(-2.5) = 0.6 % on a 1 s segment (less on the 1 to 2 s utterances);
* `mean` (alpha = 1/Q on every level) adds Q - 1 noise levels of the same variance to the same
  dims: d' / sqrt(Q) = 1.77 at Q = 8, EER 19 % at 1 s: the weighting has to find the level;
* scalar weights with level k r times any other level give d' r / sqrt(r^2 + Q - 1); an EER
  of 2 % (d' = 4.11) needs r >= 3.8 for this ideal linear read-out.

For a plant split over two levels a and b with disjoint dims S_a, S_b (d' per level d'/sqrt(2),
so that the ideal detector on both has the same d' = 5): per-dimension weights (QAF-Static) can
take level a in S_a and level b in S_b (d' = 5, EER 0.6 % at 1 s), while with one scalar per
level the other level's noise covers each level's dims: d'^2 = (alpha_a^2 d_a^2 + alpha_b^2 d_b^2)
/ (alpha_a^2 + alpha_b^2 + ...), at most 5 / sqrt(2) = 3.5 whatever the split (single:a alone gets
as much), EER 3.8 % at 1 s.

The generator returns plain arrays (``PlantedData``); :func:`write_planted_store` writes them
through the store's writer.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SPLITS = ("train", "dev", "eval")
_PREFIX = {"train": "T", "dev": "D", "eval": "E"}
FRAME_RATE = 75
COLUMNS = ("utt_id", "speaker", "system", "codec", "label", "split", "path", "duration", "status", "n_frames",
           "n_windows", "sample_rate", "channels")
#: The label every planted store carries as its codec weights.
WEIGHTS_NOTE = "SYNTHETIC planted-signal codebooks (random, not a codec)"


@dataclass(frozen=True)
class Plant:
    """Signal at ``level`` (1-based) in dims ``dims`` = (first, stop) (None: every dim), with
    ``d_prime`` the matched-filter separation of that level alone at the reference length."""

    level: int
    d_prime: float
    dims: tuple[int, int] | None = None


@dataclass(frozen=True)
class PlantedSpec:
    """A planted store: plants, codec shape, split sizes and utterance lengths (frames).

    ``speakers`` per split and ``attacks`` are cycled over the utterances (they carry no signal;
    the sweep report's bootstrap resamples them)."""

    plants: tuple[Plant, ...]
    n_q: int = 8
    codebook_size: int = 1024
    dim: int = 128
    level_scale: float = 0.5
    sizes: dict[str, int] = field(default_factory=lambda: {"train": 1199, "dev": 598, "eval": 996})
    frames: tuple[int, int] = (75, 150)
    ref_frames: int = 75
    bonafide_share: float = 0.5
    speakers: int = 8
    attacks: tuple[str, ...] = ("A01", "A02", "A03", "A04")
    seed: int = 0

    def __post_init__(self) -> None:
        if self.codebook_size % 2:
            raise ValueError("codebook_size must be even (the plant splits it into halves)")
        for plant in self.plants:
            if not 1 <= plant.level <= self.n_q:
                raise ValueError(f"plant level {plant.level} is outside 1..{self.n_q}")
            if plant.dims is not None and not 0 <= plant.dims[0] < plant.dims[1] <= self.dim:
                raise ValueError(f"plant dims {plant.dims} are not a range within 0..{self.dim}")
        if len({p.level for p in self.plants}) < len(self.plants):
            raise ValueError("at most one plant per level")


@dataclass
class PlantedData:
    """What a planted store holds, as arrays: ``codebooks`` float32 [Q, K, D]; ``codes`` uint16
    [F, Q] (all utterances concatenated); ``offsets`` int64 [N + 1]; ``table`` the utterance rows
    (store columns); ``shares`` {level: share of planted frames}; ``d_prime`` {level: realised
    matched-filter d' at ``ref_frames``}."""

    spec: PlantedSpec
    codebooks: np.ndarray
    codes: np.ndarray
    offsets: np.ndarray
    table: pd.DataFrame
    shares: dict[int, float]
    d_prime: dict[int, float]


def standardise(book: np.ndarray) -> np.ndarray:
    """One level's codebook [K, D] as `level_norm` standardises it: minus the mean codeword, over
    the RMS of the rest."""
    centred = book - book.mean(axis=0, keepdims=True)
    return centred / math.sqrt(float((centred**2).mean()))


def matched_filter_gain(book: np.ndarray, dims: tuple[int, int] | None) -> float:
    """|Delta|^2 / sqrt(Delta' Sigma Delta) of a planted level's codebook [K, D]: the d' per
    sqrt(frame) at share 1 (see the module docstring)."""
    z = standardise(book.astype(np.float64))
    half = z.shape[0] // 2
    delta = z[:half].mean(axis=0) - z[half:].mean(axis=0)
    if dims is not None:
        outside = np.ones(z.shape[1], dtype=bool)
        outside[dims[0] : dims[1]] = False
        delta[outside] = 0.0  # exact up to rounding: the halves are copies there
    sigma = np.cov(z, rowvar=False, bias=True)
    return float(delta @ delta / math.sqrt(delta @ sigma @ delta))


def _codebooks(spec: PlantedSpec, rng: np.random.Generator) -> np.ndarray:
    q, k, d = spec.n_q, spec.codebook_size, spec.dim
    books = rng.standard_normal((q, k, d))
    for plant in spec.plants:
        if plant.dims is not None:
            book = books[plant.level - 1]
            outside = np.ones(d, dtype=bool)
            outside[plant.dims[0] : plant.dims[1]] = False
            book[k // 2 :, outside] = book[: k // 2, outside]
    books *= (spec.level_scale ** np.arange(q))[:, None, None]
    return books.astype(np.float32)


def make_planted(spec: PlantedSpec) -> PlantedData:
    """Generate the arrays of a planted store (deterministic in ``spec.seed``); ValueError when a
    plant's d' cannot be reached with share <= 1 at this codebook shape."""
    rng = np.random.default_rng(spec.seed)
    codebooks = _codebooks(spec, rng)
    k, half = spec.codebook_size, spec.codebook_size // 2
    shares, realised = {}, {}
    for plant in spec.plants:
        gain = matched_filter_gain(codebooks[plant.level - 1], plant.dims)
        share = plant.d_prime / (gain * math.sqrt(spec.ref_frames))
        if share > 1:
            raise ValueError(f"level {plant.level}: d' {plant.d_prime} needs a planted share of {share:.2f} > 1 at "
                             f"K={k}, D={spec.dim}, {spec.ref_frames} frames; lower d' or use longer reference")
        shares[plant.level] = share
        realised[plant.level] = share * gain * math.sqrt(spec.ref_frames)

    rows, codes = [], []
    for split in SPLITS:
        n = spec.sizes.get(split, 0)
        n_bona = int(round(spec.bonafide_share * n))
        for i in range(n):
            bona = i < n_bona
            length = int(rng.integers(spec.frames[0], spec.frames[1] + 1))
            utt = rng.integers(0, k, size=(length, spec.n_q))
            for level, share in shares.items():
                planted = rng.random(length) < share
                low = 0 if bona else half
                utt[planted, level - 1] = rng.integers(low, low + half, size=int(planted.sum()))
            codes.append(utt.astype(np.uint16))
            rows.append({
                "utt_id": f"PL_{_PREFIX[split]}_{len(rows):07d}",
                "speaker": f"PL_{_PREFIX[split]}{i % spec.speakers:03d}",
                "system": "bonafide" if bona else spec.attacks[i % len(spec.attacks)],
                "codec": "-",
                "label": "bonafide" if bona else "spoof",
                "split": split,
                "path": f"/planted/{split}/{len(rows):07d}.flac",
                "duration": length / FRAME_RATE,
                "status": "ok",
                "n_frames": length,
                "n_windows": 1,
                "sample_rate": 16000,
                "channels": 1,
            })
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    offsets = np.concatenate([[0], np.cumsum(table["n_frames"].to_numpy())]).astype(np.int64)
    table["frame_offset"] = offsets[:-1]
    codes_array = np.concatenate(codes) if codes else np.zeros((0, spec.n_q), dtype=np.uint16)
    return PlantedData(spec, codebooks, codes_array, offsets, table, shares, realised)


def describe(data: PlantedData) -> str:
    """One line: the plants with their dims, d' and share, and the codec shape."""
    parts = []
    for plant in data.spec.plants:
        dims = "all dims" if plant.dims is None else f"dims {plant.dims[0]}-{plant.dims[1] - 1}"
        parts.append(f"level {plant.level} ({dims}, d' {data.d_prime[plant.level]:.2f} at "
                     f"{data.spec.ref_frames} frames, share {data.shares[plant.level]:.3f})")
    s = data.spec
    return f"planted: {'; '.join(parts)}; Q={s.n_q}, K={s.codebook_size}, D={s.dim}, seed {s.seed}"


def write_planted_store(path: str, data: PlantedData, unit_size: int = 256) -> str:
    """Write ``data`` as a finished store at ``path`` through the store's writer (`store.writer`:
    work units of ``unit_size`` utterances; stream ``codes`` only, no codec weights file) and return
    ``path``."""
    from store import format as sf  # noqa: PLC0415
    from store.writer import PartData, create_store, finish_store, write_part  # noqa: PLC0415

    sha = hashlib.sha256(data.codebooks.tobytes()).hexdigest()
    s = data.spec
    label = f"{WEIGHTS_NOTE}, sha256 {sha[:12]}"
    codec = {"name": "encodec_24khz", "sample_rate": 24000, "frame_rate": FRAME_RATE, "n_q": s.n_q,
             "bandwidth": 0.75 * s.n_q, "codebook_size": s.codebook_size, "dim": s.dim, "parameters": 14851810}
    attrs = {
        "codec": codec,
        "weights": {"source": "synthetic", "sha256": sha, "trained": False, "label": label},
        "dataset": {"name": "planted", "root": "/planted", "splits": list(SPLITS), "description": describe(data),
                    "score_format": "asvspoof2019"},
        "config": {"latent": False, "energy": False, "unit_size": unit_size},
    }
    table = data.table
    plan = table[list(COLUMNS[:8])].copy()  # the dataset columns (utt_id ... duration)
    streams = sf.codec_stream_specs(codec, latent=False, energy=False)
    create_store(path, attrs, plan, pd.DataFrame(columns=list(sf.FAILURE_COLUMNS)), streams,
                 {sf.CODEBOOKS: data.codebooks})
    n_units = math.ceil(len(table) / unit_size)
    for unit in range(n_units):
        rows = range(unit * unit_size, min(len(table), (unit + 1) * unit_size))
        records = [{"row": k, "status": "ok", "n_frames": int(table["n_frames"].iat[k]), "n_windows": 1,
                    "sample_rate": 16000, "channels": 1, "duration": float(table["duration"].iat[k])} for k in rows]
        codes = [data.codes[data.offsets[k]:data.offsets[k + 1]] for k in rows]
        write_part(path, PartData(unit, records, {sf.CODES: codes}))
    finish_store(path, n_units, {"weights": label})
    return path
