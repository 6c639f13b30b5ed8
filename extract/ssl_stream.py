"""`pipeline extract --ssl MODEL`: add the frozen SSL model's layers to a store as a stream.

The stream (default name ``ssl``) lives in its own group ``streams/ssl/`` (`store.format`): frames
[frames, L, H] at 50 Hz (L chosen layers of H dimensions) stored as ``--ssl-storage`` says (int8 with
scales unless asked otherwise: :func:`chosen_storage`, `store.sslstorage`), its own offsets, and
``starts`` int64 [n_utts]: the first SSL frame the stream holds of each utterance, on the
utterance's own SSL frame grid (0 unless cropped; -1 where the utterance has no SSL frames).
Adding it never touches the codec's streams or the store's tables.

The path from file to stream: the file is decoded and mixed to mono exactly as for the codec
(`extract.audio.load_audio`), resampled to 16 kHz instead of 24 kHz (same torchaudio resampler),
cropped when asked (``--ssl-crop SECONDS``: the centre crop of each utterance of the crop splits,
its start on a 40 ms grid, :func:`extract.ssl.crop_start`), layer-normalised per utterance
(WavLM-Large's input normalisation) and run through the SSL model truncated to the last chosen
layer, in zero-padded batches with each utterance's length (equal to one-by-one to float rounding).

The stream is a back-end of the extraction driver (:class:`SSLBackend`, `extract.backend`), run
by the same driver as an added codec stream (`extract.driver.add_stream`: the same unit planning,
fingerprint check, resume, parallelism through ``submit``, lease and commit records; the same
bad-input records: a file that cannot be decoded, is longer than ``max_seconds`` or shorter than the
SSL model's 25 ms receptive field fails with its reason in ``streams/ssl/failures.parquet``;
utterances that already failed in the store are skipped).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch
import zarr

from common.lease import check_token
from store import format as sf
from store.format import StreamSpec
from store.sslstorage import PCA_BASIS, PCA_MEAN, STARTS, Moments, SSLStorage
from store.writer import COMPRESSORS

from .audio import AudioInfo, resampled_length
from .backend import Arrays, StreamBackend, register_backend
from .ssl import (
    SSL_CONTEXT_SECONDS,
    SSL_FRAME_RATE,
    SSL_HOP,
    SSL_RECEPTIVE_FIELD,
    SSL_SAMPLE_RATE,
    SSL_WINDOW_SECONDS,
    SSLFrontEnd,
    SSLWeights,
    architecture,
    count_used,
    crop_start,
    format_layers,
    front_end,
    parse_layers,
    resolve_weights,
)

CROP_SPLITS = ("train",)
"""Splits whose utterances are cropped by ``--ssl-crop`` (dev and eval are scored whole)."""
DEFAULT_LAYERS = 12
DEFAULT_STORAGE = "int8"
"""The storage of a new SSL stream when ``--ssl-storage`` is not given (issue 21's rule, BENCHMARKS
section 18: the smallest storage whose paired EER change against float16 includes zero on dev and
eval and whose frames keep every layer's cosine to float16 at 0.999 or above; half float16's bytes)."""
FIT_UTTERANCES = 64
"""Train utterances (evenly spread over the split) whose frames fit a ``pca:K`` storage's basis."""
FIT_FRAMES = 20_000
"""At most this many frames of them (about 400 s of audio)."""


def default_layers(model: str) -> str:
    """Layers 1-12 (the paper's), or all layers of a smaller model."""
    return f"1-{min(DEFAULT_LAYERS, architecture(model).num_layers)}"


@lru_cache(maxsize=2)
def _front_end(weights_key: tuple, layers: tuple[int, ...], device: str, torch_threads: int | None) -> SSLFrontEnd:
    if torch_threads:
        torch.set_num_threads(torch_threads)
    return front_end(SSLWeights(*weights_key), layers, device)


@lru_cache(maxsize=2)
def _pca_arrays(store: str, group: str) -> tuple[np.ndarray, np.ndarray]:
    """The (mean, basis) of a ``pca:K`` stream, read once per process."""
    root = zarr.open_group(store, mode="r")
    return np.asarray(root[f"{group}/{PCA_MEAN}"][...]), np.asarray(root[f"{group}/{PCA_BASIS}"][...])


def utterance_span(n_samples: int, split: str, crop_seconds: float | None,
                   crop_splits: tuple[str, ...]) -> tuple[int, int]:
    """(first sample, samples) of the 16 kHz audio the SSL model sees for one utterance."""
    if crop_seconds is None or split not in crop_splits:
        return 0, n_samples
    crop = int(round(crop_seconds * SSL_SAMPLE_RATE))
    start = crop_start(n_samples, crop)
    return start, min(crop, n_samples - start)


def stream_source(weights: SSLWeights, layers: tuple[int, ...], crop_seconds: float | None,
                  crop_splits: tuple[str, ...]) -> dict:
    """The stream spec's ``source``: what made the features, for checkpoints and reports."""
    arch = architecture(weights.model)
    return {
        "kind": "ssl", "model": weights.model, "title": arch.title, "layers": list(layers),
        "hidden": arch.hidden, "sample_rate": SSL_SAMPLE_RATE, "hop": SSL_HOP,
        "receptive_field": SSL_RECEPTIVE_FIELD, "normalize_waveform": arch.normalize_waveform,
        "window_seconds": SSL_WINDOW_SECONDS, "context_seconds": SSL_CONTEXT_SECONDS,
        "crop_seconds": crop_seconds, "crop_splits": list(crop_splits) if crop_seconds else [],
        "parameters_used": count_used(arch, max(layers)), "parameters_total": count_used(arch, arch.num_layers),
        "weights": weights.to_dict(),
    }


@register_backend
@dataclass(frozen=True, kw_only=True)
class SSLBackend(StreamBackend):
    """What a worker needs to rebuild the SSL front end and write a unit of the stream ``stream``:
    the weights' record (`extract.ssl.SSLWeights.to_dict`), the 1-based ``layers``, the device, and
    the centre crop of the ``crop_splits``' utterances (``crop_seconds``, None: uncropped)."""

    kind: ClassVar[str] = "ssl"
    sample_rate: ClassVar[int] = SSL_SAMPLE_RATE
    utterance_arrays: ClassVar[tuple[str, ...]] = (STARTS,)
    rename_hint: ClassVar[str] = "name another stream with --set ssl_stream=NAME"

    stream: str
    weights: dict
    layers: tuple[int, ...]
    device: str
    crop_seconds: float | None = None
    crop_splits: tuple[str, ...] = ()
    storage: str = "float16"
    fingerprint_defaults: ClassVar[dict] = {"storage": "float16"}  # streams made before --ssl-storage

    @property
    def coding(self) -> SSLStorage:
        """The stream's storage (`store.sslstorage`)."""
        return SSLStorage.parse(self.storage)

    def frame_arrays(self) -> tuple[str, ...]:
        return (self.stream,)

    def new_spec(self, store_attrs: dict) -> StreamSpec:
        weights = SSLWeights.from_dict(self.weights)
        about = f"transformer layers {format_layers(self.layers)} (outputs, 16 kHz input) of {weights.label}"
        coding, hidden = self.coding, architecture(weights.model).hidden
        coding.check(hidden)
        source = {**stream_source(weights, self.layers, self.crop_seconds, self.crop_splits), "storage": coding.to_attrs()}
        about += "" if coding.plain else f", stored as {coding.name}"
        spec = sf.added_stream_spec(self.stream, SSL_FRAME_RATE, coding.dtype, coding.frame_shape(len(self.layers), hidden),
                                    about, source, group=self.group or None)
        pca = tuple(f"{self.group}/{name}" for name in (PCA_MEAN, PCA_BASIS)) if coding.components else ()
        return dataclasses.replace(spec, tables=(f"{self.group}/{STARTS}", *pca))

    def fingerprint(self) -> dict[str, Any]:
        return {"model": self.weights["model"], "layers": list(self.layers), "weights_sha256": self.weights["sha256"],
                "crop_seconds": self.crop_seconds, "crop_splits": list(self.crop_splits),
                "batch_seconds": self.batch_seconds, "storage": self.coding.name}

    def note(self) -> str:
        arch = architecture(self.weights["model"])
        crop = f"; train utterances cropped to {self.crop_seconds:g} s" if self.crop_seconds else ""
        stored = "" if self.coding.plain else f", stored as {self.coding.name}"
        return f"{len(self.layers)} layers x {arch.hidden} x float16 at 50 Hz{stored}{crop}"

    def prepare(self, rows: list[tuple[int, str, str]], skip: dict[int, str], log) -> None:
        """A ``pca:K`` storage: fit its basis on a sample of the train split's frames (every split's
        when the store has no train split) and write it into the stream's group, unless there; only while
        the run's lease (``lease``, `common.lease.check_token`) is still held."""
        coding = self.coding
        if not coding.components or PCA_BASIS in zarr.open_group(f"{self.store}", mode="r")[self.group]:
            return
        usable = [r for r in rows if r[0] not in skip]
        pool = [r for r in usable if r[2] == "train"] or usable
        picks = [pool[i] for i in np.unique(np.linspace(0, len(pool) - 1, min(FIT_UTTERANCES, len(pool))).astype(int))]
        model, moments = self.open(), Moments()
        for row, path, split in picks:
            span = self.span(self.audio.probe(path, row), split)
            if isinstance(span[0], str):
                continue
            moments.add(model([self.load(path, row, span)])[0].numpy())
            if moments.count >= FIT_FRAMES:
                break
        mean, basis, kept = moments.pca(coding.components)
        check_token(self.store, self.lease)  # LeaseLost (one line) when another run holds the store now: write nothing
        group = zarr.open_group(self.store, mode="r+")[self.group]
        group.create_array(PCA_MEAN, data=mean, chunks=mean.shape, compressors=COMPRESSORS, overwrite=True)
        group.create_array(PCA_BASIS, data=basis, chunks=basis.shape, compressors=COMPRESSORS, overwrite=True)
        group.attrs["pca_fit"] = {"frames": int(moments.count), "split": pool[0][2] if pool else None,
                                  "variance_kept": [round(float(k), 6) for k in kept]}
        log(f"SSL storage {coding.name}: basis fitted on {moments.count} frames of the {pool[0][2]} split; "
            f"variance kept per layer {min(kept):.4f}-{max(kept):.4f}")

    def span(self, info: AudioInfo, split: str) -> tuple[int, int] | tuple[str, str]:
        start, n = utterance_span(resampled_length(info.frames, info.sample_rate, SSL_SAMPLE_RATE), split,
                                  self.crop_seconds, self.crop_splits)
        if n < SSL_RECEPTIVE_FIELD:
            return "ssl", f"shorter than the SSL model's receptive field ({n} < {SSL_RECEPTIVE_FIELD} samples at 16 kHz)"
        return start, n

    def load(self, path: str, row: int, span: tuple[int, int]) -> torch.Tensor:
        start, n = span
        return self.audio.load(path, row, self.sample_rate)[0][start : start + n]

    def open(self) -> SSLFrontEnd:
        """The worker's SSL front end (built once per process and settings; its weights checked
        against the recorded sha256)."""
        w = SSLWeights.from_dict(self.weights)
        return _front_end((w.model, w.source, w.sha256, w.origin, w.seed), self.layers, self.device, self.torch_threads)

    def compute(self, model: SSLFrontEnd, items: Sequence[torch.Tensor],
                spans: Sequence[tuple[int, int]]) -> list[tuple[Arrays, int]]:
        out, coding = [], self.coding
        pca = _pca_arrays(self.store, self.group) if coding.components else (None, None)
        for (start, n), layers in zip(spans, model(list(items))):
            frames = layers.to(torch.float16).numpy() if coding.plain else coding.encode(layers.numpy(), *pca)
            arrays = {self.stream: frames, STARTS: np.array([start // SSL_HOP], dtype=np.int64)}
            out.append((arrays, len(model.windows(n))))
        return out


def ssl_backend(config, device: str, decode_threads: int, lease: str | None) -> SSLBackend:
    """The SSL back-end an `extract.run.ExtractConfig` asks for (``config.ssl`` and its ``ssl_*``
    settings); its weights resolved (`extract.ssl.resolve_weights`). With ``config.ssl_from``: the
    stream re-coded from that stream of the store (`extract.ssl_recode`), no model run."""
    if config.ssl_from:
        from .ssl_recode import recode_backend  # noqa: PLC0415 - it builds on this module
        return recode_backend(config, decode_threads, lease)
    arch = architecture(config.ssl)
    layers = parse_layers(config.ssl_layers or default_layers(config.ssl), arch.num_layers)
    if config.ssl_crop is not None and config.ssl_crop * SSL_SAMPLE_RATE < SSL_RECEPTIVE_FIELD:
        raise ValueError(f"--ssl-crop must be at least {SSL_RECEPTIVE_FIELD / SSL_SAMPLE_RATE:g} s; got {config.ssl_crop}")
    weights = resolve_weights(config.ssl, config.ssl_weights, max(layers), config.seed, config.download)
    return SSLBackend(**driver_fields(config, decode_threads, lease), label=weights.label, weights=weights.to_dict(),
                      layers=layers, device=device, crop_seconds=config.ssl_crop,
                      crop_splits=CROP_SPLITS if config.ssl_crop else ())


def chosen_storage(url: str, stream: str, asked: str | None) -> str:
    """The storage name of the SSL stream ``stream`` of the store at ``url``: ``asked`` (``--ssl-storage``)
    when given; otherwise the storage of that stream when the store already has it (re-running or
    resuming the same command keeps a stream's storage: float16 when it records none, as streams made
    before the option), else :data:`DEFAULT_STORAGE`."""
    if asked is not None:
        return SSLStorage.parse(asked).name
    group = sf.added_stream_group(stream)
    files = sf.StoreFiles(url)
    if files.exists(f"{group}/zarr.json"):
        recorded = files.read_group_attrs(group).get("config")
        if recorded is not None:
            return SSLStorage.parse(recorded.get("storage")).name
    return DEFAULT_STORAGE


def driver_fields(config, decode_threads: int, lease: str | None) -> dict[str, Any]:
    """The fields of the SSL back-end of ``config`` that do not depend on where its frames come
    from: the driver's, the stream's name and its storage (:func:`chosen_storage`)."""
    return dict(store=config.out, group=sf.added_stream_group(config.ssl_stream), lease=lease,
                batch_seconds=float(config.batch_seconds), max_seconds=config.max_seconds,
                torch_threads=config.torch_threads, decode_threads=decode_threads, stream=config.ssl_stream,
                storage=chosen_storage(config.out, config.ssl_stream, config.ssl_storage))


def bytes_per_second(layers: int, hidden: int, crop_share: float = 1.0) -> float:
    """Uncompressed bytes per audio second of a stream of ``layers`` x ``hidden`` float16 at 50 Hz,
    times the share of audio kept (``--ssl-crop``)."""
    return SSL_FRAME_RATE * layers * hidden * 2 * crop_share
