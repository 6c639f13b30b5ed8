"""Channel augmentations (extract.augment.channel): codecs through extract.avio, the telephone band,
speed and gain, each against an independent measurement; bad requests refused before any audio."""

from __future__ import annotations

import numpy as np
import pytest

from extract import avio
from extract.augment import AugmentError, build
from tests.extract.augment.errors import assert_one_line_error

RATE = 16_000


def noise(seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def tone(freq: float, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def band_power_db(y: np.ndarray, low: float, high: float, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(y.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(y.size, 1 / rate)
    inside = (freqs >= low) & (freqs < high)
    return 10 * np.log10(spectrum[inside].sum() / spectrum.sum() + 1e-20)


def peak_frequency(y: np.ndarray, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    return float(np.fft.rfftfreq(y.size, 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("codec", ["mp3", "opus", "amrnb"])
def test_a_fixed_codec_view_is_avios_round_trip(codec):
    spec = {"augment": "codec", "codec": codec}
    x = tone(300, 0.5) + noise(0.5)
    got = build(spec)(x, RATE, np.random.default_rng(0))
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, avio.round_trip(x, RATE, codec))


def test_bit_rate_and_codec_are_drawn_per_utterance():
    x = tone(300, 0.5) + noise(0.5)
    aug = build({"augment": "codec", "codec": ["mp3", "aac"], "bitrate": [8000, 160000], "rates": [16000, 22050]})
    outs = [aug(x, RATE, np.random.default_rng(seed)) for seed in range(6)]
    errors = {round(float(np.mean((o - x) ** 2)), 9) for o in outs}
    assert len(errors) > 3  # different draws, different losses
    again = aug(x, RATE, np.random.default_rng(0))
    assert np.array_equal(again, outs[0])


def test_amr_nb_bit_rates_are_drawn_among_its_modes():
    from extract.augment.channel import MODES, draw_bitrate  # noqa: PLC0415

    drawn = {draw_bitrate(np.random.default_rng(s), "amrnb", (5000, 10200)) for s in range(60)}
    assert drawn == {5150, 5900, 6700, 7400, 7950, 10200} and drawn <= set(MODES["amrnb"])
    assert {draw_bitrate(np.random.default_rng(s), "mp3", (8000, 9000)) for s in range(20)} <= set(range(8000, 9001))


def test_the_telephone_band_drops_what_lies_above_4_khz_and_below_300_hz():
    x = noise(1.0)
    for codec in ("alaw", "amrnb", "none"):
        y = build({"augment": "telephony", "codec": codec})(x, RATE, np.random.default_rng(0))
        assert y.shape == x.shape
        assert band_power_db(x, 4200, 8000) > -4  # white noise: half its power up there
        assert band_power_db(y, 4200, 8000) < -35, codec
        assert band_power_db(y, 0, 150) < -25, codec
    plain = build({"augment": "telephony", "codec": "none", "bandpass": False})(x, RATE, np.random.default_rng(0))
    assert band_power_db(plain, 4200, 8000) < -30 and band_power_db(plain, 0, 150) > -25  # the resampler's own edge


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_scales_duration_and_pitch(factor):
    x = tone(440, 1.0)
    y = build({"augment": "speed", "factors": [factor]})(x, RATE, np.random.default_rng(0))
    assert abs(y.size - x.size / factor) <= 64
    assert peak_frequency(y) == pytest.approx(440 * factor, abs=3)


def test_gain_is_a_constant_factor_inside_its_range():
    x = noise()
    aug = build({"augment": "gain", "db": [-6, 6]})
    gains = []
    for seed in range(10):
        y = aug(x, RATE, np.random.default_rng(seed))
        ratio = y.astype(np.float64) / x
        assert np.ptp(ratio) < 1e-5
        gains.append(20 * np.log10(ratio[0]))
    assert all(-6 - 1e-4 <= g <= 6 + 1e-4 for g in gains) and np.ptp(gains) > 3


@pytest.mark.parametrize(("spec", "words"), [
    ({"augment": "codec", "codec": "gsm"}, ["codec 'gsm'", "unknown", "known: mp3"]),
    ({"augment": "codec", "codec": "mp3", "bitrate": [1000, 64000]}, ["bitrate 1000", "8000..320000"]),
    ({"augment": "codec", "codec": "opus", "rates": [44100]}, ["44100", "opus"]),
    ({"augment": "codec", "codec": "alaw", "bitrate": [8000, 9000]}, ["fixed bit rate"]),
    ({"augment": "telephony", "codec": "g722"}, ["8000"]),
    ({"augment": "telephony", "codec": "amrnb", "bitrate": [8000, 9000]}, ["no amrnb mode in [8000, 9000]", "7950"]),
    ({"augment": "telephony", "band_hz": [300, 5000]}, ["band_hz"]),
    ({"augment": "speed"}, ["exactly one of"]),
    ({"augment": "gain", "db": [6, -6]}, ["db", "upside down"]),
    ({"augment": "gain", "dB": [6, -6]}, ["'dB'", "allowed: db"]),
])
def test_bad_channel_requests_are_one_line_before_any_audio(spec, words):
    assert_one_line_error(spec, "view.y: chain[1]", words)


def test_a_codec_the_installed_ffmpeg_lacks_is_refused(monkeypatch):
    monkeypatch.setattr(avio, "encoder_available", lambda encoder: encoder != "libopencore_amrnb")
    with pytest.raises(AugmentError, match="has no libopencore_amrnb encoder"):
        build({"augment": "telephony", "codec": "amrnb"}, "view.t: chain[0]")
