"""Channel augmentations: lossy codecs, the telephone band, speed and gain.

Every codec round trip and every sample-rate change goes through :mod:`extract.avio` (FFmpeg through
PyAV): nothing here encodes or resamples by hand. A codec, bit rate or sample rate the installed
FFmpeg cannot serve is refused on construction (``avio.check``), before any audio is read.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from scipy import signal

from extract import avio
from extract.augment.base import Augmentation, IntRange, Range, as_float32, draw, draw_int, register

TELEPHONE_RATE = 8000
CODEC_SPEED = {"mp3": 35.0, "aac": 38.0, "opus": 22.0, "vorbis": 38.0, "alaw": 250.0, "ulaw": 250.0, "g722": 120.0,
               "g726": 110.0, "amrnb": 65.0}
"""Audio s per s of each codec's round trip from 16 kHz, one core (bench/results/augment.json)."""
MODES = {"amrnb": (4750, 5150, 5900, 6700, 7400, 7950, 10200, 12200), "g726": (16000, 24000, 32000, 40000)}
"""Codecs whose bit rate takes discrete modes (FFmpeg snaps any other request to one): a bit-rate
range draws among the modes inside it."""


def _codec_names(names: tuple[str, ...]) -> tuple[str, ...]:
    if not names:
        raise ValueError("give at least one codec")
    for name in names:
        avio.check(name)
    return names


Codecs = Annotated[tuple[str, ...], BeforeValidator(lambda v: (v,) if isinstance(v, str) else v), AfterValidator(_codec_names)]
"""One codec name or a list of them (recorded as a list)."""


def _check_rates(codec: str, bitrate: tuple[int, int] | None, rates: tuple[int, ...] | None) -> None:
    """avio.check for both ends of the bit-rate range and every sample rate, and a mode inside the
    range for a codec with modes (ValueError, one line)."""
    for rate in rates or (None,):
        for bits in bitrate or (None,):
            avio.check(codec, bits, rate)
    if bitrate is not None and codec in MODES and not _modes(codec, bitrate):
        raise ValueError(f"bitrate: no {codec} mode in {list(bitrate)}; its modes: {', '.join(map(str, MODES[codec]))} bit/s")


def _modes(codec: str, bitrate: tuple[int, int]) -> tuple[int, ...]:
    return tuple(m for m in MODES[codec] if bitrate[0] <= m <= bitrate[1])


def draw_bitrate(rng: np.random.Generator, codec: str, bitrate: tuple[int, int] | None) -> int | None:
    """A bit rate drawn in ``bitrate`` (uniform; among the codec's modes inside it where it has modes)."""
    if bitrate is None:
        return None
    if codec in MODES:
        modes = _modes(codec, bitrate)
        return modes[int(rng.integers(len(modes)))]
    return draw_int(rng, bitrate)


@register
class Codec(Augmentation):
    """``{augment = "codec", codec = "mp3" | ["mp3", "aac", ...], bitrate = [low, high], rates = [...]}``:
    a round trip through one codec (drawn per utterance when several), at a bit rate drawn in
    ``bitrate`` (bit/s, uniform; among the modes inside it for AMR-NB and G.726; omitted: the
    codec's default) and a sample rate drawn from ``rates``
    (omitted: the codec's default rate). Length and rate are kept (avio.round_trip)."""

    name = "codec"
    speed = 22.0
    codec: Codecs
    bitrate: IntRange | None = None
    rates: tuple[int, ...] | None = None

    @model_validator(mode="after")
    def _servable(self) -> Codec:
        for name in self.codec:
            _check_rates(name, self.bitrate, self.rates)
        return self

    def audio_per_second(self) -> float:
        return min(CODEC_SPEED.get(c, self.speed) for c in self.codec)

    def __call__(self, wav: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        name = self.codec[int(rng.integers(len(self.codec)))]
        bits = draw_bitrate(rng, name, self.bitrate)
        rate = self.rates[int(rng.integers(len(self.rates)))] if self.rates else None
        return avio.round_trip(as_float32(wav), sample_rate, name, bits, rate)


@register
class Telephony(Augmentation):
    """``{augment = "telephony", codec = "alaw" | "ulaw" | "g726" | "amrnb" | "none", band_hz = [300, 3400]}``:
    the narrowband telephone channel. The audio is resampled to 8 kHz by FFmpeg, band-passed to
    ``band_hz`` (the G.712 channel's 300-3400 Hz; a 4th-order Butterworth from scipy; ``bandpass =
    false``: none), sent through an 8 kHz codec (``bitrate`` drawn in its range where the codec has
    one) and resampled back to the input's rate: the band above 4 kHz is gone."""

    name = "telephony"
    speed = 240.0  # with A-law or none; AMR-NB 42
    codec: str = "alaw"
    bitrate: IntRange | None = None
    band_hz: Range = (300.0, 3400.0)
    bandpass: bool = True

    @model_validator(mode="after")
    def _servable(self) -> Telephony:
        if self.codec != "none":
            _check_rates(self.codec, self.bitrate, (TELEPHONE_RATE,))
        elif self.bitrate is not None:
            raise ValueError("bitrate: codec 'none' takes no bitrate")
        if not 0 < self.band_hz[0] < self.band_hz[1] < TELEPHONE_RATE / 2:
            raise ValueError(f"band_hz: {list(self.band_hz)} must lie inside (0, {TELEPHONE_RATE // 2}) Hz")
        return self

    def audio_per_second(self) -> float:
        return min(self.speed, 1.0 / (1.0 / 300.0 + 1.0 / CODEC_SPEED.get(self.codec, 1e9)))

    def __call__(self, wav: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        x = as_float32(wav)
        narrow = avio.resample(x, sample_rate, TELEPHONE_RATE) if sample_rate != TELEPHONE_RATE else x
        if self.bandpass:
            sos = signal.butter(4, self.band_hz, btype="bandpass", fs=TELEPHONE_RATE, output="sos")
            narrow = signal.sosfilt(sos, narrow).astype(np.float32)
        if self.codec != "none":
            bits = draw_bitrate(rng, self.codec, self.bitrate)
            narrow = avio.round_trip(narrow, TELEPHONE_RATE, self.codec, bits, TELEPHONE_RATE)
        out = avio.resample(narrow, TELEPHONE_RATE, sample_rate) if sample_rate != TELEPHONE_RATE else narrow
        return _fit(out, x.size)


def _fit(wav: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad to ``length`` samples."""
    out = np.zeros(length, dtype=np.float32)
    n = min(length, wav.size)
    out[:n] = wav[:n]
    return out


@register
class Speed(Augmentation):
    """``{augment = "speed", factor = [0.9, 1.1]}`` or ``factors = [0.9, 1.0, 1.1]`` (Kaldi's):
    speed perturbation by resampling (FFmpeg's): the audio is read as if sampled at
    ``round(rate * factor)`` and resampled to ``rate``, so it lasts 1/factor as long and its pitch
    moves by the factor. The length changes."""

    name = "speed"
    speed = 5000.0
    changes_length = True
    factor: Range | None = None
    factors: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Speed:
        if (self.factor is None) == (self.factors is None):
            raise ValueError("give exactly one of factor = [low, high] or factors = [...]")
        values = self.factor or self.factors or ()
        if not values or min(values) <= 0.25 or max(values) >= 4.0:
            raise ValueError(f"factor(s) {list(values)} must lie in (0.25, 4)")
        return self

    def __call__(self, wav: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        if self.factors is not None:
            factor = self.factors[int(rng.integers(len(self.factors)))]
        else:
            factor = draw(rng, self.factor)
        source = round(sample_rate * factor)
        x = as_float32(wav)
        return x.copy() if source == sample_rate else avio.resample(x, source, sample_rate)


@register
class Gain(Augmentation):
    """``{augment = "gain", db = [-6, 6]}``: the waveform times 10^(g/20), g drawn in ``db``."""

    name = "gain"
    speed = 1e5
    db: Range = Field((-6.0, 6.0))

    def __call__(self, wav: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        return (as_float32(wav) * np.float32(10.0 ** (draw(rng, self.db) / 20.0))).astype(np.float32)
