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


def test_wav_and_flac_are_read_by_soundfile_with_todays_samples(tmp_path):
    """WAV and FLAC never go through FFmpeg: the samples are soundfile's, converted by EnCodec's
    convert_audio (what every stored code was made from)."""
    for name in ("a.wav", "a.flac"):
        sf.write(tmp_path / name, tone(22050, 0.6, channels=2), 22050, subtype="PCM_16")
        data, _ = sf.read(tmp_path / name, dtype="float32", always_2d=True)
        assert probe(tmp_path / name).decoder == "soundfile"
        assert torch.equal(load_audio(tmp_path / name), convert_audio(torch.from_numpy(data.T.copy()), 22050, 24000, 1))


@pytest.mark.parametrize("suffix,video", [(".m4a", False), (".webm", False), (".mp4", True), (".mkv", True)])
def test_formats_only_ffmpeg_reads_are_decoded_through_avio(tmp_path, suffix, video):
    """M4A (AAC), WebM (Opus), and the sound of a video clip: FFmpeg's samples (decoded independently
    here with PyAV) through EnCodec's convert_audio; close to the source (lossy codecs)."""
    import av

    from tests.media import write

    wav = tone(16000, 1.5)[:, 0].astype(np.float32)
    path = write(tmp_path / f"clip{suffix}", wav, 16000, video=video)
    info = probe(path)
    assert info.decoder == "ffmpeg" and info.duration == pytest.approx(1.5, abs=0.1)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray() for f in container.decode(audio=0)]
        rate = container.streams.audio[0].rate
    decoded = torch.from_numpy(np.concatenate(frames, axis=1).astype(np.float32))
    got = load_audio(path)
    assert torch.allclose(got, convert_audio(decoded, rate, 24000, 1), atol=1e-6)
    source = convert_audio(torch.from_numpy(wav)[None], 16000, 24000, 1)[0].numpy()
    lag = max(range(3000), key=lambda k: float(np.dot(source[: 24000 - k], got[0, k : 24000].numpy())))
    assert np.corrcoef(source[: 24000 - lag], got[0, lag:24000].numpy())[0, 1] > 0.9


def test_cut_ffmpeg_files_are_reported_truncated_and_garbage_unreadable(tmp_path):
    from tests.media import write

    wav = tone(16000, 3.0)[:, 0].astype(np.float32)
    for suffix in (".m4a", ".webm"):
        blob = write(tmp_path / f"whole{suffix}", wav, 16000).read_bytes()
        (tmp_path / f"cut{suffix}").write_bytes(blob[: len(blob) // 2])
        with pytest.raises(AudioError, match="^truncated") as err:
            load_audio(tmp_path / f"cut{suffix}")
        assert str(tmp_path) not in str(err.value)  # the file is named by its caller, never by a server path
    (tmp_path / "junk.m4a").write_bytes(b"\x00junk" * 100)
    with pytest.raises(AudioError, match=r"^not a readable audio file: .*\(FFmpeg: "):
        load_audio(tmp_path / "junk.m4a")


def test_an_ogg_file_libsndfile_opens_but_cannot_read_goes_to_ffmpeg(tmp_path, monkeypatch):
    """libsndfile opens some Ogg Opus files FFmpeg writes and then fails ("file is malformed"):
    the file is decoded by FFmpeg instead (simulated: soundfile's read fails)."""
    from extract import avio

    wav = tone(16000, 1.0)[:, 0].astype(np.float32)
    (tmp_path / "x.ogg").write_bytes(avio.encode(wav, 16000, "opus", rate=48000))

    def malformed(*_args, **_kwargs):
        raise sf.LibsndfileError(0, "Internal psf_fseek() failed / file is malformed")

    monkeypatch.setattr(sf.SoundFile, "read", malformed)
    data, rate = avio.decode(tmp_path / "x.ogg")
    expected = convert_audio(torch.from_numpy(data), rate, 24000, 1)
    assert torch.allclose(load_audio(tmp_path / "x.ogg"), expected, atol=1e-6)


def test_an_ogg_vorbis_file_is_decoded_whole(tmp_path):
    """libsndfile counts and reads an Ogg Vorbis file FFmpeg writes short (3 s as a quarter of a
    second, no error): Ogg Vorbis goes to FFmpeg, and the whole file is decoded."""
    from extract import avio

    wav = tone(16000, 3.0)[:, 0].astype(np.float32)
    (tmp_path / "x.ogg").write_bytes(avio.encode(wav, 16000, "vorbis"))
    assert sf.info(str(tmp_path / "x.ogg")).subtype == "VORBIS"
    data, rate = avio.decode(tmp_path / "x.ogg")
    assert abs(data.shape[1] / rate - 3.0) < 0.1  # FFmpeg decodes it all (the encoder's padding aside)
    expected = convert_audio(torch.from_numpy(data), rate, 24000, 1)
    got = load_audio(tmp_path / "x.ogg")
    assert abs(got.shape[1] / 24000 - 3.0) < 0.1 and torch.allclose(got, expected, atol=1e-6)
    assert probe(tmp_path / "x.ogg").decoder == "ffmpeg"
