"""Noise and reverberation (extract.augment.acoustic): generated noises have their spectra, noise sits
at its SNR, MUSAN/RIRS_NOISES-layout folders are used (and checked before any audio), simulated rooms
have the RT60 asked for (measured by pyroomacoustics' Schroeder integration)."""

from __future__ import annotations

import numpy as np
import pyroomacoustics as pra
import pytest
import soundfile as sf

from extract.augment import AugmentError, build
from extract.augment.acoustic import bank_rir, coloured_noise, simulated_rir
from tests.extract.augment.errors import assert_one_line_error

RATE = 16_000


def speechlike(seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.2 * np.sin(2 * np.pi * 200 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.mark.parametrize(("kind", "slope"), [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_generated_noise_has_its_power_law(kind, slope):
    x = coloured_noise(kind, 1 << 16, np.random.default_rng(0))
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size)
    keep = (f > 1e-3) & (f < 0.4)
    fitted = np.polyfit(np.log10(f[keep]), np.log10(power[keep]), 1)[0]
    assert fitted == pytest.approx(slope, abs=0.1)


def snr(x: np.ndarray, y: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y.astype(np.float64) - x) ** 2))


def test_generated_noise_is_added_at_an_snr_in_its_range_and_says_generated():
    x = speechlike()
    aug = build({"augment": "noise", "snr_db": [5, 20]})
    values = [snr(x, aug(x, RATE, np.random.default_rng(s))) for s in range(12)]
    assert all(5 - 0.01 <= v <= 20 + 0.01 for v in values) and np.ptp(values) > 5
    assert aug.recipe()["origin"] == "generated"


def musan(tmp_path, rate: int = 8000) -> str:
    """A MUSAN-layout folder: noise/<source>/*.wav (a 1 kHz tone at another rate) and music/ (a 3 kHz one)."""
    root = tmp_path / "musan"
    for sub, freq in (("noise/free-sound", 1000), ("music/jamendo", 3000)):
        (root / sub).mkdir(parents=True)
        t = np.arange(rate // 3) / rate
        sf.write(root / sub / "a.wav", 0.5 * np.sin(2 * np.pi * freq * t), rate)
    return str(root)


def test_noise_from_a_musan_folder_uses_its_subset_looped_resampled_and_at_the_snr(tmp_path):
    root = musan(tmp_path)
    x = speechlike(1.0)  # longer than the 1/3 s noise file: looped
    aug = build({"augment": "noise", "folder": root, "snr_db": [10, 10]})
    y = aug(x, RATE, np.random.default_rng(0))
    added = y.astype(np.float64) - x
    spectrum = np.abs(np.fft.rfft(added))
    assert np.fft.rfftfreq(added.size, 1 / RATE)[np.argmax(spectrum)] == pytest.approx(1000, abs=5)  # noise/, not music/
    assert snr(x, y) == pytest.approx(10, abs=0.01)
    recipe = aug.recipe()
    assert recipe["origin"] == "files" and recipe["files"]["count"] == 1 and len(recipe["files"]["listing_sha256"]) == 64


@pytest.mark.parametrize(("spec", "words"), [
    ({"augment": "noise", "folder": "/nonexistent/musan"}, ["/nonexistent/musan", "not found"]),
    ({"augment": "reverb", "folder": "/nonexistent/RIRS_NOISES"}, ["not found"]),
    ({"augment": "noise", "snr_db": [20, 5]}, ["snr_db", "upside down"]),
    ({"augment": "noise", "kinds": ["purple"]}, ["kinds"]),
    ({"augment": "reverb", "rt60_s": [0.9, 0.3]}, ["rt60_s", "upside down"]),
    ({"augment": "reverb", "room": [[3, 4]]}, ["'room'", "allowed", "room_m"]),
])
def test_bad_acoustic_requests_are_one_line(spec, words):
    assert_one_line_error(spec, "view.z: chain[0]", words)


def test_an_empty_folder_is_refused(tmp_path):
    (tmp_path / "noise").mkdir()
    with pytest.raises(AugmentError, match="no .wav/.flac files"):
        build({"augment": "noise", "folder": str(tmp_path)})


def test_simulated_rooms_reverberate_for_the_rt60_drawn():
    for seed, rt60 in ((0, 0.3), (1, 0.6)):
        rir = simulated_rir(np.random.default_rng(seed), RATE, ((5, 5), (4, 4), (3, 3)), (rt60, rt60), max_order=60)
        measured = pra.experimental.measure_rt60(rir, fs=RATE, decay_db=30)
        assert measured == pytest.approx(rt60, rel=0.35), (rt60, measured)  # image sources vs Sabine's formula


def test_simulated_reverberation_is_labelled_and_seeded():
    x = speechlike()
    aug = build({"augment": "reverb", "rt60_s": [0.3, 0.5], "rooms": 3, "max_order": 20})
    a, b = aug(x, RATE, np.random.default_rng(4)), aug(x, RATE, np.random.default_rng(4))
    assert np.array_equal(a, b) and a.shape == x.shape and not np.allclose(a, x, atol=1e-3)
    assert aug.recipe()["origin"].startswith("simulated (pyroomacoustics")
    bank_rir.cache_clear()  # the bank is made again from its seed, not from what this process kept
    assert np.array_equal(aug(x, RATE, np.random.default_rng(4)), a)
    outputs = {aug(x, RATE, np.random.default_rng(s)).tobytes() for s in range(12)}
    assert len(outputs) == 3  # a bank of 3 rooms


def test_the_bank_rooms_are_the_seeded_simulations():
    rir = bank_rir(RATE, ((4, 6), (3, 5), (2.5, 3)), (0.3, 0.6), 20, 7, 2)
    again = simulated_rir(np.random.default_rng(np.random.SeedSequence([7, 2])), RATE, ((4, 6), (3, 5), (2.5, 3)), (0.3, 0.6), 20)
    assert np.array_equal(rir, again)


def test_reverb_from_a_rirs_noises_folder_is_the_convolution_aligned_on_the_direct_path(tmp_path):
    room = tmp_path / "RIRS_NOISES" / "simulated_rirs" / "smallroom" / "Room001"
    room.mkdir(parents=True)
    rir = np.zeros(2000)
    rir[100], rir[900] = 0.8, 0.4  # direct path at 100, one echo 800 samples later
    sf.write(room / "Room001-00001.wav", rir, RATE, subtype="FLOAT")
    sf.write(room / "isotropic_noise_1.wav", np.ones(100) * 0.1, RATE, subtype="FLOAT")  # left out: a noise
    aug = build({"augment": "reverb", "folder": str(tmp_path / "RIRS_NOISES")})
    x = speechlike()
    y = aug(x, RATE, np.random.default_rng(0))
    expected = x.astype(np.float64).copy()
    expected[800:] += 0.5 * x[:-800]
    expected *= np.abs(x).max() / np.abs(expected).max()
    np.testing.assert_allclose(y, expected, atol=1e-5)
    assert aug.recipe()["files"]["count"] == 1
