"""Audio decoding: EnCodec's own conversion, and a clear AudioError for every kind of bad file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from encodec.utils import convert_audio

from extract.audio import AudioError, load_audio, probe, resampled_length


def tone(sr: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(sr + channels)
    return np.stack([0.3 * np.sin(2 * np.pi * (200 + 50 * c) * t) + 0.01 * rng.standard_normal(t.size) for c in range(channels)], axis=1)


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 24000, 44100, 48000])
def test_resampling_equals_encodec_convert_audio(tmp_path, sr):
    path = tmp_path / f"x{sr}.flac"
    sf.write(path, tone(sr, 0.7), sr, subtype="PCM_16")
    data, _ = sf.read(path, dtype="float32", always_2d=True)
    expected = convert_audio(torch.from_numpy(data.T.copy()), sr, 24000, 1)
    got = load_audio(path)
    assert got.shape == expected.shape == (1, resampled_length(len(data), sr))
    assert torch.equal(got, expected)


def test_stereo_mixdown_equals_convert_audio_and_more_channels_average(tmp_path):
    stereo = tone(48000, 0.5, channels=2)
    sf.write(tmp_path / "s.wav", stereo, 48000, subtype="FLOAT")
    expected = convert_audio(torch.from_numpy(stereo.T.astype(np.float32)), 48000, 24000, 1)
    assert torch.equal(load_audio(tmp_path / "s.wav"), expected)

    six = tone(16000, 0.5, channels=6).astype(np.float32)
    sf.write(tmp_path / "six.wav", six, 16000, subtype="FLOAT")
    mono = torch.from_numpy(six.mean(1, keepdims=True).T.copy())
    assert torch.allclose(load_audio(tmp_path / "six.wav"), convert_audio(mono, 16000, 24000, 1), atol=1e-7)


def test_bad_files_raise_audio_error_with_reason(tmp_path):
    (tmp_path / "empty.flac").write_bytes(b"")
    (tmp_path / "text.flac").write_text("this is not audio\n" * 50)
    sf.write(tmp_path / "good.flac", tone(16000, 1.0), 16000, subtype="PCM_16")
    blob = (tmp_path / "good.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(blob[: len(blob) // 3])
    nan = tone(16000, 0.5).astype(np.float32)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(tmp_path / "good.wav", tone(16000, 1.0), 16000, subtype="PCM_16")
    blob = (tmp_path / "good.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(blob[: len(blob) // 2])  # libsndfile alone would read it as 0.5 s
    cases = {"missing.flac": "not found", "empty.flac": "empty", "text.flac": "not a readable audio", "cut.flac": "decoding failed|truncated",
             "cut.wav": "truncated: the header declares 32000 bytes of audio data, the file holds 15978", "nan.wav": "non-finite"}
    for name, reason in cases.items():
        with pytest.raises(AudioError, match=reason):
            load_audio(tmp_path / name)


def test_silence_is_valid_audio(tmp_path):
    sf.write(tmp_path / "zero.flac", np.zeros(16000), 16000, subtype="PCM_16")
    wav = load_audio(tmp_path / "zero.flac")
    assert wav.shape == (1, 24000) and float(wav.abs().max()) == 0.0
    assert probe(tmp_path / "zero.flac").duration == 1.0


def test_a_wav_written_to_a_pipe_is_not_truncated(tmp_path):
    """A WAV whose header holds the unknown-size marker 0xFFFFFFFF (written by a tool to a pipe) is whole."""
    sf.write(tmp_path / "w.wav", tone(16000, 1.0), 16000, subtype="PCM_16")
    blob = bytearray((tmp_path / "w.wav").read_bytes())
    assert blob[36:40] == b"data"
    blob[4:8] = blob[40:44] = b"\xff\xff\xff\xff"
    (tmp_path / "streamed.wav").write_bytes(bytes(blob))
    assert probe(tmp_path / "streamed.wav").frames == 16000
    assert torch.equal(load_audio(tmp_path / "streamed.wav"), load_audio(tmp_path / "w.wav"))


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("n", [1, 7, 160, 44_111])
def test_block_resampling_gives_torchaudios_samples(sr, n):
    """Resampling block by block (here blocks of about 1,000 output samples, so a 44,111-sample input
    spans dozens) gives torchaudio's whole-signal output: same length, same samples to float32
    rounding of the convolution, and bit for bit when one block holds the whole signal."""
    import torchaudio

    from extract.audio import resample_mono

    x = torch.from_numpy(np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.3)[None]
    expected = torchaudio.transforms.Resample(sr, 24000)(x)
    blocks = resample_mono(x, sr, 24000, block=1000)
    assert blocks.shape == expected.shape == (1, resampled_length(n, sr))
    assert torch.allclose(blocks, expected, rtol=0, atol=1e-6)
    assert torch.equal(resample_mono(x, sr, 24000, block=10**9), expected)


def test_a_long_file_is_read_and_resampled_in_blocks(tmp_path, monkeypatch):
    """With blocks much shorter than the file, a multi-channel file decodes to the one-shot
    conversion's samples, and a bad sample or a cut in a later block is still found."""
    import extract.audio as audio

    monkeypatch.setattr(audio, "READ_BLOCK", 1000)
    monkeypatch.setattr(audio, "RESAMPLE_BLOCK", 1500)
    three = tone(16000, 2.3, channels=3).astype(np.float32)
    sf.write(tmp_path / "three.wav", three, 16000, subtype="FLOAT")
    expected = convert_audio(torch.from_numpy(three.T.copy()).mean(0, keepdim=True), 16000, 24000, 1)
    got = load_audio(tmp_path / "three.wav")
    assert got.shape == expected.shape and torch.allclose(got, expected, rtol=0, atol=1e-6)

    three[30_000, 2] = np.inf  # in the 31st read block
    sf.write(tmp_path / "inf.wav", three, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="1 non-finite"):
        load_audio(tmp_path / "inf.wav")
    blob = (tmp_path / "three.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(blob[: len(blob) * 2 // 3])
    with pytest.raises(AudioError, match="truncated"):
        load_audio(tmp_path / "cut.wav")


@pytest.mark.parametrize("n", [1, 319, 320, 321, 320 * 16384 + 7])
def test_frame_energy_is_each_frames_mean_power_in_db(n):
    """frame_energy (computed in blocks of frames) against the definition, in float64 numpy."""
    from extract.audio import frame_energy

    x = (np.random.default_rng(n).standard_normal(n) * 0.2).astype(np.float32)
    got = frame_energy(torch.from_numpy(x)[None])
    frames = -(-n // 320)
    expected = [10 * np.log10(np.mean(x[f * 320 : (f + 1) * 320].astype(np.float64) ** 2) + 1e-10) for f in range(frames)]
    assert got.shape == (frames, 1) and got.dtype == np.float16
    np.testing.assert_allclose(got[:, 0].astype(np.float64), expected, rtol=2e-3, atol=1e-2)
