"""extract.avio: FFmpeg decoding of any format and lossy codec round trips, against soundfile and
against each codec's defining properties."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile as sf

from extract import avio

RATE = 16_000


def speechlike(seconds: float = 1.0, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a slow envelope and some noise (codecs are built for such signals)."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((180, 360, 540, 720), start=1))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.2 * tone * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def best_lag_correlation(x: np.ndarray, y: np.ndarray, max_lag: int = 400) -> tuple[int, float]:
    """The delay of ``y`` against ``x`` (0..max_lag samples) with the highest correlation, and it."""
    best = max(range(max_lag), key=lambda lag: float(np.dot(x[: x.size - lag], y[lag:])))
    return best, float(np.corrcoef(x[: x.size - best], y[best:])[0, 1])


@pytest.mark.parametrize("name", avio.available())
def test_a_round_trip_keeps_length_rate_and_the_signal_but_is_lossy(name):
    wav = speechlike()
    out = avio.round_trip(wav, RATE, name)
    assert out.dtype == np.float32 and out.shape == wav.shape
    lag, r = best_lag_correlation(wav, out)
    # AMR-NB is a CELP coder: it keeps the spectral envelope and pitch, not the waveform
    assert r > (0.6 if name == "amrnb" else 0.9), (name, lag, r)
    assert lag < 200  # priming is dropped where FFmpeg leaves it; what stays is the codec's own delay
    assert not np.allclose(out, wav, atol=1e-4)  # lossy: not the input passed back
    assert np.array_equal(out, avio.round_trip(wav, RATE, name))  # deterministic


def test_bitrate_changes_the_result_and_a_lower_one_loses_more():
    wav = speechlike(2.0)
    low = avio.round_trip(wav, RATE, "mp3", bitrate=8_000)
    high = avio.round_trip(wav, RATE, "mp3", bitrate=128_000)
    err = lambda y: float(np.mean((y - wav) ** 2))  # noqa: E731
    assert err(low) > err(high)


@pytest.mark.parametrize("name", ["alaw", "ulaw"])
def test_g711_is_an_8_bit_logarithmic_quantiser(name):
    """G.711 at its own 8 kHz (no resampling): at most 256 output levels, and an error relative to
    the sample that stays within a few percent above the smallest steps (its defining property)."""
    rate = 8000
    wav = speechlike(1.0, rate)
    out = avio.round_trip(wav, rate, name)
    assert len(np.unique(out)) <= 256
    big = np.abs(wav) > 0.05
    assert np.max(np.abs(out[big] - wav[big]) / np.abs(wav[big])) < 0.07


def test_decode_equals_soundfile_for_wav_and_flac(tmp_path):
    rng = np.random.default_rng(1)
    stereo = (0.3 * rng.standard_normal((RATE, 2))).astype(np.float32)
    for suffix, subtype in ((".wav", "PCM_16"), (".flac", "PCM_16")):
        path = tmp_path / f"a{suffix}"
        sf.write(path, stereo, RATE, subtype=subtype)
        expected, rate = sf.read(path, dtype="float32", always_2d=True)
        decoded, decoded_rate = avio.decode(path)
        assert decoded_rate == rate and decoded.shape == expected.T.shape
        np.testing.assert_allclose(decoded, expected.T, atol=1e-6)


def test_decode_reads_ogg_opus_and_webm_and_a_videos_sound(tmp_path):
    wav = speechlike(1.0)
    ogg = avio.encode(wav, RATE, "opus", rate=48_000)
    decoded, rate = avio.decode(ogg)
    assert rate == 48_000 and abs(decoded.shape[1] - 48_000) < 2_000
    # a WebM file with a video track before its audio track
    path = tmp_path / "clip.webm"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libvpx", rate=10) if avio.encoder_available("libvpx") else None
        audio = out.add_stream("libopus", rate=48_000, layout="mono")
        if video is not None:
            video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
            for i in range(10):
                frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 20, np.uint8), format="rgb24")
                for packet in video.encode(frame):
                    out.mux(packet)
            for packet in video.encode(None):
                out.mux(packet)
        avio.write_audio(out, audio, avio.resample(wav, RATE, 48_000), 48_000)
    decoded, rate = avio.decode(path)
    assert rate == 48_000 and decoded.shape[0] == 1
    assert best_lag_correlation(avio.resample(wav, RATE, 48_000), decoded[0, :48_000], 1000)[1] > 0.9


def test_bad_files_and_bad_requests_get_one_line(tmp_path):
    garbage = tmp_path / "x.m4a"
    garbage.write_bytes(b"not audio at all" * 10)
    with pytest.raises(avio.AVError, match=r"x\.m4a: not a file FFmpeg can read") as err:
        avio.decode(garbage)
    assert "\n" not in str(err.value)
    with pytest.raises(avio.AVError, match="unknown; known"):
        avio.check("gsm")
    with pytest.raises(avio.AVError, match="sample rate 16000 Hz not supported"):
        avio.check("alaw", rate=16_000)
    with pytest.raises(avio.AVError, match="outside"):
        avio.check("mp3", bitrate=1)
    with pytest.raises(avio.AVError, match="fixed bit rate"):
        avio.check("ulaw", bitrate=64_000)


def test_a_truncated_compressed_file_still_decodes_what_it_holds():
    data = avio.encode(speechlike(2.0), RATE, "mp3")
    decoded, rate = avio.decode(io.BytesIO(data[: len(data) // 2]).read())
    assert 0.5 * RATE < decoded.shape[1] < 1.5 * RATE
