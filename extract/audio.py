"""Audio decoding for the codec: any soundfile format -> mono float32 at the codec's sample rate.

The conversion is EnCodec's own (`encodec.utils.convert_audio`): mix down to mono by averaging the
channels, then `torchaudio.transforms.Resample(sr, 24000)` with its default windowed-sinc filter.
So the codes we store equal `EncodecModel.encode(convert_audio(wav, sr, 24000, 1))` for the file.
(convert_audio itself accepts only mono or stereo; averaging first makes it accept any channel
count and leaves mono and stereo unchanged.) convert_audio builds a new `Resample`, and so its
filter kernel, for every file; here one is built per sample rate and kept (the same kernel, so the
same samples).

Every problem with a file is raised as :class:`AudioError` with a short reason, so the extractor
can record it in the failures table and go on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

CODEC_SAMPLE_RATE = 24_000


class AudioError(Exception):
    """A file cannot be used as audio; ``str(err)`` is the reason recorded in the failures table."""


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says: sample rate, frames per channel, channels, seconds."""

    sample_rate: int
    frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str | Path) -> AudioInfo:
    """Read the header only. Raises AudioError for missing, empty and non-audio files."""
    path = Path(path)
    if not path.is_file():
        raise AudioError("file not found")
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"not a readable audio file: {err}") from None
    if info.frames <= 0:
        raise AudioError("audio has no samples")
    return AudioInfo(sample_rate=int(info.samplerate), frames=int(info.frames), channels=int(info.channels))


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
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [frames, channels]
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"decoding failed: {err}") from None
    if data.shape[0] == 0:
        raise AudioError("audio has no samples")
    if data.shape[0] < info.frames:
        raise AudioError(f"truncated: header says {info.frames} frames, decoded {data.shape[0]}")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(f"{bad} non-finite (NaN/inf) samples")
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # [channels, frames]
    return resampler(int(sr), target_rate)(wav.mean(0, keepdim=True))  # = convert_audio(mono, sr, target_rate, 1)


def frame_energy(wav: torch.Tensor, hop: int = 320) -> np.ndarray:
    """Log energy of each codec frame: float16 [ceil(T / hop), 1] in dB, 10 log10(mean(x^2) + 1e-10)
    over the frame's ``hop`` samples of ``wav`` [1, T] (the last frame over the samples it has).

    Frame t covers the same samples as the codec's frame t (EnCodec 24 kHz: hop 320 at 24 kHz),
    so the stream is frame-aligned with the codes. It sees no codec: a control for what the codec
    adds over plain level statistics (e.g. the cleaner pauses of some synthesizers)."""
    x = wav.reshape(-1).to(torch.float64)
    n = x.numel()
    frames = -(-n // hop)
    padded = torch.nn.functional.pad(x, (0, frames * hop - n)).view(frames, hop)
    counts = torch.full((frames,), float(hop), dtype=torch.float64)
    counts[-1] = n - (frames - 1) * hop
    power = padded.square().sum(1) / counts
    return (10.0 * torch.log10(power + 1e-10)).to(torch.float16).numpy()[:, None]
