"""Audio files in the formats only FFmpeg reads (M4A, WebM, a video's sound), written with PyAV for
the tests: what a user uploads from a phone or a browser."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from extract import avio

FORMATS = {".m4a": ("mp4", "aac"), ".webm": ("webm", "libopus"), ".mkv": ("matroska", "libopus"),
           ".mp4": ("mp4", "aac")}
"""Suffix -> (container, audio encoder)."""


def write(path: str | Path, wav: np.ndarray, rate: int, video: bool = False) -> Path:
    """Mono float32 ``wav`` at ``rate`` -> ``path`` in the container its suffix names (:data:`FORMATS`),
    resampled by FFmpeg to 48 kHz for Opus; ``video``: a small video track first (a clip's sound)."""
    path = Path(path)
    container, encoder = FORMATS[path.suffix.lower()]
    out_rate = 48_000 if encoder == "libopus" else rate
    with av.open(str(path), "w", format=container) as out:
        picture = None
        if video:
            picture = out.add_stream("mpeg4" if container == "mp4" else "libvpx", rate=10)
            picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        audio = out.add_stream(encoder, rate=out_rate, layout="mono")
        if picture is not None:
            for i in range(max(1, round(10 * wav.size / rate))):
                frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), (i * 20) % 255, np.uint8), format="rgb24")
                for packet in picture.encode(frame):
                    out.mux(packet)
            for packet in picture.encode(None):
                out.mux(packet)
        samples = avio.resample(wav, rate, out_rate) if out_rate != rate else np.asarray(wav, np.float32)
        avio.write_audio(out, audio, samples, out_rate)
    return path
