"""RawBoost (extract.augment.rawboost): each model's defining property from the paper, and the
combinations (algorithms 4 to 8) as the composition of their parts under one random stream."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from extract.augment.rawboost import PARALLEL, SERIES, RawBoost, isd, lnl, multiband_filter, ssi
from tests.extract.augment.errors import assert_one_line_error

RATE = 16_000


def speechlike(seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((180, 360, 540, 720), start=1))
    return (0.2 * tone * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_the_defaults_are_the_papers():
    p = RawBoost()
    assert (p.n_bands, p.centre_hz, p.width_hz, p.taps, p.gain_db) == (5, (20, 8000), (100, 1000), (10, 100), (0, 0))
    assert (p.nonlinear_bias_db, p.order, p.max_share, p.g_sd, p.snr_db) == ((5, 20), 5, 0.10, 2, (10, 40))


@pytest.mark.parametrize("n_bands", [1, 3, 6])
def test_the_multiband_filter_is_a_bank_of_the_configured_number_of_notches(n_bands):
    p = RawBoost(n_bands=n_bands, taps=(301, 301), width_hz=(400, 600), centre_hz=(600, 7000))
    h = multiband_filter(rng(n_bands), p, RATE, p.gain_db)
    assert len(h.bands) == n_bands and all(b.taps == 301 for b in h.bands)
    assert h.taps.size == n_bands * 300 + 1  # a cascade of n_bands FIR filters of 301 taps
    freqs, response = signal.freqz(h.taps, 1, worN=8192, fs=RATE)
    magnitude = np.abs(response)
    assert magnitude.max() == pytest.approx(1.0, rel=1e-3)  # normalised, gain 0 dB
    for band in h.bands:  # each drawn band is a stop band of the bank
        at = np.argmin(np.abs(freqs - band.centre))
        assert 20 * np.log10(magnitude[at] + 1e-12) < -20, band
    # the same bank by an independent route: scipy's band-stop designs, multiplied in frequency
    expected = np.ones_like(response)
    for band in h.bands:
        one = signal.firwin(band.taps, [band.centre - band.width / 2, band.centre + band.width / 2], pass_zero=False, fs=RATE)
        expected *= 1 - np.abs(signal.freqz(one, 1, worN=8192, fs=RATE)[1])  # stop band = 1 - its band-pass twin
    assert np.corrcoef(magnitude, np.abs(expected))[0, 1] > 0.98


def test_linear_convolutive_noise_is_the_drawn_filter_applied():
    x = speechlike()
    p = RawBoost(order=1)
    h = multiband_filter(rng(3), p, RATE, p.gain_db)
    expected = np.convolve(x.astype(np.float64), h.taps)[: x.size]
    expected *= np.abs(x).max() / np.abs(expected).max()
    np.testing.assert_allclose(lnl(x, RATE, rng(3), p), expected, atol=1e-5)


def harmonic_level_db(y: np.ndarray, f: float) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    freqs = np.fft.rfftfreq(y.size, 1 / RATE)
    return 20 * np.log10(spectrum[np.argmin(np.abs(freqs - f))] / spectrum.max() + 1e-15)


def test_non_linear_orders_add_harmonics_the_linear_one_does_not():
    t = np.arange(RATE) / RATE
    tone = (0.5 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    keep_low = dict(n_bands=1, centre_hz=(7000, 7500), width_hz=(100, 200))  # notches far from 500-1500 Hz
    linear = lnl(tone, RATE, rng(1), RawBoost(order=1, **keep_low))
    cubic = lnl(tone, RATE, rng(1), RawBoost(order=3, nonlinear_bias_db=(5, 5), **keep_low))
    assert harmonic_level_db(linear, 1000) < -80 and harmonic_level_db(linear, 1500) < -80
    assert harmonic_level_db(cubic, 1000) > -40 and harmonic_level_db(cubic, 1500) > -40


@pytest.mark.parametrize("max_share", [0.10, 0.5])
def test_impulsive_noise_touches_at_most_the_configured_share_of_samples(max_share):
    x = speechlike(1.0)
    p = RawBoost(max_share=max_share)
    shares = []
    for seed in range(20):
        y = isd(x, RATE, rng(seed), p)
        touched = y != x
        shares.append(touched.mean())
        assert touched.sum() <= int(max_share * x.size)
        # signal-dependent: each click is at most g_sd times the sample it sits on
        assert np.all(np.abs(y - x)[touched] <= p.g_sd * np.abs(x[touched]) * (1 + 1e-6))
    assert max(shares) > 0.5 * max_share  # the share is drawn in [0, P]: it does reach up


def measured_snr(x: np.ndarray, y: np.ndarray) -> float:
    noise = y.astype(np.float64) - x
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(noise**2))


def test_stationary_noise_sits_at_an_snr_inside_its_range():
    x = speechlike()
    p = RawBoost()
    snrs = [measured_snr(x, ssi(x, RATE, rng(seed), p)) for seed in range(20)]
    assert all(10 - 0.01 <= s <= 40 + 0.01 for s in snrs), snrs
    assert max(snrs) - min(snrs) > 10  # drawn per utterance across the range
    fixed = measured_snr(x, ssi(x, RATE, rng(0), RawBoost(snr_db=(25, 25))))
    assert fixed == pytest.approx(25, abs=0.01)


@pytest.mark.parametrize("algo", [4, 5, 6, 7, 8])
def test_a_combination_is_the_composition_of_its_parts_under_one_stream(algo):
    x = speechlike()
    p = RawBoost(algo=algo)
    parts = {"lnl": lnl, "isd": isd, "ssi": ssi}
    stream = rng(11)
    if algo in PARALLEL:
        outs = [parts[m](x, RATE, stream, p) for m in PARALLEL[algo]]
        expected = (outs[0].astype(np.float64) + outs[1]) / 2
    else:
        expected = x
        for m in SERIES[algo]:
            expected = parts[m](expected, RATE, stream, p)
    got = p(x, RATE, rng(11))
    np.testing.assert_array_equal(got, np.asarray(expected, dtype=np.float32))
    assert not np.allclose(got, x)


def test_the_papers_numbering():
    assert SERIES[4] == ("lnl", "isd", "ssi") and SERIES[5] == ("lnl", "isd")
    assert SERIES[6] == ("lnl", "ssi") and SERIES[7] == ("isd", "ssi") and PARALLEL[8] == ("lnl", "isd")


def test_seeded_and_float32():
    x = speechlike()
    p = RawBoost(algo=4)
    a, b, c = p(x, RATE, rng(1)), p(x, RATE, rng(1)), p(x, RATE, rng(2))
    assert a.dtype == np.float32 and a.shape == x.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize(("spec", "words"), [
    ({"augment": "rawboost", "snr_db": [40, 10]}, ["snr_db", "upside down"]),
    ({"augment": "rawboost", "snr_mn": 3}, ["'snr_mn'", "allowed", "snr_db"]),
    ({"augment": "rawboost", "algo": 9}, ["algo"]),
    ({"augment": "rawboost", "taps": [100, 10]}, ["taps", "upside down"]),
])
def test_bad_parameters_are_one_line_naming_the_key(spec, words):
    assert assert_one_line_error(spec, "view.x: chain[0]", words).startswith("view.x: chain[0] (rawboost)")
