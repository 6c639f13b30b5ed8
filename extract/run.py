"""`pipeline extract`: dataset -> plan -> work units on dask -> finished feature store.

The plan (the dataset table in a fixed order, cut into units of ``unit_size`` utterances) is
written into the store before any audio is encoded, so a re-run after a kill finds it, checks that
it asks for the same extraction, and runs only the units that are not committed yet. The result
does not depend on how many workers ran the units, nor on the order they finished in.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

from common.lease import Lease
from common.provenance import device_label, provenance
from common.weights import UNTRAINED, WeightSource, file_sha256
from store import format as sf
from store.format import StoreFiles
from store.reader import FeatureStore
from store.writer import StoreError, create_store, done_units, finish_store

from . import calibration
from .calibration import draw_sample
from .codec import (
    CODEBOOK_SIZE,
    CODEC_NAME,
    DIM,
    FRAME_RATE,
    WeightsError,
    WeightsInfo,
    build_untrained,
    codec_codebooks,
    n_quantizers,
    pretrained_file,
    read_weights,
    untrained_seconds,
)
from .codec_stream import CodecBackend
from .datasets import get_dataset
from .driver import Submit, add_stream, differences, n_units, plan_units, run_tasks


@dataclass
class ExtractConfig:
    """Settings of one extraction. Those in FINGERPRINT must match when a store is resumed."""

    dataset: str
    root: str
    out: str
    splits: list[str] | None = None
    bandwidth: float = 6.0
    weights: str = "pretrained"  # "pretrained" | "untrained" | path of a state dict
    latent: bool = True
    energy: bool = True
    device: str = "auto"
    batch_seconds: float | None = None  # None: 8 on CPUs, 240 on CUDA (see BATCH_SECONDS)
    unit_size: int | None = None  # None: 32 on CPUs, 256 on CUDA (see UNIT_SIZE)
    window_seconds: float = 60.0
    min_batch_seconds: float = 0.5
    max_seconds: float = 3600.0
    seed: int = 0
    kmeans_frames: int = 8192
    kmeans_iters: int = 50  # EnCodec's
    lsuv: bool = True  # untrained codec: variance-normalise the random encoder first (extract.lsuv)
    lsuv_seconds: float = 16.0  # untrained codec: corpus audio for that normalisation
    torch_threads: int | None = None
    decode_threads: int | None = None  # None: 1 on CPUs (the encoder has the cores), cores - 1 on CUDA
    download: bool = True
    # the SSL stream of the paper's full system (extract.ssl_stream): model, 1-based layers (None:
    # 1-12), weights (pretrained | untrained | FILE), centre crop of train utterances, stream name
    ssl: str | None = None
    ssl_layers: str | None = None
    ssl_weights: str = "pretrained"
    ssl_crop: float | None = None
    ssl_stream: str = "ssl"
    # dataset options (a dataset's `options`): MLAAD's second root for its bona fide files, and the
    # split it makes on request (model | language)
    bonafide_root: str | None = None
    split_by: str | None = None
    # float16 | int8 | pca:K | pca:K:int8 (store.sslstorage); None: int8 for a new stream, an existing
    # stream's own storage when resuming it (extract.ssl_stream.chosen_storage)
    ssl_storage: str | None = None
    # re-code this finished SSL stream of the store into ssl_stream with ssl_storage, no model run
    # (extract.ssl_recode); it keeps the source's model, weights and crop
    ssl_from: str | None = None
    # augmented views (extract.views): a views file, and the names of its views to extract (None: all)
    views: str | None = None
    views_only: str | None = None

    def __post_init__(self):
        n_quantizers(self.bandwidth)  # raises WeightsError naming the valid bandwidths
        if self.views_only and not self.views:
            raise ValueError("views_only names views of a views file: give the file too (--views FILE)")
        if self.ssl_from and self.ssl_from == self.ssl_stream:
            raise ValueError(f"--ssl-from {self.ssl_from}: the re-coded stream needs another name "
                             "(--set ssl_stream=NAME)")
        if self.ssl_from and (self.views or self.ssl_crop is not None):
            raise ValueError(f"--ssl-from {self.ssl_from} re-codes a stream of the store as it is: it takes no "
                             f"{'--views' if self.views else '--ssl-crop'} (the source's crop is kept)")
        if self.kmeans_frames < CODEBOOK_SIZE:
            raise ValueError(f"kmeans_frames must be at least the codebook size ({CODEBOOK_SIZE}); got {self.kmeans_frames}")
        if self.batch_seconds is not None and self.batch_seconds < 0:
            raise ValueError(f"batch_seconds must be 0 (one utterance at a time) or more; got {self.batch_seconds}")
        for name in ("window_seconds", "max_seconds", "unit_size", "kmeans_iters", "lsuv_seconds", "decode_threads"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")

    FINGERPRINT = ("dataset", "root", "splits", "bandwidth", "unit_size", "batch_seconds", "window_seconds", "min_batch_seconds", "max_seconds")
    """The settings that define a store's content. ``latent`` and ``energy`` are not among them: a
    stream a finished store lacks is added to it by a later run that asks for it."""


BATCH_SECONDS = {"cpu": 8.0, "cuda": 240.0}
"""Default padded audio seconds per encoder batch. On CPUs large batches do not pay: tensors of
hundreds of MB are mmap-ed and page-faulted afresh each time (bench/RESULTS_extract.md). On a GPU
large batches amortise the LSTM's sequential time steps and the kernel launches."""
UNIT_SIZE = {"cpu": 32, "cuda": 256}
"""Default utterances per work unit. A unit is sorted by length and cut into batches, so on a GPU,
where batches hold many utterances, units are larger: batches of similar lengths, little padding."""


@dataclass
class ExtractResult:
    store: str
    table: pd.DataFrame
    failures: pd.DataFrame
    weights: WeightsInfo
    resumed_units: int = 0
    ran_units: int = 0
    wall_seconds: float = 0.0
    added_streams: list[str] = field(default_factory=list)
    ssl_weights: str = ""
    views: list[str] = field(default_factory=list)  # views that ran units


def package_versions() -> dict[str, str]:
    names = ["rvq-antispoof", "torch", "torchaudio", "encodec", "zarr", "dask", "distributed", "numpy", "soundfile"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")
    return device


def _codec_for_new_store(config: ExtractConfig, plan: pd.DataFrame, n_q: int, log: Callable[[str], None]):
    """Build the codec the config asks for; return (model, weights bytes, provenance, calibration
    record or None). The untrained codec is calibrated on a balanced sample of the training split
    (`extract.calibration`)."""
    source = WeightSource.parse(config.weights)
    if source.untrained:
        sample = draw_sample(plan, config.seed, untrained_seconds(config.kmeans_frames, config.lsuv, config.lsuv_seconds),
                             config.max_seconds, config.window_seconds)
        log(f"untrained codec: seed {config.seed}, {'LSUV, ' if config.lsuv else ''}k-means on up to {config.kmeans_frames} "
            f"frames of {calibration.describe(sample.record)}")
        model, data, info = build_untrained(
            sample.clips, n_q, seed=config.seed, kmeans_frames=config.kmeans_frames, kmeans_iters=config.kmeans_iters,
            lsuv=config.lsuv, lsuv_seconds=config.lsuv_seconds, dataset=config.dataset,
            sample=calibration.describe(sample.record),
        )
        return model, data, info, {**sample.record, "codebooks": calibration.usage(model, n_q)}
    path, kind = source.locate(pretrained_file, config.download, WeightsError, "codec weights")
    return (*read_weights(path, source=kind), None)


def _fingerprint(config: ExtractConfig) -> dict:
    values = asdict(config)
    return {key: values[key] for key in ExtractConfig.FINGERPRINT}


def _check_resume(files: StoreFiles, attrs: dict, config: ExtractConfig) -> WeightsInfo:
    if attrs.get("format") != sf.FORMAT:
        raise StoreError(f"{files.url} exists and is not a feature store of this tool; choose another --out")
    if attrs.get("format_version", 0) > sf.FORMAT_VERSION:
        raise StoreError(f"{files.url} has store format version {attrs['format_version']}, newer than this tool's "
                         f"{sf.FORMAT_VERSION}; upgrade rvq-antispoof")
    detail = differences(attrs.get("config", {}), _fingerprint(config))
    if detail:
        raise StoreError(f"{files.url} was made with other settings ({detail}); use another --out or the same settings")
    info = WeightsInfo(**{k: attrs["weights"][k] for k in ("source", "sha256", "trained", "origin")})
    source = WeightSource.parse(config.weights)
    if source.untrained and info.source != UNTRAINED:
        raise StoreError(f"{files.url} holds {info.source} codec weights, but --weights untrained was asked for")
    if source.file and file_sha256(source.path) != info.sha256:
        raise StoreError(f"{config.weights}: sha256 differs from the weights {files.url} was started with")
    return info


def _requested_streams(config: ExtractConfig) -> list[str]:
    return [sf.CODES] + [name for name, on in ((sf.LATENT, config.latent), (sf.ENERGY, config.energy)) if on]


def codec_backend(config: ExtractConfig, weights: WeightsInfo, device: str, streams: tuple[str, ...],
                  group: str = "", lease: Lease | None = None) -> CodecBackend:
    """The codec's back-end for ``streams`` of the extraction ``config`` (its settings resolved)."""
    return CodecBackend(
        store=config.out,
        group=group,
        lease=lease.token if lease is not None else None,
        batch_seconds=config.batch_seconds,
        max_seconds=config.max_seconds,
        torch_threads=config.torch_threads,
        decode_threads=config.decode_threads or _default_decode_threads(device),
        label=weights.label,
        weights_sha256=weights.sha256,
        bandwidth=config.bandwidth,
        device=device,
        window_seconds=config.window_seconds,
        min_batch_seconds=config.min_batch_seconds,
        streams=streams,
    )


def _default_decode_threads(device: str) -> int:
    return max(1, (os.cpu_count() or 2) - 1) if device.startswith("cuda") else 1


def extract(
    config: ExtractConfig,
    submit: Submit | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[dict], None] | None = None,
) -> ExtractResult:
    """Run (or resume) an extraction. ``submit`` runs tasks and yields their results as they finish
    (e.g. :func:`extract.unit.run_units` on slices of them through a dask client's map +
    as_completed); None runs them in this process, in order, as one pipeline
    (:func:`extract.unit.iter_units`).

    A new store gets the requested streams (codes, and latent / energy when asked). On an existing
    store the settings that define its content must be the same; an unfinished extraction is
    resumed, and a requested stream the finished store lacks is added (`extract.driver.add_stream`,
    which also adds the SSL stream that ``ssl`` asks for).

    The run holds the store's lease (`common.lease`) from start to end: a second run on the same
    store is refused (LeaseHeld, naming this one), and the lease of a killed run is taken over."""
    with Lease(config.out, "store", log=log) as lease:
        return _extract(config, submit, log, progress, lease)


def _stored_attrs(files: StoreFiles) -> dict | None:
    """The store's attributes; None when there is no store yet, or only an unfinished creation
    (killed before its attributes were written: it is made again)."""
    if not files.exists():
        return None
    try:
        attrs = files.read_group_attrs()
    except ValueError as err:
        raise StoreError(f"{files.path('zarr.json')}: the store's attributes are not readable ({err}); "
                         "run `pipeline verify` on it, or extract into another --out") from None
    return attrs if attrs.get("format") or attrs.get("state") else None


def _extract(config: ExtractConfig, submit, log, progress, lease: Lease) -> ExtractResult:
    started = time.perf_counter()
    n_q = n_quantizers(config.bandwidth)
    device = resolve_device(config.device)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if config.batch_seconds is None:  # resolved before the resume check, which compares them
        config.batch_seconds = BATCH_SECONDS[kind]
    if config.unit_size is None:
        config.unit_size = UNIT_SIZE[kind]
    config.root = str(Path(config.root).resolve()) if "://" not in config.root else config.root
    files = StoreFiles(config.out)

    if config.ssl_from:  # its source is checked before any work
        from .ssl_recode import check_source  # noqa: PLC0415
        check_source(config)
    views = None
    if config.views:  # the whole views file is checked before any audio is read
        from .views import plan_views  # noqa: PLC0415
        views = plan_views(config.views, config.views_only, config.out, config.ssl)
    dataset = get_dataset(config.dataset)
    options = {name: getattr(config, name) for name in dataset.options if getattr(config, name) is not None}
    unused = [name for name in ("bonafide_root", "split_by") if getattr(config, name) is not None and name not in options]
    if unused:
        raise StoreError(f"dataset {config.dataset!r} takes no setting {', '.join(unused)}")
    loaded = dataset.load(Path(config.root), config.splits, **options)
    log(f"{loaded.description}: {len(loaded.table)} utterances, {len(loaded.problems)} protocol problems")

    ran = resumed = 0
    attrs = _stored_attrs(files)
    if attrs is not None:
        weights = _check_resume(files, attrs, config)
    if attrs is None or attrs.get("state") != sf.STATE_COMPLETE:
        if attrs is not None:
            plan = files.read_table(sf.PLAN)
            log(f"resuming {config.out} ({weights.label})")
        else:
            plan = loaded.table.reset_index(drop=True)
            if plan.empty:
                raise StoreError(f"{config.root}: no usable utterances in {config.dataset}")
            weights = _create(config, plan, loaded, n_q, device, log)
        backend = codec_backend(config, weights, device, tuple(sf.stream_specs(files.read_group_attrs())), "", lease)
        units = n_units(len(plan), config.unit_size)
        done = done_units(config.out, units)
        rows = list(zip(range(len(plan)), plan["path"].tolist(), plan["split"].astype(str).tolist()))
        tasks = plan_units(backend, rows, config.unit_size, done)
        if done:
            log(f"{len(done)} of {units} work units already done; running {len(tasks)}")
        run_tasks(tasks, submit, progress, lease)
        lease.check()
        finish_store(config.out, units, {"weights": weights.label}, {"finished_by": provenance(device_label(device))})
        ran, resumed = len(tasks), len(done)
    else:
        files.remove(sf.PARTS)  # left over if a finish was killed after it marked the store complete
        files.remove(sf.PLAN)
        files.remove(sf.PROBLEMS)
    have = FeatureStore(config.out).streams
    added = [name for name in _requested_streams(config) if name not in have]
    for name in added:
        backend = codec_backend(config, weights, device, (name,), sf.added_stream_group(name), lease)
        ran += add_stream(backend, config.unit_size, device, submit, log, progress, lease)
    ssl_label = ""
    if config.ssl or config.ssl_from:  # the SSL stream of the paper's full system, added like the others
        from .ssl_stream import ssl_backend  # noqa: PLC0415
        backend = ssl_backend(config, device, config.decode_threads or _default_decode_threads(device),
                              lease.token if lease is not None else None)
        ssl_ran = add_stream(backend, config.unit_size, device, submit, log, progress, lease)
        ran, ssl_label = ran + ssl_ran, backend.label
        added += [config.ssl_stream] if ssl_ran else []
    view_names: list[str] = []
    if views:
        from .views import extract_views  # noqa: PLC0415
        view_ran, view_names = extract_views(config, views, weights, device, submit, log, progress, lease)
        ran += view_ran
    if attrs is not None and attrs.get("state") == sf.STATE_COMPLETE and not added and not view_names:
        log(f"{config.out} is already complete; nothing to do")
    return ExtractResult(
        config.out,
        files.read_table(sf.UTTERANCES),
        files.read_table(sf.FAILURES),
        weights,
        resumed_units=resumed,
        ran_units=ran,
        wall_seconds=time.perf_counter() - started,
        added_streams=added,
        ssl_weights=ssl_label,
        views=view_names,
    )


def _create(config: ExtractConfig, plan: pd.DataFrame, loaded, n_q: int, device: str, log) -> WeightsInfo:
    """Create the store: build the codec, lay down attributes, plan, codebooks and weights."""
    model, weights_bytes, weights, calibrated = _codec_for_new_store(config, plan, n_q, log)
    codebooks = codec_codebooks(model, n_q)
    problems = pd.DataFrame([asdict(p) for p in loaded.problems], columns=list(sf.FAILURE_COLUMNS))
    codec = {
        "name": CODEC_NAME,
        "sample_rate": model.sample_rate,
        "frame_rate": FRAME_RATE,
        "n_q": n_q,
        "bandwidth": config.bandwidth,
        "codebook_size": CODEBOOK_SIZE,
        "dim": DIM,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    attrs = {
        "codec": codec,
        "weights": {**weights.to_dict(), "file": sf.WEIGHTS, **({"calibration": calibrated} if calibrated else {})},
        "dataset": {"name": config.dataset, "root": config.root, "splits": sorted(plan["split"].unique().tolist()),
                    "description": loaded.description, "score_format": get_dataset(config.dataset).score_format,
                    **loaded.attrs},
        "config": asdict(config),
        "versions": package_versions(),
        "provenance": provenance(device_label(device)),
    }
    streams = sf.codec_stream_specs(codec, config.latent, config.energy)
    create_store(config.out, attrs, plan, problems, streams, {sf.CODEBOOKS: codebooks}, weights_bytes)
    log(f"created {config.out} ({weights.label}); streams {', '.join(s.describe() for s in streams)}")
    return weights
