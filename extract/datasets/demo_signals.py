"""Synthesis of the demo corpus's utterances: speech-like, NOT speech (see :mod:`.demo`).

Both classes share one prosodic plan per utterance (words of 1-4 syllables, micro-pauses, vowel
formant targets, a slow f0 contour) and one source-filter path: an excitation is filtered, frame by
frame in the STFT domain, by cascaded formant resonators. They differ where vocoders differ from
people:

* bona fide: glottal pulses with jitter and shimmer, micro-variation of f0, aspiration noise,
  formant tracks with small natural perturbations, breaths in some pauses, room noise throughout;
* spoof: perfectly periodic, band-limited harmonics following a smooth, flattened f0 contour,
  optionally randomised phases and a noise band above the harmonics, over-smoothed formant tracks
  with wide bandwidths, and pauses of digital near-silence plus a tiny noise floor.

Both are normalised to the same loudness over active speech. Everything is numpy and drawn from the
``numpy.random.Generator`` passed in, so the output is a pure function of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
TARGET_DBFS = -26.0
SPOOF_FLOOR_DBFS = -80.0
FRICATION_LEVEL = 0.15  # fricative noise RMS relative to the voiced sound
N_FFT, HOP = 512, 128
_WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
_OLA_GAIN = 1.5  # sum of the squared periodic Hann window over its 4 hop shifts
_FREQS = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
_VOWELS = np.array(  # F1-F4 in Hz of a ~17 cm vocal tract: a, i, u, e, o, ae, er
    [
        [730, 1090, 2440, 3400],
        [270, 2290, 3010, 3700],
        [300, 870, 2240, 3300],
        [530, 1840, 2480, 3500],
        [570, 840, 2410, 3300],
        [660, 1720, 2410, 3400],
        [490, 1350, 1690, 3300],
    ],
    dtype=float,
)
_BANDWIDTHS = np.array([60.0, 90.0, 120.0, 160.0])

Breakpoints = tuple[np.ndarray, np.ndarray]
"""A piecewise-linear gain curve: (times in s, gains)."""


@dataclass(frozen=True)
class Voice:
    """A synthetic speaker."""

    speaker: str
    f0_hz: float
    formant_scale: float
    jitter: float
    shimmer: float
    breathiness: float
    room_dbfs: float


@dataclass(frozen=True)
class Vocoder:
    """The artefacts of one spoofing system."""

    band_limit_hz: float
    phase_noise: float  # 0: coherent harmonics; 1: phases fully redrawn in every frame
    smoothing_s: float  # moving average applied to the formant tracks
    bandwidth_scale: float  # formant bandwidths relative to natural ones
    f0_flatten: float  # share of the natural f0 excursion kept
    noise_above_band: float  # RMS of a noise band above band_limit_hz, relative to the harmonics


@dataclass(frozen=True)
class Plan:
    """The prosodic skeleton of one utterance, shared by both classes (times in seconds)."""

    duration: float
    voiced: Breakpoints  # voicing gate
    frication: Breakpoints  # fricative-noise gate at syllable onsets
    breath: Breakpoints  # breaths inside some pauses
    vowel_times: np.ndarray  # formant target times
    formants: np.ndarray  # [n_targets, 4] formant targets in Hz
    f0_terms: np.ndarray  # [3, 3] slow f0 modulation, rows of (amplitude, rate in Hz, phase)
    accents: np.ndarray  # times of stressed syllables

    @property
    def n_samples(self) -> int:
        return int(self.duration * SAMPLE_RATE)

    def f0(self, voice: Voice, t: np.ndarray) -> np.ndarray:
        """The slow f0 contour in Hz at times ``t``: declination, slow modulation and accents."""
        grid = np.arange(0.0, self.duration + 0.01, 0.005)  # every 5 ms, then interpolated
        amp, rate, phase = self.f0_terms[:, :1], self.f0_terms[:, 1:2], self.f0_terms[:, 2:]
        slow = 1 + (amp * np.sin(2 * np.pi * rate * grid + phase)).sum(axis=0)
        bumps = np.exp(-0.5 * ((grid[:, None] - self.accents) / 0.08) ** 2).sum(axis=1)
        contour = voice.f0_hz * (1 - 0.12 * grid / self.duration) * slow * (1 + 0.08 * bumps)
        return np.interp(t, grid, contour)


def make_plan(rng: np.random.Generator, voice: Voice) -> Plan:
    """Words of 1-4 syllables separated by micro-pauses, 1.5-4 s in all."""
    duration = float(rng.uniform(1.5, 4.0))
    voiced, fric, breath = [(-1.0, 0.0)], [(-1.0, 0.0)], [(-1.0, 0.0)]
    vowel_times: list[float] = []
    formants, accents = [], []
    t = float(rng.uniform(0.08, 0.2))
    while True:
        lengths = rng.uniform(0.14, 0.3, int(rng.integers(1, 5)))
        if vowel_times and t + lengths.sum() + 0.01 * lengths.size > duration - 0.1:
            break
        for length in lengths:
            onset = float(rng.uniform(0.03, 0.06)) if rng.random() < 0.6 else 0.0
            start, end, vowel = t, t + float(length), t + onset
            if onset:
                fric += [(start, 0), (start + 0.01, 1), (vowel, 1), (vowel + 0.02, 0)]
            voiced += [(start, 0), (vowel, 0), (vowel + 0.025, 1), (end - 0.04, 0.8), (end, 0)]
            vowel_times.append((vowel + end) / 2)
            formants.append(_VOWELS[rng.integers(len(_VOWELS))] * voice.formant_scale)
            if rng.random() < 0.3:
                accents.append(vowel_times[-1])
            t = end + 0.01
        pause = float(rng.uniform(0.06, 0.25))
        if pause > 0.15 and rng.random() < 0.5:
            breath += [(t + 0.02, 0), (t + pause / 2, 1), (t + pause - 0.02, 0)]
        t += pause
    rates = np.array([0.4, 1.2, 2.5])
    return Plan(
        duration=duration,
        voiced=_breakpoints(voiced, duration),
        frication=_breakpoints(fric, duration),
        breath=_breakpoints(breath, duration),
        vowel_times=np.array(vowel_times),
        formants=np.array(formants),
        f0_terms=np.stack(
            [rng.uniform(0.02, 0.05, 3), rates, rng.uniform(0, 2 * np.pi, 3)], axis=1
        ),
        accents=np.array(accents),
    )


def _breakpoints(points: list[tuple[float, float]], duration: float) -> Breakpoints:
    times, gains = np.array([*points, (duration + 1.0, 0.0)], dtype=float).T
    return np.maximum.accumulate(times), gains


def render_bonafide(rng: np.random.Generator, plan: Plan, voice: Voice) -> np.ndarray:
    """A bona fide utterance: jittered pulses, natural formant tracks, breaths and room noise."""
    n = plan.n_samples
    t = np.arange(n) / SAMPLE_RATE
    f0 = plan.f0(voice, t) * (1 + 0.012 * _smooth_noise(rng, t, 0.03))
    voicing = np.interp(t, *plan.voiced)
    aspiration = rng.standard_normal(n) * voice.breathiness * np.sqrt(f0 / SAMPLE_RATE)
    breath = rng.standard_normal(n) * np.interp(t, *plan.breath) * 0.05 * np.sqrt(f0 / SAMPLE_RATE)
    excitation = (_glottal_pulses(rng, f0, voice) + aspiration) * voicing + breath
    spectrum = _stft(excitation)
    tracks = _formant_tracks(plan, len(spectrum))
    tracks *= 1 + 0.015 * _moving_average(rng.standard_normal(tracks.shape), 3)
    bandwidths = _BANDWIDTHS * (1 + 0.1 * rng.standard_normal(tracks.shape))
    speech = _istft(spectrum * _envelope(tracks, bandwidths), n)
    speech = _mix(speech, _fricative_noise(rng, plan, t), FRICATION_LEVEL)
    return _normalise(speech, voicing) + _pink_noise(rng, n) * 10 ** (voice.room_dbfs / 20)


def _glottal_pulses(rng: np.random.Generator, f0: np.ndarray, voice: Voice) -> np.ndarray:
    """Unit pulses, one per period, with period jitter and amplitude shimmer."""
    n = f0.size
    pulses = np.zeros(n + 2)
    n_max = int(n / SAMPLE_RATE * 300) + 10  # more than enough periods below 300 Hz
    jitter, shimmer = rng.standard_normal(n_max), rng.standard_normal(n_max)
    position = float(rng.uniform(0, SAMPLE_RATE / f0[0]))
    for i in range(n_max):
        if position >= n:
            break
        index, fraction = int(position), position - int(position)
        amplitude = 1 + voice.shimmer * shimmer[i]
        pulses[index] += amplitude * (1 - fraction)
        pulses[index + 1] += amplitude * fraction
        position += SAMPLE_RATE / f0[index] * (1 + voice.jitter * jitter[i])
    return pulses[:n]


def render_spoof(
    rng: np.random.Generator, plan: Plan, voice: Voice, vocoder: Vocoder
) -> np.ndarray:
    """A spoofed utterance: periodic band-limited harmonics, smoothed envelope, clean pauses."""
    n = plan.n_samples
    t = np.arange(n) / SAMPLE_RATE
    f0 = voice.f0_hz + vocoder.f0_flatten * (plan.f0(voice, t) - voice.f0_hz)
    voicing = np.interp(t, *plan.voiced)
    spectrum = _stft(_harmonics(rng, f0, vocoder.band_limit_hz) * voicing)
    if vocoder.phase_noise:
        shift = np.pi * vocoder.phase_noise * rng.uniform(-1, 1, spectrum.shape)
        spectrum *= np.cos(shift) + 1j * np.sin(shift)
    width = max(1, round(vocoder.smoothing_s * SAMPLE_RATE / HOP))
    tracks = _moving_average(_formant_tracks(plan, len(spectrum)), width)
    bandwidths = np.broadcast_to(_BANDWIDTHS * vocoder.bandwidth_scale, tracks.shape)
    envelope = _envelope(tracks, bandwidths)
    speech = _istft(spectrum * envelope, n)
    if vocoder.noise_above_band:
        above = envelope * (_FREQS > vocoder.band_limit_hz)
        noise = _istft(_stft(rng.standard_normal(n) * voicing) * above, n)
        speech = _mix(speech, noise, vocoder.noise_above_band)
    speech = _mix(speech, _fricative_noise(rng, plan, t), FRICATION_LEVEL)
    return _normalise(speech, voicing) + rng.standard_normal(n) * 10 ** (SPOOF_FLOOR_DBFS / 20)


def _harmonics(rng: np.random.Generator, f0: np.ndarray, band_limit_hz: float) -> np.ndarray:
    """Equal-amplitude harmonics of ``f0`` below ``band_limit_hz``: a band-limited pulse train.

    Uses the closed form sum_{k=1..K} cos(k p) = sin((K + 1/2) p) / (2 sin(p / 2)) - 1/2, scaled
    like a train of unit pulses (2 f0 / fs per harmonic).
    """
    phase = np.mod(2 * np.pi * np.cumsum(f0 / SAMPLE_RATE) + rng.uniform(0, 2 * np.pi), 2 * np.pi)
    n_harmonics = np.floor(band_limit_hz / f0)
    denominator = 2 * np.sin(phase / 2)
    regular = np.abs(denominator) > 1e-6
    kernel = np.sin((n_harmonics + 0.5) * phase) / np.where(regular, denominator, 1.0)
    total = np.where(regular, kernel, n_harmonics + 0.5) - 0.5
    return total * 2 * f0 / SAMPLE_RATE


def _stft(x: np.ndarray) -> np.ndarray:
    """[frames, bins] STFT, Hann window; frame m is centred on sample m * HOP - N_FFT / 2."""
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, N_FFT), N_FFT)[::HOP]
    return np.fft.rfft(frames * _WINDOW, axis=1)


def _istft(spectrum: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`_stft`."""
    frames = np.fft.irfft(spectrum, n=N_FFT, axis=1) * _WINDOW
    n_frames, shifts = len(frames), N_FFT // HOP
    blocks = np.zeros((n_frames + shifts - 1, HOP))
    for r in range(shifts):
        blocks[r : r + n_frames] += frames[:, r * HOP : (r + 1) * HOP]
    return blocks.reshape(-1)[N_FFT : N_FFT + length] / _OLA_GAIN


def _formant_tracks(plan: Plan, n_frames: int) -> np.ndarray:
    """[frames, 4] formant frequencies, interpolated between the plan's vowel targets."""
    times = (np.arange(n_frames) * HOP - N_FFT / 2) / SAMPLE_RATE
    return np.stack(
        [np.interp(times, plan.vowel_times, plan.formants[:, i]) for i in range(4)], axis=1
    )


def _envelope(formants: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """[frames, bins] magnitude of cascaded resonators (unit gain at DC) and a -6 dB/oct tilt."""
    f2, f = formants[:, :, None] ** 2, _FREQS[None, None, :]
    power = f2**2 / ((f2 - f**2) ** 2 + (bandwidths[:, :, None] * f) ** 2)
    return np.sqrt(power.prod(axis=1) / (1 + (_FREQS / 500) ** 2))


def _moving_average(tracks: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0, edges held."""
    padded = np.pad(tracks, ((width // 2, width - 1 - width // 2), (0, 0)), mode="edge")
    kernel = np.ones(width) / width
    columns = [np.convolve(padded[:, i], kernel, mode="valid") for i in range(tracks.shape[1])]
    return np.stack(columns, axis=1)


def _fricative_noise(rng: np.random.Generator, plan: Plan, t: np.ndarray) -> np.ndarray:
    """Noise at syllable onsets, band-passed around 4.5 kHz."""
    noise = rng.standard_normal(t.size) * np.interp(t, *plan.frication)
    band = 1 / np.sqrt(1 + ((_FREQS - 4500) / 1500) ** 2)
    return _istft(_stft(noise) * band, t.size)


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, step_s: float) -> np.ndarray:
    """Unit-variance noise, linearly interpolated between values drawn every ``step_s``."""
    grid = np.arange(0, t[-1] + 2 * step_s, step_s)
    return np.interp(t, grid, rng.standard_normal(grid.size))


def _pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS noise with a 1/f power spectrum (flat below 50 Hz)."""
    size = 1 << (n - 1).bit_length()  # a power of two keeps the FFT fast
    spectrum = np.fft.rfft(rng.standard_normal(size))
    shaped = spectrum / np.sqrt(np.maximum(np.fft.rfftfreq(size, 1 / SAMPLE_RATE), 50))
    noise = np.fft.irfft(shaped, size)[:n]
    return noise / _rms(noise)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) if x.size else 0.0


def _mix(main: np.ndarray, other: np.ndarray, relative: float) -> np.ndarray:
    """``main`` plus ``other`` at ``relative`` times main's RMS (both measured where non-silent)."""
    level = _rms(other[np.abs(other) > 1e-9])
    if level == 0:
        return main
    return main + other * (relative * _rms(main[np.abs(main) > 1e-9]) / level)


def _normalise(speech: np.ndarray, voicing: np.ndarray) -> np.ndarray:
    """Scale to TARGET_DBFS RMS over active speech, then keep the peak below 0.99."""
    speech = speech * (10 ** (TARGET_DBFS / 20) / _rms(speech[voicing > 0.5]))
    peak = np.abs(speech).max()
    return speech * (0.99 / peak) if peak > 0.99 else speech
