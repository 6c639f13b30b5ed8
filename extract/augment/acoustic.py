"""Acoustic augmentations: additive noise at an SNR, and reverberation.

Both take their material from a folder the user gives, in the layouts of the usual corpora:

* noise: MUSAN (``musan/{noise,music,speech}/<source>/*.wav``): ``folder`` is the MUSAN root (the
  ``subsets`` folders under it are used: default ``noise``) or any folder of audio files;
* reverberation: RIRS_NOISES (``RIRS_NOISES/simulated_rirs/{small,medium,large}room/Room*/*.wav``,
  ``real_rirs_isotropic_noises/*.wav``): ``folder`` is the root (default subset ``simulated_rirs``)
  or any folder of impulse responses; files whose name says ``noise`` are left out.

Offline, with no folder, the material is made: noise is **generated** (white, pink 1/f or brown
1/f^2 Gaussian noise, drawn per utterance), rooms are **simulated** with pyroomacoustics (a shoebox
room with dimensions and RT60 drawn, Sabine's formula for the wall absorption, image sources, random
source and microphone positions). A full reverberation tail takes image sources of high order
(0.4 s per room at order 60), so the simulated rooms form a bank, as RIRS_NOISES' simulated rooms
do: ``rooms`` rooms, room k drawn from ``SeedSequence([room_seed, k])`` whatever the process, each
made on first use and kept; an utterance draws one of them. The recipe says which (``origin``). Folders are
listed on construction (missing or empty: one line, before any audio is read); the listing's
sha256 goes into the recipe, so a view made again from other files is seen to differ.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyroomacoustics as pra
from pydantic import Field, PrivateAttr, model_validator
from scipy import signal

from extract import avio
from extract.augment.base import Augmentation, Range, as_float32, draw, match_peak, register, scale_to_snr

AUDIO_SUFFIXES = (".wav", ".flac")
ROOM_SECONDS = 0.4
"""Seconds to simulate one room of the defaults at 16 kHz, one core (bench/results/augment.json)."""


def listing(folder: str, subsets: tuple[str, ...], exclude: str | None = None) -> tuple[Path, ...]:
    """The audio files under ``folder``/each subset (or ``folder`` itself when none of the subsets
    is there), sorted; ValueError (one line) for a missing folder or one without audio files."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"folder {folder!r}: not found (or not a folder)")
    tops = [root / s for s in subsets if (root / s).is_dir()] or [root]
    files = sorted(p for top in tops for p in top.rglob("*")
                   if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file() and not (exclude and exclude in p.name.lower()))
    if not files:
        raise ValueError(f"folder {folder!r}: no {'/'.join(AUDIO_SUFFIXES)} files under {', '.join(map(str, tops))}")
    return tuple(files)


def listing_sha256(files: tuple[Path, ...], root: str) -> str:
    base = Path(root).expanduser()
    return hashlib.sha256("\n".join(str(p.relative_to(base)) for p in files).encode()).hexdigest()


@lru_cache(maxsize=16)
def load_mono(path: Path, sample_rate: int) -> np.ndarray:
    """A noise or RIR file as mono float32 at ``sample_rate`` (FFmpeg decodes and resamples; the
    first channel of a multichannel file)."""
    wav, rate = avio.decode(path)
    mono = np.ascontiguousarray(wav[0])
    return mono if rate == sample_rate else avio.resample(mono, rate, sample_rate)


class _FromFolder(Augmentation):
    folder: str | None = None
    subsets: tuple[str, ...] = ()
    _files: tuple[Path, ...] = PrivateAttr(default=())
    exclude: ClassVar[str | None] = None

    def model_post_init(self, context: Any) -> None:
        """List the folder (after validation, so that a bad value is named first)."""
        if self.folder is not None:
            self._files = listing(self.folder, self.subsets, self.exclude)

    def pick(self, rng: np.random.Generator, sample_rate: int) -> tuple[Path, np.ndarray]:
        path = self._files[int(rng.integers(len(self._files)))]
        return path, load_mono(path, sample_rate)

    def recipe(self) -> dict[str, Any]:
        out = super().recipe()
        if self.folder is not None:
            out["files"] = {"count": len(self._files), "listing_sha256": listing_sha256(self._files, self.folder)}
        return out


def coloured_noise(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a power spectrum flat (white), 1/f (pink) or 1/f^2 (brown): white noise
    shaped in the frequency domain; zero mean."""
    white = rng.standard_normal(length)
    if kind == "white" or length < 2:
        return white
    spectrum = np.fft.rfft(white)
    f = np.fft.rfftfreq(length)
    spectrum[1:] /= f[1:] ** ({"pink": 1.0, "brown": 2.0}[kind] / 2.0)
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n=length)


@register
class Noise(_FromFolder):
    """``{augment = "noise", snr_db = [5, 20], folder = "/data/musan", subsets = ["noise"]}``: a noise
    added at an SNR drawn in ``snr_db`` (mean power over the utterance). From ``folder``: one file
    drawn per utterance, from a random offset, looped when shorter. Without: ``kinds`` of generated
    noise (one drawn per utterance)."""

    name = "noise"
    speed = 260.0
    snr_db: Range = (5.0, 20.0)
    subsets: tuple[str, ...] = ("noise",)
    kinds: tuple[Literal["white", "pink", "brown"], ...] = ("white", "pink", "brown")

    @model_validator(mode="after")
    def _folder(self) -> Noise:
        if not self.kinds:
            raise ValueError("kinds: give at least one of white, pink, brown")
        return self

    def describe_origin(self) -> str:
        return "files" if self.folder else "generated"

    def __call__(self, wav: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        x = as_float32(wav)
        if self.folder is None:
            noise = coloured_noise(self.kinds[int(rng.integers(len(self.kinds)))], x.size, rng)
        else:
            _, source = self.pick(rng, sample_rate)
            start = int(rng.integers(max(1, source.size)))
            reps = -(-(x.size + start) // max(1, source.size))
            noise = np.tile(source, reps)[start : start + x.size].astype(np.float64)
        snr = draw(rng, self.snr_db)
        return (x + scale_to_snr(x, noise, snr)).astype(np.float32)


def simulated_rir(rng: np.random.Generator, sample_rate: int, room_m: tuple[Range, Range, Range], rt60_s: Range,
                  max_order: int, margin_m: float = 0.5) -> np.ndarray:
    """A shoebox room's impulse response by pyroomacoustics' image-source method: dimensions drawn in
    ``room_m``, RT60 in ``rt60_s`` (Sabine inverted by ``pra.inverse_sabine`` for the walls'
    absorption and the reflection order, capped at ``max_order``), source and microphone drawn at
    least ``margin_m`` from the walls."""
    dims = [draw(rng, r) for r in room_m]
    rt60 = draw(rng, rt60_s)
    try:
        absorption, order = pra.inverse_sabine(rt60, dims)
    except ValueError:  # RT60 too short for so large a room: the most absorbing walls Sabine allows
        absorption, order = 1.0, 0
    source = [rng.uniform(margin_m, d - margin_m) for d in dims]
    mic = [rng.uniform(margin_m, d - margin_m) for d in dims]
    room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(min(absorption, 1.0)), max_order=min(int(order), max_order))
    room.add_source(source)
    room.add_microphone(mic)
    room.compute_rir()
    return np.asarray(room.rir[0][0], dtype=np.float64)


@lru_cache(maxsize=2048)
def bank_rir(sample_rate: int, room_m: tuple[Range, Range, Range], rt60_s: Range, max_order: int, room_seed: int,
             index: int) -> np.ndarray:
    """Room ``index`` of the bank (module docstring): the same samples in every process."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([room_seed, index])))
    rir = simulated_rir(rng, sample_rate, room_m, rt60_s, max_order)
    rir.setflags(write=False)
    return rir


@register
class Reverb(_FromFolder):
    """``{augment = "reverb", rt60_s = [0.2, 0.8], room_m = [[3, 10], [3, 8], [2.5, 4]], rooms = 200}``
    (a bank of simulated rooms; ``max_order`` caps the image sources' order, which shortens the
    longest tails in small rooms: RT60 0.8 s in a 3 m room measures 0.68 s at 60, 0.20 at 17) or ``{augment = "reverb", folder = "/data/RIRS_NOISES"}`` (recorded or simulated RIR files):
    the utterance convolved with a room impulse response (scipy's FFT convolution), aligned on the
    response's direct path (its largest tap), cut to the input's length, scaled to the input's peak."""

    name = "reverb"
    speed = 600.0  # once the rooms drawn are made (each 0.25-0.4 s at the defaults, once per process)
    exclude = "noise"
    subsets: tuple[str, ...] = ("simulated_rirs",)
    rt60_s: Range = (0.2, 0.8)
    room_m: tuple[Range, Range, Range] = ((3.0, 10.0), (3.0, 8.0), (2.5, 4.0))
    max_order: int = Field(60, ge=0, le=100)
    rooms: int = Field(200, ge=1, le=100_000)
    room_seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _folder(self) -> Reverb:
        if self.rt60_s[0] <= 0:
            raise ValueError(f"rt60_s: {list(self.rt60_s)} must be > 0 s")
        if min(r[0] for r in self.room_m) <= 1.0:
            raise ValueError("room_m: every side must be over 1 m (source and microphone stay 0.5 m from walls)")
        return self

    def describe_origin(self) -> str:
        return "files" if self.folder else f"simulated (pyroomacoustics {pra.__version__})"

    def setup_seconds(self, utterances: int | None = None) -> float:
        # a room is simulated when an utterance first draws it (bank_rir keeps it): at most one per utterance
        rooms = self.rooms if utterances is None else min(self.rooms, utterances)
        return 0.0 if self.folder else ROOM_SECONDS * rooms

    def __call__(self, wav: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        x = as_float32(wav)
        if self.folder is None:
            index = int(rng.integers(self.rooms))
            rir = bank_rir(sample_rate, self.room_m, self.rt60_s, self.max_order, self.room_seed, index)
        else:
            rir = self.pick(rng, sample_rate)[1].astype(np.float64)
        rir = rir[int(np.argmax(np.abs(rir))):] if rir.size else np.ones(1)
        wet = signal.fftconvolve(x.astype(np.float64), rir)[: x.size]
        return match_peak(wet, x).astype(np.float32)
