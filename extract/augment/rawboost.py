"""RawBoost (Tak, Kamble, Patino, Todisco and Evans, ICASSP 2022), written from the paper.

Three nuisance models applied to the raw waveform, with the paper's default parameters:

1. **Linear and non-linear convolutive noise** (LnL): a Hammerstein-like sum over orders
   j = 1..N_f, ``y = sum_j h_j * x^j``, where each h_j is a *multi-band filter*: the cascade of
   ``n_bands`` FIR notch (band-stop) filters, each with its centre frequency, width and number of
   taps drawn per utterance, normalised to a peak magnitude response of 1 and scaled by a gain in
   dB. Order 1 (linear) takes a gain in ``gain_db``; the higher orders are ``nonlinear_bias_db``
   below it (so their distortion is a few to 20 dB under the linear part). The output is scaled
   back to the input's peak amplitude.
2. **Impulsive signal-dependent additive noise** (ISD): a share of the samples drawn uniformly in
   [0, ``max_share``] (the paper's P = 10 %) is picked at random, and each picked sample gets
   ``g_sd * x[n] * u1 * u2`` added, u1, u2 uniform in [-1, 1]: clicks whose size follows the
   signal. Every other sample is untouched.
3. **Stationary signal-independent additive noise** (SSI): white Gaussian noise coloured by one
   multi-band filter (as in 1, linear), added at an SNR drawn in ``snr_db`` (10 to 40 dB).

And the paper's combinations (its algorithms 4 to 8): 4 = 1 then 2 then 3 in series, 5 = 1 then 2,
6 = 1 then 3, 7 = 2 then 3, 8 = 1 and 2 in parallel (each applied to the input; the mean of the two
outputs, so the level stays the input's). ``algo`` 1, 2, 3 run one model alone.

Filters are designed by scipy (``scipy.signal.firwin``, band-stop, Hamming window; ``freqz`` for
the normalisation; ``oaconvolve``, FFT overlap-add, to apply them: the FIR filter of ``lfilter`` cut to the input's length). All random draws come from the Generator passed in,
in a fixed order, so a combination equals the composition of its parts fed the same Generator
(tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field
from scipy import signal

from extract.augment.base import Augmentation, IntRange, Range, as_float32, draw, draw_int, match_peak, register, scale_to_snr

SERIES: dict[int, tuple[str, ...]] = {1: ("lnl",), 2: ("isd",), 3: ("ssi",), 4: ("lnl", "isd", "ssi"),
                                      5: ("lnl", "isd"), 6: ("lnl", "ssi"), 7: ("isd", "ssi")}
"""The paper's algorithms 1 to 7 as the models they run in series; 8 is LnL and ISD in parallel."""
PARALLEL: dict[int, tuple[str, ...]] = {8: ("lnl", "isd")}


@dataclass(frozen=True)
class Band:
    """One notch of a multi-band filter: centre and width in Hz, number of taps (odd)."""

    centre: float
    width: float
    taps: int


@dataclass(frozen=True)
class MultiBand:
    """A drawn multi-band filter: its bands, gain (dB) and FIR taps (the cascade, normalised)."""

    bands: tuple[Band, ...]
    gain_db: float
    taps: np.ndarray


class RawBoostParams(Augmentation):
    """The paper's parameters, its defaults (the names of the paper's table in the comments)."""

    n_bands: int = Field(5, ge=1)                       # N_notch: notch filters per multi-band filter
    centre_hz: Range = (20.0, 8000.0)                    # f_c min, max
    width_hz: Range = (100.0, 1000.0)                    # delta f min, max
    taps: IntRange = (10, 100)                           # filter coefficients min, max (made odd)
    gain_db: Range = (0.0, 0.0)                          # linear component's gain min, max
    nonlinear_bias_db: Range = (5.0, 20.0)               # gain difference linear vs non-linear, min, max
    order: int = Field(5, ge=1, le=10)                   # N_f: highest power of x (1 = linear only)
    max_share: float = Field(0.10, ge=0.0, le=1.0)       # P: at most this share of samples gets ISD noise
    g_sd: float = Field(2.0, gt=0.0)                     # ISD gain
    snr_db: Range = (10.0, 40.0)                         # SSI noise SNR min, max


def multiband_filter(rng: np.random.Generator, p: RawBoostParams, sample_rate: int, gain_db: tuple[float, float]) -> MultiBand:
    """Draw a multi-band filter: ``p.n_bands`` band-stop FIR filters (centre, width, taps drawn in
    that order per band), cascaded, normalised to a peak magnitude of 1, scaled by a gain drawn in
    ``gain_db``. Band edges are kept inside (0, Nyquist)."""
    nyquist = sample_rate / 2.0
    bands, taps = [], np.ones(1)
    for _ in range(p.n_bands):
        centre, width, n = draw(rng, p.centre_hz), draw(rng, p.width_hz), draw_int(rng, p.taps)
        n += 1 - n % 2  # a band-stop FIR needs an odd length
        low = min(max(centre - width / 2.0, 1e-3 * nyquist), nyquist * (1 - 2e-3))
        high = max(min(centre + width / 2.0, nyquist * (1 - 1e-3)), low + 1e-3 * nyquist)
        band = signal.firwin(n, [low, high], pass_zero="bandstop", window="hamming", fs=sample_rate)
        bands.append(Band(centre, width, n))
        taps = np.convolve(taps, band)
    gain = draw(rng, gain_db)
    _, response = signal.freqz(taps, 1, worN=4096)
    taps = taps / np.max(np.abs(response)) * 10.0 ** (gain / 20.0)
    return MultiBand(tuple(bands), gain, taps)


def lnl(wav: np.ndarray, sample_rate: int, rng: np.random.Generator, p: RawBoostParams) -> np.ndarray:
    """Model 1: linear and non-linear convolutive noise (module docstring)."""
    x = as_float32(wav).astype(np.float64)
    y = np.zeros_like(x)
    nonlinear = (p.gain_db[0] - p.nonlinear_bias_db[1], p.gain_db[1] - p.nonlinear_bias_db[0])
    for j in range(1, p.order + 1):
        h = multiband_filter(rng, p, sample_rate, p.gain_db if j == 1 else nonlinear)
        y += signal.oaconvolve(x**j, h.taps)[: x.size]
    return match_peak(y, x).astype(np.float32)


def isd(wav: np.ndarray, sample_rate: int, rng: np.random.Generator, p: RawBoostParams) -> np.ndarray:
    """Model 2: impulsive signal-dependent additive noise on at most ``p.max_share`` of samples."""
    x = as_float32(wav)
    share = float(rng.uniform(0.0, p.max_share))
    count = int(x.size * share)
    where = rng.permutation(x.size)[:count]
    shape = rng.uniform(-1.0, 1.0, count) * rng.uniform(-1.0, 1.0, count)
    y = x.copy()
    y[where] = x[where] + (p.g_sd * x[where] * shape).astype(np.float32)
    return y


def ssi(wav: np.ndarray, sample_rate: int, rng: np.random.Generator, p: RawBoostParams) -> np.ndarray:
    """Model 3: white noise coloured by a multi-band filter, added at an SNR drawn in ``p.snr_db``."""
    x = as_float32(wav)
    white = rng.standard_normal(x.size)
    h = multiband_filter(rng, p, sample_rate, p.gain_db)
    coloured = signal.oaconvolve(white, h.taps)[: x.size]
    snr = draw(rng, p.snr_db)
    return (x + scale_to_snr(x, coloured, snr)).astype(np.float32)


MODELS = {"lnl": lnl, "isd": isd, "ssi": ssi}


@register
class RawBoost(RawBoostParams):
    """``{augment = "rawboost", algo = 1..8, ...}``: the paper's algorithm ``algo`` (module docstring)."""

    name = "rawboost"
    speed = 30.0  # with LnL (algorithms 1, 4, 5, 6, 8); 240 without (2, 3, 7)
    algo: Literal[1, 2, 3, 4, 5, 6, 7, 8] = 5

    def audio_per_second(self) -> float:
        return self.speed if self.algo in (1, 4, 5, 6, 8) else 240.0

    def __call__(self, wav: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        x = as_float32(wav)
        if self.algo in PARALLEL:
            outputs = [MODELS[m](x, sample_rate, rng, self) for m in PARALLEL[self.algo]]
            return (sum(o.astype(np.float64) for o in outputs) / len(outputs)).astype(np.float32)
        for model in SERIES[self.algo]:
            x = MODELS[model](x, sample_rate, rng, self)
        return x
