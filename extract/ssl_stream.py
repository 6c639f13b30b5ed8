"""`pipeline extract --ssl MODEL`: add the frozen SSL model's layers to a store as a stream.

The stream (default name ``ssl``) lives in its own group ``streams/ssl/`` (`store.format`): float16
frames [frames, L, H] at 50 Hz (L chosen layers of H dimensions), its own offsets, and
``starts`` int64 [n_utts]: the first SSL frame the stream holds of each utterance, on the
utterance's own SSL frame grid (0 unless cropped; -1 where the utterance has no SSL frames).
Adding it never touches the codec's streams or the store's tables.

The path from file to stream: the file is decoded and mixed to mono exactly as for the codec
(`extract.audio.load_audio`), resampled to 16 kHz instead of 24 kHz (same torchaudio resampler),
cropped when asked (``--ssl-crop SECONDS``: the centre crop of each utterance of the crop splits,
its start on a 40 ms grid, :func:`extract.ssl.crop_start`), layer-normalised per utterance
(WavLM-Large's input normalisation) and run through the SSL model truncated to the last chosen
layer, in zero-padded batches with each utterance's length (equal to one-by-one to float rounding).

Work is cut into the store's work units as for an added codec stream (same resume: a unit is done
when its records are written, after its data; same parallelism through ``submit``; the same bad-input
records: a file that cannot be decoded, is longer than ``max_seconds`` or shorter than the SSL
model's 25 ms receptive field fails with its reason in ``streams/ssl/failures.parquet``; utterances
that already failed in the store are skipped).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import zarr

from common.lease import Lease
from common.provenance import device_label, provenance
from store import format as sf
from store.format import StoreFiles
from store.writer import COMPRESSORS, PartData, StoreError, create_stream, done_units, finish_stream, write_part

from .audio import AudioError, load_audio, probe, resampled_length
from .ssl import (
    SSL_CONTEXT_SECONDS,
    SSL_FRAME_RATE,
    SSL_HOP,
    SSL_RECEPTIVE_FIELD,
    SSL_SAMPLE_RATE,
    SSL_WINDOW_SECONDS,
    SSLWeights,
    architecture,
    count_used,
    crop_start,
    format_layers,
    front_end,
    parse_layers,
    resolve_weights,
)
from .unit import length_batches

STARTS = "starts"
CROP_SPLITS = ("train",)
"""Splits whose utterances are cropped by ``--ssl-crop`` (dev and eval are scored whole)."""
DEFAULT_LAYERS = 12


@dataclass(frozen=True)
class SSLStreamSettings:
    """What a worker needs to rebuild the SSL front end and write a unit of the stream."""

    store: str
    stream: str
    weights: dict
    layers: tuple[int, ...]
    device: str
    batch_seconds: float
    max_seconds: float
    crop_seconds: float | None
    crop_splits: tuple[str, ...]
    torch_threads: int | None
    lease: str | None = None
    """The token of the store's lease held by the run (`common.lease`), checked before writing."""

    @property
    def group(self) -> str:
        return sf.added_stream_group(self.stream)


@dataclass(frozen=True)
class SSLUnitTask:
    """``rows``: (plan row, audio path, split) to extract; ``skipped``: (row, reason) recorded as failed."""

    unit: int
    rows: tuple[tuple[int, str, str], ...]
    settings: SSLStreamSettings
    skipped: tuple[tuple[int, str], ...] = ()

    def run(self) -> dict:
        return run_ssl_unit(self)


def default_layers(model: str) -> str:
    """Layers 1-12 (the paper's), or all layers of a smaller model."""
    return f"1-{min(DEFAULT_LAYERS, architecture(model).num_layers)}"


@lru_cache(maxsize=2)
def _front_end(weights_key: tuple, layers: tuple[int, ...], device: str, torch_threads: int | None):
    if torch_threads:
        torch.set_num_threads(torch_threads)
    return front_end(SSLWeights(*weights_key), layers, device)


def front_end_for(settings: SSLStreamSettings):
    """The worker's SSL front end (built once per process and settings; its weights checked
    against the recorded sha256)."""
    w = SSLWeights.from_dict(settings.weights)
    return _front_end((w.model, w.source, w.sha256, w.origin, w.seed), settings.layers, settings.device,
                      settings.torch_threads)


def utterance_span(n_samples: int, split: str, crop_seconds: float | None,
                   crop_splits: tuple[str, ...]) -> tuple[int, int]:
    """(first sample, samples) of the 16 kHz audio the SSL model sees for one utterance."""
    if crop_seconds is None or split not in crop_splits:
        return 0, n_samples
    crop = int(round(crop_seconds * SSL_SAMPLE_RATE))
    start = crop_start(n_samples, crop)
    return start, min(crop, n_samples - start)


def run_ssl_unit(task: SSLUnitTask) -> dict:
    """Extract one unit of the SSL stream and commit it. Returns counts for the progress bar."""
    settings = task.settings
    records: dict[int, dict] = {row: {"row": row, "status": "failed", "stage": "store", "reason": reason}
                                for row, reason in task.skipped}
    spans: dict[int, tuple[int, int]] = {}
    paths = {row: path for row, path, _ in task.rows}
    for row, path, split in task.rows:
        try:
            info = probe(path)
        except AudioError as err:
            records[row] = {"row": row, "status": "failed", "stage": "audio", "reason": str(err)}
            continue
        records[row] = {"row": row, "sample_rate": info.sample_rate, "channels": info.channels,
                        "duration": info.duration}
        if info.duration > settings.max_seconds:
            records[row].update(status="failed", stage="audio",
                                reason=f"longer than max_seconds={settings.max_seconds:g} s ({info.duration:.1f} s)")
            continue
        start, n = utterance_span(resampled_length(info.frames, info.sample_rate, SSL_SAMPLE_RATE), split,
                                  settings.crop_seconds, settings.crop_splits)
        if n < SSL_RECEPTIVE_FIELD:
            records[row].update(status="failed", stage="ssl", reason=f"shorter than the SSL model's receptive "
                                f"field ({n} < {SSL_RECEPTIVE_FIELD} samples at 16 kHz)")
            continue
        spans[row] = (start, n)
    encoder = front_end_for(settings) if spans else None
    features: dict[int, np.ndarray] = {}
    budget = max(1, int(settings.batch_seconds * SSL_SAMPLE_RATE))
    for batch in length_batches({row: n for row, (_, n) in spans.items()}, budget):
        wavs, good = [], []
        for row in batch:
            try:
                wav = load_audio(paths[row], target_rate=SSL_SAMPLE_RATE)[0]
            except AudioError as err:
                records[row].update(status="failed", stage="audio", reason=str(err))
                continue
            start, n = spans[row]
            wavs.append(wav[start : start + n])
            good.append(row)
        if not good:
            continue
        for row, layers in zip(good, encoder(wavs)):
            features[row] = layers.to(torch.float16).numpy()
            records[row].update(status="ok", n_frames=len(features[row]), n_windows=len(encoder.windows(spans[row][1])))
    ordered = [records[row] for row in sorted(records)]
    ok_rows = [r["row"] for r in ordered if r["status"] == "ok"]
    for r in ordered:  # NaN is not JSON: the records are stored as zarr attributes
        if "duration" in r and not math.isfinite(r["duration"]):
            r["duration"] = None
    arrays = {settings.stream: [features[r] for r in ok_rows],
              STARTS: [np.array([spans[r][0] // SSL_HOP], dtype=np.int64) for r in ok_rows]}
    write_part(settings.store, PartData(unit=task.unit, records=ordered, arrays=arrays), settings.group, settings.lease)
    return {"unit": task.unit, "utterances": len(ordered), "failed": len(ordered) - len(ok_rows),
            "audio_seconds": float(sum(records[r].get("duration") or 0.0 for r in ok_rows))}


def _write_starts(url: str, settings: SSLStreamSettings, n_units: int, n_rows: int) -> None:
    """``streams/NAME/starts`` [n_utts] from the units' parts (before they are dropped)."""
    starts = np.full(n_rows, -1, dtype=np.int64)
    root = zarr.open_group(url, mode="r")
    for unit, records in sorted(done_units(url, n_units, settings.group).items()):
        ok = [r["row"] for r in records if r["status"] == "ok"]
        if ok:
            starts[ok] = root[f"{sf.part_name(unit, settings.group)}/{STARTS}"][...]
    zarr.open_group(url, mode="r+").create_array(f"{settings.group}/{STARTS}", data=starts, chunks=starts.shape,
                                                 compressors=COMPRESSORS, overwrite=True)


def _fingerprint(settings: SSLStreamSettings, unit_size: int) -> dict:
    return {"model": settings.weights["model"], "layers": list(settings.layers),
            "weights_sha256": settings.weights["sha256"], "crop_seconds": settings.crop_seconds,
            "crop_splits": list(settings.crop_splits), "unit_size": unit_size, "batch_seconds": settings.batch_seconds}


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


def add_ssl_stream(config, device: str, submit, log: Callable[[str], None], progress,
                   lease: Lease | None = None) -> tuple[int, SSLWeights]:
    """Add (or finish adding) the SSL stream ``config.ssl_stream`` to the finished store
    ``config.out`` (an `extract.run.ExtractConfig`); returns (units run, the weights). Nothing else
    in the store is touched. StoreError when the store already has that stream made otherwise.
    ``lease``: the store's lease held by the run; its token fences the workers' writes."""
    started = time.perf_counter()
    arch = architecture(config.ssl)
    layers = parse_layers(config.ssl_layers or default_layers(config.ssl), arch.num_layers)
    if config.ssl_crop is not None and config.ssl_crop * SSL_SAMPLE_RATE < SSL_RECEPTIVE_FIELD:
        raise ValueError(f"--ssl-crop must be at least {SSL_RECEPTIVE_FIELD / SSL_SAMPLE_RATE:g} s; got {config.ssl_crop}")
    files = StoreFiles(config.out)
    group = sf.added_stream_group(config.ssl_stream)
    stream_attrs = files.read_group_attrs(group) if files.exists(f"{group}/zarr.json") else None
    weights = resolve_weights(config.ssl, config.ssl_weights, max(layers), config.seed, config.download)
    settings = SSLStreamSettings(config.out, config.ssl_stream, weights.to_dict(), layers, device,
                                 float(config.batch_seconds), config.max_seconds, config.ssl_crop,
                                 CROP_SPLITS if config.ssl_crop else (), config.torch_threads,
                                 lease.token if lease is not None else None)
    fingerprint = _fingerprint(settings, config.unit_size)
    if stream_attrs is not None:
        stored = stream_attrs.get("config", {})
        differ = [k for k in fingerprint if stored.get(k) != fingerprint[k]]
        if differ:
            detail = ", ".join(f"{k}: stream has {stored.get(k)!r}, asked {fingerprint[k]!r}" for k in differ)
            raise StoreError(f"{config.out} already has a stream {config.ssl_stream!r} made otherwise ({detail}); "
                             "ask for the same settings, or name another stream with --set ssl_stream=NAME")
        if stream_attrs.get("state") == sf.STATE_COMPLETE:
            log(f"stream {config.ssl_stream!r} is already complete ({weights.label})")
            return 0, weights
        log(f"resuming the addition of stream {config.ssl_stream!r} to {config.out}")
    else:
        source = stream_source(weights, layers, config.ssl_crop, settings.crop_splits)
        about = f"transformer layers {format_layers(layers)} (outputs, 16 kHz input) of {weights.label}"
        spec = sf.added_stream_spec(config.ssl_stream, SSL_FRAME_RATE, "float16", (len(layers), arch.hidden),
                                    about, source)
        spec = dataclasses.replace(spec, tables=(f"{group}/{STARTS}",))
        create_stream(config.out, spec, {"config": fingerprint, "provenance": provenance(device_label(device))})
        log(f"adding stream {spec.describe()} to {config.out} ({weights.label}); its other streams are not touched")
        if not weights.trained:
            log(f"SSL weights: {weights.label}")
    table = files.read_table(sf.UTTERANCES)
    skip = {int(r): "extraction failed in this store" for r in np.flatnonzero(table["status"].to_numpy() != "ok")}
    n_units = -(-len(table) // config.unit_size)
    done = done_units(config.out, n_units, group)
    rows = list(zip(range(len(table)), table["path"].tolist(), table["split"].astype(str).tolist()))
    tasks = []
    for unit in range(n_units):
        if unit in done:
            continue
        chunk = rows[unit * config.unit_size : (unit + 1) * config.unit_size]
        tasks.append(SSLUnitTask(unit, tuple(r for r in chunk if r[0] not in skip), settings,
                                 tuple((r[0], skip[r[0]]) for r in chunk if r[0] in skip)))
    if done:
        log(f"{len(done)} of {n_units} SSL work units already done; running {len(tasks)}")
    results = submit(tasks) if submit is not None else map(run_ssl_unit, tasks)
    for result in results:
        if lease is not None:
            lease.check()  # another process took the store over: stop before finishing anything
        if progress is not None:
            progress(result)
    _write_starts(config.out, settings, n_units, len(table))
    records = finish_stream(config.out, config.ssl_stream, n_units, {"finished_by": provenance(device_label(device))})
    ok = (records["status"] == "ok").to_numpy()
    seconds = float(table.loc[ok, "duration"].sum())
    frame_bytes = len(layers) * arch.hidden * 2
    raw = int(records["n_frames"].sum()) * frame_bytes
    disk = files.size(group)
    failed = int((~ok).sum()) - len(skip)
    log(f"stream {config.ssl_stream!r} added in {time.perf_counter() - started:.1f} s: {int(ok.sum())} utterances"
        + (f", {failed} failed (streams/{config.ssl_stream}/failures.parquet)" if failed else "")
        + f"; {raw / max(seconds, 1e-9):,.0f} bytes per audio second uncompressed, {disk / max(seconds, 1e-9):,.0f} "
        f"on disk ({len(layers)} layers x {arch.hidden} x float16 at 50 Hz"
        + (f"; train utterances cropped to {config.ssl_crop:g} s" if config.ssl_crop else "") + ")")
    return len(tasks), weights


def bytes_per_second(layers: int, hidden: int, crop_share: float = 1.0) -> float:
    """Uncompressed bytes per audio second of a stream of ``layers`` x ``hidden`` float16 at 50 Hz,
    times the share of audio kept (``--ssl-crop``)."""
    return SSL_FRAME_RATE * layers * hidden * 2 * crop_share
