"""The codec's streams as a stream back-end (`extract.backend`): ``codes``, ``latent`` and ``energy``.

A unit of these streams decodes each file at 24 kHz (`extract.audio.load_audio`), computes the energy
stream from that waveform (`extract.audio.frame_energy`, one value per codec frame; it needs no
codec), and encodes the codes and the latent in padded batches (`extract.encoder.BatchEncoder`) with
the codec whose weights the store holds (read from the store, checked against the recorded sha256).
The streams written with the store go into its root (``group`` ""); one added to a finished store
later (``--latent`` on a store made without it) into its own group, computed by the same code from
the same weights, so that it equals the one extracted with the codes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch

from store import format as sf
from store.format import CODES, ENERGY, LATENT, WEIGHTS, StoreFiles, StreamSpec

from .audio import CODEC_SAMPLE_RATE, AudioInfo, frame_energy, resampled_length
from .backend import Arrays, StreamBackend, register_backend
from .codec import HOP_LENGTH, WeightsError, new_model
from .encoder import BatchEncoder

CODEC_STREAMS = (CODES, LATENT)
"""Streams that need the codec's encoder."""
STREAMS = (CODES, LATENT, ENERGY)
"""Every stream a unit can write."""


@register_backend
@dataclass(frozen=True, kw_only=True)
class CodecBackend(StreamBackend):
    """Everything a worker needs to rebuild the exact codec and encoder, and what to write:
    ``streams`` (a subset of :data:`STREAMS`), the codec weights' sha256 (the weights file is the
    store's), the bandwidth, the device, and the encoder's ``window_seconds`` and
    ``min_batch_seconds`` (`extract.encoder`)."""

    kind: ClassVar[str] = "codec"
    sample_rate: ClassVar[int] = CODEC_SAMPLE_RATE

    weights_sha256: str
    bandwidth: float
    device: str
    window_seconds: float
    min_batch_seconds: float
    streams: tuple[str, ...] = (CODES, LATENT)

    def frame_arrays(self) -> tuple[str, ...]:
        return self.streams

    def new_spec(self, store_attrs: dict) -> StreamSpec:
        spec = next(s for s in sf.codec_stream_specs(store_attrs["codec"], latent=True, energy=True) if s.name == self.name)
        return sf.added_stream_spec(self.name, spec.frame_rate, spec.dtype, spec.frame_shape, spec.about,
                                    group=self.group or None)

    def new_specs(self, store_attrs: dict) -> list[StreamSpec]:
        """One stream: its group's ``data`` (:meth:`new_spec`). Several (an augmented view's codes,
        latent and energy, from one pass of the encoder): ``GROUP/NAME`` each, sharing ``GROUP/offsets``,
        laid out as the store's own streams are."""
        if len(self.streams) == 1:
            return [self.new_spec(store_attrs)]
        specs = {s.name: s for s in sf.codec_stream_specs(store_attrs["codec"], latent=True, energy=True)}
        return [dataclasses.replace(specs[name], array=f"{self.group}/{name}", offsets=f"{self.group}/{sf.OFFSETS}",
                                    tables=()) for name in self.streams]

    def fingerprint(self) -> dict[str, Any]:
        return {"bandwidth": self.bandwidth, "batch_seconds": self.batch_seconds, "window_seconds": self.window_seconds,
                "min_batch_seconds": self.min_batch_seconds, "max_seconds": self.max_seconds}

    def span(self, info: AudioInfo, split: str) -> tuple[int, int]:
        return 0, resampled_length(info.frames, info.sample_rate)

    def load(self, path: str, row: int, span: tuple[int, int]) -> tuple[torch.Tensor, np.ndarray | None]:
        """(wav [1, T] at 24 kHz, its energy stream when asked)."""
        wav = self.audio.load(path, row, self.sample_rate)
        return wav, frame_energy(wav, HOP_LENGTH) if ENERGY in self.streams else None

    def open(self) -> BatchEncoder | None:
        """The worker's encoder (built once per process and settings); None when only the energy
        stream is written."""
        if not set(self.streams) & set(CODEC_STREAMS):
            return None
        return _encoder(self.store, self.weights_sha256, self.bandwidth, self.device, LATENT in self.streams,
                        self.window_seconds, self.min_batch_seconds, self.batch_seconds)

    def compute(self, model: BatchEncoder | None, items: Sequence[Any],
                spans: Sequence[tuple[int, int]]) -> list[tuple[Arrays, int]]:
        encoded = model.encode([wav for wav, _ in items]) if model is not None else [None] * len(items)
        out = []
        for (_, energy), result in zip(items, encoded):
            arrays: Arrays = {}
            if result is not None:
                arrays[CODES], arrays[LATENT] = result.codes, result.latent
            if energy is not None:
                arrays[ENERGY] = energy
            out.append(({name: arrays[name] for name in self.streams}, result.n_windows if result is not None else 1))
        return out


@lru_cache(maxsize=2)
def _encoder(store: str, weights_sha256: str, bandwidth: float, device: str, latent: bool, window_seconds: float,
             min_batch_seconds: float, batch_seconds: float) -> BatchEncoder:
    data = StoreFiles(store).read_bytes(WEIGHTS)
    if hashlib.sha256(data).hexdigest() != weights_sha256:
        raise WeightsError(f"{store}/{WEIGHTS}: sha256 differs from the store's attributes")
    model = new_model()
    try:  # weights_only: a crafted file never runs code, it is refused
        model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    except Exception as err:  # noqa: BLE001 - torch raises several types for unsafe or damaged files
        raise WeightsError(f"{store}/{WEIGHTS}: not a loadable EnCodec state dict ({type(err).__name__}: {err})") from None
    return BatchEncoder(model, bandwidth, device=device, latent=latent, window_seconds=window_seconds,
                        min_batch_seconds=min_batch_seconds, batch_seconds=batch_seconds)
