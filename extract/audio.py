"""Audio decoding for the codec: any audio file -> mono float32 at the codec's sample rate.

Two decoders, one conversion. What libsndfile opens (WAV, FLAC, AIFF, MP3, Ogg ...) is read by
soundfile exactly as before, so WAV and FLAC give the same samples, codes and scores as they always
did. Everything else FFmpeg reads (M4A/AAC, WebM, Matroska, AMR, a video's audio track, and an Ogg
file libsndfile opens but cannot read, e.g. some Ogg Opus files FFmpeg writes: "file is malformed";
and every Ogg Vorbis file, which libsndfile reads short when FFmpeg wrote it)
is decoded through `extract.avio`, the project's one FFmpeg module, to float32 at the file's own
rate; from there both take the same channel mean and resampler. :data:`AUDIO_EXTENSIONS` lists the
file name endings folders are searched for.

The conversion is EnCodec's own (`encodec.utils.convert_audio`): mix down to mono by averaging the
channels, then `torchaudio.transforms.Resample(sr, 24000)` with its default windowed-sinc filter.
So the codes we store equal `EncodecModel.encode(convert_audio(wav, sr, 24000, 1))` for the file.
(convert_audio itself accepts only mono or stereo; averaging first makes it accept any channel
count and leaves mono and stereo unchanged.) convert_audio builds a new `Resample`, and so its
filter kernel, for every file; here one is built per sample rate and kept (the same kernel, so the
same samples).

Memory: a file is read in blocks of :data:`READ_BLOCK` frames, mixed down block by block into one
mono array, and resampled block by block into one output array (each block computes exactly the
filter positions the whole-file resampler computes for its samples, from the same input samples
and the same zero padding at the file's ends). Peak memory is about 4 bytes per input sample plus
4 bytes per output sample, whatever the channel count, instead of the several whole-file copies a
one-shot read and resample make (an hour at 16 kHz: about 0.6 GB instead of 1.6 GB or more).
Whether a block boundary changes a sample's float rounding is measured by
`tests/extract/test_audio.py` (the same samples, to float32 rounding).

Every problem with a file is raised as :class:`AudioError` with a short reason, so the extractor
can record it in the failures table and go on.
"""

from __future__ import annotations

import errno
import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from . import avio

CODEC_SAMPLE_RATE = 24_000
READ_BLOCK = 1 << 18
"""Frames per channel read at a time (about 16 s at 16 kHz)."""
RESAMPLE_BLOCK = 1 << 18
"""Output samples resampled at a time (about 11 s at 24 kHz), rounded to whole filter positions."""


SNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd",
                      ".caf", ".w64", ".rf64", ".sph", ".nist")
"""File name endings of formats libsndfile decodes (read by soundfile)."""
FFMPEG_EXTENSIONS = (".m4a", ".mp4", ".m4b", ".aac", ".webm", ".mkv", ".mka", ".mov", ".3gp", ".amr", ".wma",
                     ".wmv", ".avi", ".ac3", ".spx")
"""File name endings of formats only FFmpeg decodes (through `extract.avio`), video containers included."""
AUDIO_EXTENSIONS = SNDFILE_EXTENSIONS + FFMPEG_EXTENSIONS
"""File name endings read as audio; folders are searched for these (case-insensitive)."""
TRUNCATED_SHARE = 0.95
"""An FFmpeg-decoded file is reported truncated when it holds less than this share of the samples its
container declares (less 0.1 s: encoders' priming and padding make the two differ slightly)."""

_CUT_DATA = re.compile(r"^data\s*:\s*(\d+) \(should be (\d+)\)", re.M)
"""libsndfile's note (in ``extra_info``) on a WAV whose data chunk is shorter than its header says."""
_STREAMED_SIZES = (0, 0xFFFFFFFF, 0xFFFFFFFF - 1)
"""Data sizes of WAVs written to a pipe (size unknown when the header was written): not truncated."""


class AudioError(Exception):
    """A file cannot be used as audio; ``str(err)`` is the reason recorded in the failures table."""


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says: sample rate, frames per channel, channels, seconds; ``decoder``:
    "soundfile" or "ffmpeg" (which one :func:`load_audio` reads the file with)."""

    sample_rate: int
    frames: int
    channels: int
    decoder: str = "soundfile"

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def _not_a_file(path: Path) -> str:
    """Why ``path`` cannot be opened as a file: missing, a symbolic link loop, a directory ..."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symbolic link loop"
        if err.errno == errno.EACCES:
            return "permission denied (a folder on its path is not accessible)"
        return "file not found" if err.errno == errno.ENOENT else f"cannot be opened ({err.strerror})"
    return "not a regular file (a directory?)"


def probe(path: str | Path) -> AudioInfo:
    """Read the header only. Raises AudioError for missing, empty, unreadable and non-audio files.
    A file libsndfile cannot open is asked of FFmpeg (:func:`_ffmpeg_probe`)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(_not_a_file(path))
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioError("permission denied (the file is not readable by this user)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        return _ffmpeg_probe(path, str(err))
    if (info.format, info.subtype) == ("OGG", "VORBIS"):  # libsndfile counts and reads FFmpeg's Ogg Vorbis
        return _ffmpeg_probe(path, "")                   # short (a 3 s file as 0.24 s), silently
    if info.frames <= 0:
        raise AudioError("audio has no samples")
    cut = _CUT_DATA.search(info.extra_info or "")
    if cut and int(cut[1]) not in _STREAMED_SIZES:  # libsndfile reads such a file as shorter, silently
        raise AudioError(f"truncated: the header declares {cut[1]} bytes of audio data, the file holds {cut[2]}")
    return AudioInfo(sample_rate=int(info.samplerate), frames=int(info.frames), channels=int(info.channels))


def _ffmpeg_probe(path: Path, sndfile_error: str) -> AudioInfo:
    """The header of a file libsndfile cannot open, as FFmpeg reads it (AudioError naming both
    readers' reasons when FFmpeg cannot either). A file whose container declares no length is
    decoded once to count its samples."""
    try:
        header = avio.info(path, label=path.name)
        frames = header.frames or avio.decode(path, label=path.name)[0].shape[1]
    except avio.AVError as err:
        raise AudioError(_ffmpeg_reason(path, err, sndfile_error)) from None
    return AudioInfo(sample_rate=header.sample_rate, frames=frames, channels=header.channels, decoder="ffmpeg")


def _ffmpeg_reason(path: Path, err: avio.AVError, sndfile_error: str = "") -> str:
    """AudioError's reason for a file FFmpeg refused: an MP4/M4A whose index is missing (its moov
    atom is written last, so a cut file loses it) is reported as truncated."""
    reason = str(err).removeprefix(f"{path.name}: ").replace(str(path), path.name)  # FFmpeg names the whole path
    with path.open("rb") as handle:
        head = handle.read(12)
    if head[4:8] == b"ftyp" and "not a file FFmpeg can read" in reason:
        return f"truncated or damaged: an MP4/M4A file whose index (moov atom) cannot be read (FFmpeg: {reason})"
    if sndfile_error:
        return f"not a readable audio file: {sndfile_error} (FFmpeg: {reason})"
    return f"decoding failed: {reason}"


def resampled_length(frames: int, sample_rate: int, target_rate: int = CODEC_SAMPLE_RATE) -> int:
    """Number of samples torchaudio's resampler returns for ``frames`` input samples."""
    g = math.gcd(sample_rate, target_rate)
    return math.ceil((target_rate // g) * frames / (sample_rate // g))


@lru_cache(maxsize=16)
def resampler(sample_rate: int, target_rate: int = CODEC_SAMPLE_RATE) -> torchaudio.transforms.Resample:
    """The `Resample` convert_audio would build for ``sample_rate`` -> ``target_rate`` (kept: its
    forward only reads its kernel, so threads may share it)."""
    return torchaudio.transforms.Resample(sample_rate, target_rate)


def load_audio(path: str | Path, target_rate: int = CODEC_SAMPLE_RATE) -> torch.Tensor:
    """Decode, check and convert a file to a mono float32 tensor [1, T] at ``target_rate``.

    Raises AudioError for unreadable or truncated files, non-finite samples and silence-free
    emptiness. Digital silence is valid audio and is encoded as such.
    """
    info = probe(path)
    if info.decoder == "ffmpeg":
        return _load_ffmpeg(Path(path), info, target_rate)
    mono = np.empty(info.frames, dtype=np.float32)
    done = bad = 0
    try:
        with sf.SoundFile(str(path)) as f:
            sr = int(f.samplerate)
            while done < info.frames:
                block = f.read(min(READ_BLOCK, info.frames - done), dtype="float32", always_2d=True)  # [n, channels]
                if block.shape[0] == 0:
                    break
                bad += int((~np.isfinite(block)).sum())
                n = block.shape[0]
                # the channel mean of to_codec_audio, computed by torch over the same float32 values
                mono[done : done + n] = torch.from_numpy(np.ascontiguousarray(block.T)).mean(0).numpy()
                done += n
    except (sf.LibsndfileError, RuntimeError) as err:
        if sf.info(str(path)).format == "OGG":  # libsndfile opens some Ogg files FFmpeg writes, then fails
            return _load_ffmpeg(Path(path), None, target_rate)
        raise AudioError(f"decoding failed: {err}") from None
    if done == 0:
        raise AudioError("audio has no samples")
    if done < info.frames:
        raise AudioError(f"truncated: header says {info.frames} frames, decoded {done}")
    if bad:
        raise AudioError(f"{bad} non-finite (NaN/inf) samples")
    return resample_mono(torch.from_numpy(mono)[None], sr, target_rate)


def _load_ffmpeg(path: Path, info: AudioInfo | None, target_rate: int) -> torch.Tensor:
    """:func:`load_audio` for a file FFmpeg decodes (``info``: its probe, None when unknown): the
    same checks, the same channel mean and resampler."""
    try:
        data, rate = avio.decode(path, label=path.name)
        declared = info.frames if info is not None else avio.info(path, label=path.name).frames
    except avio.AVError as err:
        raise AudioError(_ffmpeg_reason(path, err)) from None
    done = data.shape[1]
    if declared and done < TRUNCATED_SHARE * declared - 0.1 * rate:
        raise AudioError(f"truncated: the container declares {declared / rate:.2f} s of audio, the file holds "
                         f"{done / rate:.2f} s")
    bad = int((~np.isfinite(data)).sum())
    if bad:
        raise AudioError(f"{bad} non-finite (NaN/inf) samples")
    mono = torch.from_numpy(data).mean(0, keepdim=True)
    return resample_mono(mono, rate, target_rate)


def to_codec_audio(wav: torch.Tensor, sample_rate: int, target_rate: int = CODEC_SAMPLE_RATE) -> torch.Tensor:
    """float32 [channels, T] at ``sample_rate`` -> mono [1, T'] at ``target_rate``: the conversion
    of the module docstring (what every file gets; the Detector applies it to waveforms too)."""
    return resample_mono(wav.mean(0, keepdim=True), int(sample_rate), target_rate)  # = convert_audio(wav, sr, target_rate, 1)


def resample_mono(mono: torch.Tensor, sample_rate: int, target_rate: int = CODEC_SAMPLE_RATE,
                  block: int = RESAMPLE_BLOCK) -> torch.Tensor:
    """float32 [1, T] at ``sample_rate`` -> [1, resampled_length(T)] at ``target_rate``: what
    ``torchaudio.transforms.Resample(sample_rate, target_rate)(mono)`` returns, computed about
    ``block`` output samples at a time into one preallocated output (no whole-file temporaries).

    torchaudio pads the input with ``width`` zeros before and ``width + orig`` after, then runs a
    strided convolution (stride ``orig``, kernel ``[new, 1, K]``): filter position j reads padded
    samples [j * orig, j * orig + K) and writes output samples [j * new, (j + 1) * new). Each block
    of positions gets exactly its input slice, with the same zeros where it passes the file's ends."""
    if sample_rate == target_rate:
        return mono
    rs = resampler(sample_rate, target_rate)
    orig, new = rs.orig_freq // rs.gcd, rs.new_freq // rs.gcd
    kernel, width = rs.kernel, rs.width
    x = mono.reshape(-1)
    length = x.numel()
    target = resampled_length(length, sample_rate, target_rate)
    positions = length // orig + 1  # what the whole-file convolution computes
    out = torch.empty(positions * new, dtype=x.dtype)
    step = max(1, block // new)
    size = kernel.shape[-1]
    for j0 in range(0, positions, step):
        j1 = min(positions, j0 + step)
        lo, hi = j0 * orig - width, (j1 - 1) * orig - width + size  # input samples the block reads
        piece = x[max(lo, 0) : min(hi, length)]
        if lo < 0 or hi > length:
            piece = torch.nn.functional.pad(piece, (max(0, -lo), max(0, hi - length)))
        y = torch.nn.functional.conv1d(piece[None, None], kernel, stride=orig)  # [1, new, j1 - j0]
        out[j0 * new : j1 * new] = y[0].t().reshape(-1)
    return out[:target][None]


def frame_energy(wav: torch.Tensor, hop: int = 320) -> np.ndarray:
    """Log energy of each codec frame: float16 [ceil(T / hop), 1] in dB, 10 log10(mean(x^2) + 1e-10)
    over the frame's ``hop`` samples of ``wav`` [1, T] (the last frame over the samples it has).

    Frame t covers the same samples as the codec's frame t (EnCodec 24 kHz: hop 320 at 24 kHz),
    so the stream is frame-aligned with the codes. It sees no codec: a control for what the codec
    adds over plain level statistics (e.g. the cleaner pauses of some synthesizers)."""
    x = wav.reshape(-1)
    n = x.numel()
    frames = -(-n // hop)
    out = np.empty((frames, 1), dtype=np.float16)
    step = 1 << 14  # frames per block: float64 copies of a block, not of the whole file
    for f0 in range(0, frames, step):
        f1 = min(frames, f0 + step)
        block = x[f0 * hop : f1 * hop].to(torch.float64)
        valid = block.numel()
        padded = torch.nn.functional.pad(block, (0, (f1 - f0) * hop - valid)).view(f1 - f0, hop)
        counts = torch.full((f1 - f0,), float(hop), dtype=torch.float64)
        counts[-1] = valid - (f1 - f0 - 1) * hop
        power = padded.square().sum(1) / counts
        out[f0:f1, 0] = (10.0 * torch.log10(power + 1e-10)).to(torch.float16).numpy()
    return out
