"""`pipeline extract --ssl-from STREAM`: an SSL stream re-coded from another SSL stream of the store.

A second storage of the same SSL stream (`store.sslstorage`: float16, int8, pca:K, pca:K:int8)
needs no second run of the SSL model: :class:`SSLRecodeBackend` is the SSL back-end
(`extract.ssl_stream.SSLBackend`) whose frames come from the store's finished SSL stream
``source`` instead of the model. Each utterance's stored frames are read and decoded to float32 as
the training reader decodes them (`classify.frames.StoredReader`, without its float16 cast), its
``layers`` kept, and encoded with the new storage by the same `SSLBackend.compute`; a ``pca:K``
basis is fitted by the same `SSLBackend.prepare` on the source's train frames. It runs through the
same driver (`extract.driver.add_stream`: units, commit records, fingerprint, resume, lease).

The new stream keeps the source's model, weights record, crop and windows, so its ``starts`` and
frame counts are the source's; its ``source`` records ``recoded_from`` (the stream and its
storage), and its settings fingerprint ``ssl_from`` and ``ssl_from_storage``. Refused, in one line
before any work: a source that is missing, not an SSL stream, unfinished, or that lacks a layer of
``--ssl-layers`` (default: the source's layers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch

from store import format as sf
from store.format import StoreFiles, StreamSpec
from store.reader import FeatureStore
from store.sslstorage import SSLStorage, read_pca, read_starts
from store.writer import StoreError

from .audio import AudioError, AudioInfo
from .backend import register_backend
from .ssl import SSL_HOP, SSLWeights, architecture, format_layers, parse_layers, recorded_windows, ssl_windows
from .ssl_stream import SSLBackend, driver_fields


def source_spec(url: str, name: str) -> StreamSpec:
    """The spec of the finished SSL stream ``name`` of the store ``url``; StoreError in one line
    when it is missing, not an SSL stream or unfinished."""
    files = StoreFiles(url)
    if not files.exists() or files.read_group_attrs().get("state") != sf.STATE_COMPLETE:
        raise StoreError(f"{url}: --ssl-from re-codes a stream of a finished store; this one is not finished "
                         "(run its extraction first)")
    group = sf.added_stream_group(name)
    streams = FeatureStore(url).streams
    if not files.exists(f"{group}/zarr.json") and name not in streams:
        raise StoreError(f"{url}: --ssl-from {name}: no stream {name!r} to re-code; this store has: "
                         f"{', '.join(streams) or 'none'}")
    attrs = files.read_group_attrs(group) if files.exists(f"{group}/zarr.json") else {}
    spec = StreamSpec.from_attrs(attrs["stream"]) if "stream" in attrs else streams.get(name)
    if spec is None or (spec.source or {}).get("kind") != "ssl":
        raise StoreError(f"{url}: --ssl-from {name}: stream {name!r} is not an SSL stream")
    if attrs.get("state") != sf.STATE_COMPLETE:
        raise StoreError(f"{url}: --ssl-from {name}: stream {name!r} is unfinished; run the extraction that adds it "
                         "again to finish it first")
    return spec


@dataclass
class _Source:
    """A source stream opened in one process: its frames, decoding, ``starts`` and the store's
    utterance records."""

    stream: Any
    coding: SSLStorage
    pca: tuple[np.ndarray | None, np.ndarray | None]
    starts: np.ndarray
    layers: tuple[int, ...]
    utterances: Any


@lru_cache(maxsize=2)
def _open_source(url: str, name: str) -> _Source:
    store = FeatureStore(url)
    stream = store.stream(name)
    coding = SSLStorage.from_source(stream.spec.source)
    pca = read_pca(store.root, stream.spec) or (None, None)
    starts = read_starts(store.root, stream.spec, len(stream.offsets) - 1)
    return _Source(stream, coding, pca, starts, tuple(stream.spec.source["layers"]), store.utterances)


@dataclass(frozen=True)
class StoredSSL:
    """The audio source of a re-coding (`extract.backend.AudioSource`): headers from the store's
    utterance records (no file is opened); the frames of the SSL stream ``source`` by row."""

    store: str
    source: str
    source_storage: str
    where: str = ""

    def fingerprint(self) -> dict[str, Any]:
        return {"ssl_from": self.source, "ssl_from_storage": self.source_storage}

    def probe(self, path: str, row: int) -> AudioInfo:
        record = _open_source(self.store, self.source).utterances.iloc[row]
        rate = int(record["sample_rate"])
        return AudioInfo(rate, int(round(float(record["duration"]) * rate)), int(record["channels"]))

    def load(self, path: str, row: int, sample_rate: int) -> torch.Tensor:
        raise AudioError(f"{path}: a re-coded SSL stream reads stream {self.source!r}, not the audio")

    def frames(self, row: int, layers: tuple[int, ...], start: int) -> np.ndarray:
        """float32 [F, len(layers), H]: utterance ``row``'s frames of the source, decoded; AudioError
        when the source has none or starts elsewhere than ``start`` (an SSL frame)."""
        src = _open_source(self.store, self.source)
        if src.starts[row] != start or src.stream.offsets[row + 1] == src.stream.offsets[row]:
            have = "no frames" if src.starts[row] < 0 else f"frames from frame {src.starts[row]}"
            raise AudioError(f"stream {self.source!r} has {have} of this utterance (expected from frame {start})")
        decoded = src.coding.decode(src.stream.utterance(row), *src.pca)
        return np.ascontiguousarray(decoded[:, [src.layers.index(layer) for layer in layers]], dtype=np.float32)


@dataclass(frozen=True)
class _PassThrough:
    """The 'model' of a re-coding: the loaded frames pass as they are; ``windows`` counts the
    windows the source's SSL front end ran, for the commit records."""

    window_seconds: float
    context_seconds: float

    def __call__(self, items: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(items)

    def windows(self, n_samples: int) -> list:
        return ssl_windows(n_samples, self.window_seconds, self.context_seconds)


@register_backend
@dataclass(frozen=True, kw_only=True)
class SSLRecodeBackend(SSLBackend):
    """The SSL back-end whose frames are the store's SSL stream ``audio.source`` re-coded (see the
    module docstring); ``audio`` is its :class:`StoredSSL`."""

    kind: ClassVar[str] = "ssl-recode"
    audio: StoredSSL

    def new_spec(self, store_attrs: dict) -> StreamSpec:
        spec = super().new_spec(store_attrs)
        recoded = {"stream": self.audio.source, "storage": self.audio.source_storage}
        return dataclasses.replace(spec, source={**spec.source, "recoded_from": recoded},
                                   about=f"{spec.about}, re-coded from stream {self.audio.source!r} "
                                         f"({self.audio.source_storage})")

    def note(self) -> str:
        return f"{super().note()}; re-coded from stream {self.audio.source!r} ({self.audio.source_storage}), " \
               "no SSL model run"

    def load(self, path: str, row: int, span: tuple[int, int]) -> torch.Tensor:
        return torch.from_numpy(self.audio.frames(row, self.layers, span[0] // SSL_HOP))

    def open(self) -> _PassThrough:
        source = _open_source(self.store, self.audio.source).stream.spec.source
        return _PassThrough(*recorded_windows(source))


def check_source(config) -> tuple[dict, tuple[int, ...]]:
    """The ``source`` record of ``config.ssl_from`` and the layers to keep (``--ssl-layers``,
    default the source's); StoreError in one line when it cannot be re-coded (see the module
    docstring). Nothing is written."""
    source = source_spec(config.out, config.ssl_from).source
    where = f"{config.out}: --ssl-from {config.ssl_from}"
    if config.ssl and config.ssl != source["model"]:
        raise StoreError(f"{where}: stream {config.ssl_from!r} was made by {source['model']}, not --ssl {config.ssl}")
    held = tuple(source["layers"])
    layers = parse_layers(config.ssl_layers, architecture(source["model"]).num_layers) if config.ssl_layers else held
    missing = [layer for layer in layers if layer not in held]
    if missing:
        raise StoreError(f"{where}: --ssl-layers {config.ssl_layers} asks for layer(s) {format_layers(tuple(missing))} "
                         f"that stream {config.ssl_from!r} does not hold (it holds {format_layers(held)})")
    return source, layers


def recode_backend(config, decode_threads: int, lease: str | None) -> SSLRecodeBackend:
    """The back-end of ``--ssl-from``: ``config.ssl_stream`` re-coded from ``config.ssl_from`` in
    ``config.ssl_storage`` (:func:`check_source` first)."""
    source, layers = check_source(config)
    weights = SSLWeights.from_dict(source["weights"])
    return SSLRecodeBackend(**driver_fields(config, decode_threads, lease), label=weights.label,
                            weights=source["weights"], layers=layers, device="cpu",
                            crop_seconds=source.get("crop_seconds"), crop_splits=tuple(source.get("crop_splits") or ()),
                            audio=StoredSSL(config.out, config.ssl_from, SSLStorage.from_source(source).name))
