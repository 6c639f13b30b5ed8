"""The project's one door to FFmpeg (through PyAV, whose wheels bundle it).

Two jobs, and every part of the project that needs either comes here:

* :func:`decode`: the audio track of any file FFmpeg reads (M4A/AAC, Ogg Opus and Vorbis, WebM,
  MP3, AMR, a video's sound ...) -> float32 ``[channels, samples]`` at the file's own rate.
  (`extract.audio` keeps soundfile for the formats libsndfile reads, so WAV and FLAC decode to the
  same samples as before; everything else comes through here.)
* :func:`round_trip`: a waveform encoded with a lossy codec and decoded again, in memory: the channel
  conditions of the cross-corpus layouts (ASVspoof 2021 LA/DF style), the codec views of
  augmentation, and the tests. :data:`CODECS` is the registry of what can be asked for, with the
  sample rates and bit rates each encoder takes; :func:`check` refuses an unknown codec, one the
  installed FFmpeg lacks, or a rate it cannot take, in one line, before any audio is read.

Sample-rate conversion is FFmpeg's own (swresample through ``av.AudioResampler``), never written here.
The decoded round trip has the input's length and rate: FFmpeg's decoders drop the encoders'
priming samples where the container says how many (Opus pre-skip, LAME's gapless header); what a
codec delays beyond that stays (as it would in a real channel), and the end is cut or padded with
zeros to the input's length.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np


class AVError(ValueError):
    """A file FFmpeg cannot decode, or a codec request it cannot serve; ``str(err)`` is one line."""


@dataclass(frozen=True)
class Codec:
    """One lossy codec as FFmpeg encodes it: the encoder, the container its bytes travel in, the
    sample rates it takes (``None``: any) and its bit rates in bit/s (``None``: fixed by the rate)."""

    name: str
    encoder: str
    container: str
    rates: tuple[int, ...] | None
    default_rate: int
    bitrates: tuple[int, int] | None
    default_bitrate: int | None
    description: str
    channels: int = 1
    """Channels the encoder is fed (FFmpeg's own Vorbis encoder takes stereo only: mono is doubled)."""
    priming: int = 0
    """Leading samples (at the codec's rate) that FFmpeg's decoder leaves in and the round trip drops
    (AAC's 1024: PyAV's decoding does not apply the container's skip; measured, tests/extract/test_avio.py)."""
    options: tuple[tuple[str, str], ...] = ()
    """Encoder options (FFmpeg's Vorbis encoder is marked experimental)."""


CODECS: dict[str, Codec] = {c.name: c for c in (
    Codec("mp3", "libmp3lame", "mp3", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000), 16000,
          (8_000, 320_000), 32_000, "MPEG-1/2 Layer III (LAME)"),
    Codec("aac", "aac", "adts", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000), 16000,
          (8_000, 320_000), 32_000, "AAC-LC (FFmpeg's encoder), ADTS stream as in M4A", priming=1024),
    Codec("opus", "libopus", "ogg", (8000, 12000, 16000, 24000, 48000), 16000,
          (6_000, 510_000), 16_000, "Opus (libopus) in Ogg"),
    Codec("vorbis", "vorbis", "ogg", None, 16000, (32_000, 500_000), 64_000, "Vorbis (FFmpeg's encoder) in Ogg",
          channels=2, options=(("strict", "experimental"),)),
    Codec("alaw", "pcm_alaw", "wav", (8000,), 8000, None, None, "G.711 A-law telephony, 8 kHz"),
    Codec("ulaw", "pcm_mulaw", "wav", (8000,), 8000, None, None, "G.711 mu-law telephony, 8 kHz"),
    Codec("g722", "g722", "wav", (16000,), 16000, None, None, "G.722 wideband telephony, 16 kHz"),
    Codec("g726", "g726", "wav", (8000,), 8000, (16_000, 40_000), 32_000, "G.726 ADPCM telephony, 8 kHz"),
    Codec("amrnb", "libopencore_amrnb", "amr", (8000,), 8000, (4_750, 12_200), 12_200,
          "AMR-NB narrowband mobile telephony, 8 kHz (the stand-in for GSM, which FFmpeg cannot encode)"),
)}


@cache
def encoder_available(encoder: str) -> bool:
    """Whether the installed FFmpeg has ``encoder``."""
    try:
        av.codec.Codec(encoder, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False
    return True


def available() -> list[str]:
    """The registry's codecs the installed FFmpeg can encode."""
    return [name for name, codec in CODECS.items() if encoder_available(codec.encoder)]


def check(name: str, bitrate: int | None = None, rate: int | None = None) -> Codec:
    """The codec ``name`` if it can run here with this bit rate and sample rate; otherwise AVError
    naming what is wrong (nothing is read or encoded)."""
    codec = CODECS.get(name)
    if codec is None:
        raise AVError(f"codec {name!r}: unknown; known: {', '.join(CODECS)}")
    if not encoder_available(codec.encoder):
        raise AVError(f"codec {name!r}: the installed FFmpeg (PyAV {av.__version__}) has no {codec.encoder} "
                      f"encoder; available here: {', '.join(available())}")
    if rate is not None and codec.rates is not None and rate not in codec.rates:
        raise AVError(f"codec {name!r}: sample rate {rate} Hz not supported; it takes {', '.join(map(str, codec.rates))} Hz")
    if bitrate is not None:
        if codec.bitrates is None:
            raise AVError(f"codec {name!r}: has a fixed bit rate at its sample rate; give no bitrate")
        low, high = codec.bitrates
        if not low <= bitrate <= high:
            raise AVError(f"codec {name!r}: bitrate {bitrate} bit/s outside {low}..{high}")
    return codec


def _to_frames(wav: np.ndarray, sample_rate: int, block: int = 4096, channels: int = 1) -> list[av.AudioFrame]:
    """Mono float32 [T] -> planar float AudioFrames of ``block`` samples (the mono signal in each of
    ``channels`` channels)."""
    frames = []
    layout = "mono" if channels == 1 else "stereo"
    for start in range(0, wav.shape[0], block):
        piece = np.ascontiguousarray(np.repeat(wav[None, start : start + block], channels, axis=0), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = start
        frames.append(frame)
    return frames


def encode(wav: np.ndarray, sample_rate: int, name: str, bitrate: int | None = None, rate: int | None = None) -> bytes:
    """Mono float32 ``wav`` at ``sample_rate`` -> the bytes of a file in the codec's container,
    resampled by FFmpeg to ``rate`` (default: the codec's default rate)."""
    codec = check(name, bitrate, rate)
    rate = rate or codec.default_rate
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    buffer = io.BytesIO()
    layout = "mono" if codec.channels == 1 else "stereo"
    with av.open(buffer, mode="w", format=codec.container) as out:
        stream = out.add_stream(codec.encoder, rate=rate, layout=layout)
        if codec.bitrates is not None:
            stream.bit_rate = bitrate or codec.default_bitrate
        if codec.options:
            stream.codec_context.options = dict(codec.options)
        write_audio(out, stream, wav, sample_rate, codec.channels)
    return buffer.getvalue()


def write_audio(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream, wav: np.ndarray,
                sample_rate: int, channels: int = 1) -> None:
    """Encode mono float32 ``wav`` at ``sample_rate`` into the open audio ``stream`` of ``out``
    (converted by FFmpeg's resampler to the stream's sample format, layout and rate) and flush it."""
    layout = "mono" if channels == 1 else "stereo"
    resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=stream.codec_context.sample_rate)
    for frame in _to_frames(np.asarray(wav, dtype=np.float32).reshape(-1), sample_rate, channels=channels) + [None]:
        for converted in resampler.resample(frame):
            converted.pts = None
            for packet in stream.encode(converted):
                out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


@dataclass(frozen=True)
class StreamInfo:
    """The first audio track's header: sample rate, channels, and the samples per channel its
    container declares (0 when it declares no length)."""

    sample_rate: int
    channels: int
    frames: int


def _open(source: str | Path | bytes | BinaryIO, label: str | None) -> tuple[av.container.InputContainer, str]:
    name = label or (str(source) if isinstance(source, str | Path) else "upload")
    opened = io.BytesIO(source) if isinstance(source, bytes) else (str(source) if isinstance(source, Path) else source)
    try:
        return av.open(opened, mode="r"), name
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise AVError(f"{name}: not a file FFmpeg can read ({_reason(err)})") from None


def _audio_stream(container: av.container.InputContainer, name: str) -> tuple[av.audio.stream.AudioStream, int]:
    streams = container.streams.audio
    if not streams:
        raise AVError(f"{name}: has no audio track")
    stream = streams[0]
    rate = stream.codec_context.sample_rate or stream.rate
    if not rate:
        raise AVError(f"{name}: its audio track declares no sample rate")
    return stream, int(rate)


def info(source: str | Path | bytes | BinaryIO, label: str | None = None) -> StreamInfo:
    """The header of ``source``'s first audio track, without decoding (AVError as :func:`decode`).
    The length is the track's declared duration, else the container's."""
    container, name = _open(source, label)
    with container:
        stream, rate = _audio_stream(container, name)
        if stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        else:
            seconds = container.duration / av.time_base if container.duration else 0.0
        channels = stream.codec_context.layout.nb_channels or stream.channels or 1
        return StreamInfo(rate, int(channels), max(0, round(seconds * rate)))


def decode(source: str | Path | bytes | BinaryIO, label: str | None = None) -> tuple[np.ndarray, int]:
    """The first audio track of ``source`` (a path, the bytes of a file, or a binary file object)
    -> (float32 ``[channels, samples]``, sample rate). AVError (one line, naming ``label`` or the
    path) for a file FFmpeg cannot open, one without an audio track, or one whose packets do not
    decode."""
    container, name = _open(source, label)
    with container:
        stream, rate = _audio_stream(container, name)
        resampler = av.AudioResampler(format="fltp", rate=rate)
        pieces: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                frame.pts = None
                for converted in resampler.resample(frame):
                    pieces.append(converted.to_ndarray())
            for converted in resampler.resample(None):
                pieces.append(converted.to_ndarray())
        except (av.error.FFmpegError, ValueError) as err:
            raise AVError(f"{name}: decoding failed ({_reason(err)})") from None
    if not pieces:
        raise AVError(f"{name}: audio has no samples")
    return np.concatenate(pieces, axis=1).astype(np.float32, copy=False), int(rate)


def round_trip(wav: np.ndarray, sample_rate: int, name: str, bitrate: int | None = None, rate: int | None = None) -> np.ndarray:
    """Mono float32 ``wav`` at ``sample_rate`` through codec ``name`` (at ``rate`` and ``bitrate``)
    and back: float32 [T] at ``sample_rate``, the input's length (module docstring)."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    data = encode(wav, sample_rate, name, bitrate, rate)
    decoded, decoded_rate = decode(data, label=f"{name} round trip")
    mono = decoded.mean(axis=0) if decoded.shape[0] > 1 else decoded[0]
    mono = mono[CODECS[name].priming :]
    if decoded_rate != sample_rate:
        mono = resample(mono, decoded_rate, sample_rate)
    out = np.zeros(wav.shape[0], dtype=np.float32)
    n = min(out.shape[0], mono.shape[0])
    out[:n] = mono[:n]
    return out


def resample(wav: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float32 [T] from ``rate`` to ``target`` with FFmpeg's resampler (swresample)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    pieces = []
    for frame in _to_frames(np.asarray(wav, dtype=np.float32).reshape(-1), rate) + [None]:
        for converted in resampler.resample(frame):
            pieces.append(converted.to_ndarray().reshape(-1))
    return np.concatenate(pieces).astype(np.float32, copy=False) if pieces else np.zeros(0, np.float32)


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:200]
