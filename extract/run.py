"""`pipeline extract`: dataset -> plan -> work units on dask -> finished feature store.

The plan (the dataset table in a fixed order, cut into units of ``unit_size`` utterances) is
written into the store before any audio is encoded, so a re-run after a kill finds it, checks that
it asks for the same extraction, and runs only the units that are not committed yet. The result
does not depend on how many workers ran the units, nor on the order they finished in.
"""

from __future__ import annotations

import hashlib
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr

from . import storeformat as sf
from .audio import AudioError, load_audio
from .codec import (
    CODEC_NAME,
    CODEBOOK_SIZE,
    DIM,
    FRAME_RATE,
    WeightsInfo,
    build_untrained,
    n_quantizers,
    pretrained_file,
    read_weights,
)
from store.provenance import device_label, provenance

from .datasets import get_dataset
from .store import StoreError, create_store, done_units, finish_store
from .storeformat import StoreFiles
from .unit import EncoderSettings, UnitTask, run_unit


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
    device: str = "auto"
    batch_seconds: float | None = None  # None: 8 on CPUs, 120 on CUDA (see BATCH_SECONDS)
    unit_size: int = 32
    window_seconds: float = 60.0
    min_batch_seconds: float = 0.5
    max_seconds: float = 3600.0
    seed: int = 0
    kmeans_frames: int = 8192
    kmeans_iters: int = 50  # EnCodec's
    lsuv: bool = True  # untrained codec: variance-normalise the random encoder first (extract.lsuv)
    lsuv_seconds: float = 16.0  # untrained codec: corpus audio for that normalisation
    torch_threads: int | None = None
    download: bool = True

    def __post_init__(self):
        n_quantizers(self.bandwidth)  # raises WeightsError naming the valid bandwidths
        if self.kmeans_frames < CODEBOOK_SIZE:
            raise ValueError(f"kmeans_frames must be at least the codebook size ({CODEBOOK_SIZE}); got {self.kmeans_frames}")
        if self.batch_seconds is not None and self.batch_seconds < 0:
            raise ValueError(f"batch_seconds must be 0 (one utterance at a time) or more; got {self.batch_seconds}")
        for name in ("window_seconds", "max_seconds", "unit_size", "kmeans_iters", "lsuv_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")

    FINGERPRINT = ("dataset", "root", "splits", "bandwidth", "latent", "unit_size", "batch_seconds", "window_seconds", "min_batch_seconds", "max_seconds")


BATCH_SECONDS = {"cpu": 8.0, "cuda": 120.0}
"""Default padded audio seconds per encoder batch. On CPUs large batches do not pay: tensors of
hundreds of MB are mmap-ed and page-faulted afresh each time (bench/RESULTS_extract.md)."""


@dataclass
class ExtractResult:
    store: str
    table: pd.DataFrame
    failures: pd.DataFrame
    weights: WeightsInfo
    resumed_units: int = 0
    ran_units: int = 0
    wall_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


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


def _kmeans_audio(plan: pd.DataFrame) -> Iterator[torch.Tensor]:
    """The corpus's own audio for codebook k-means: training split first, in plan order."""
    order = np.argsort(plan["split"].ne("train").to_numpy(), kind="stable")
    for path in plan["path"].to_numpy()[order]:
        try:
            yield load_audio(path)
        except AudioError:
            continue


def _codec_for_new_store(config: ExtractConfig, plan: pd.DataFrame, n_q: int, log: Callable[[str], None]):
    """Build the codec the config asks for; return (model, weights bytes, provenance)."""
    if config.weights == "untrained":
        log(f"untrained codec: seed {config.seed}, {'LSUV, ' if config.lsuv else ''}k-means on up to {config.kmeans_frames} frames of the corpus")
        return build_untrained(
            _kmeans_audio(plan), n_q, seed=config.seed, kmeans_frames=config.kmeans_frames, kmeans_iters=config.kmeans_iters,
            lsuv=config.lsuv, lsuv_seconds=config.lsuv_seconds, dataset=config.dataset,
        )
    if config.weights == "pretrained":
        return read_weights(pretrained_file(download=config.download), source="pretrained")
    return read_weights(config.weights)


def _fingerprint(config: ExtractConfig) -> dict:
    values = asdict(config)
    return {key: values[key] for key in ExtractConfig.FINGERPRINT}


def _check_resume(files: StoreFiles, attrs: dict, config: ExtractConfig) -> WeightsInfo:
    if attrs.get("format") != sf.FORMAT:
        raise StoreError(f"{files.url} exists and is not a feature store of this tool; choose another --out")
    stored = attrs.get("config", {})
    wanted = _fingerprint(config)
    differ = [k for k in wanted if stored.get(k) != wanted[k]]
    if differ:
        detail = ", ".join(f"{k}: store has {stored.get(k)!r}, asked {wanted[k]!r}" for k in differ)
        raise StoreError(f"{files.url} was made with other settings ({detail}); use another --out or the same settings")
    info = WeightsInfo(**{k: attrs["weights"][k] for k in ("source", "sha256", "trained", "origin")})
    if config.weights == "untrained" and info.source != "untrained":
        raise StoreError(f"{files.url} holds {info.source} codec weights, but --weights untrained was asked for")
    if config.weights not in ("untrained", "pretrained"):
        sha = hashlib.sha256(Path(config.weights).read_bytes()).hexdigest()
        if sha != info.sha256:
            raise StoreError(f"{config.weights}: sha256 differs from the weights {files.url} was started with")
    return info


def extract(
    config: ExtractConfig,
    submit: Callable[[list[UnitTask]], Iterator[dict]] | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[dict], None] | None = None,
) -> ExtractResult:
    """Run (or resume) an extraction. ``submit`` runs tasks and yields their results as they finish
    (a dask client's map + as_completed); None runs them in this process, in order."""
    started = time.perf_counter()
    n_q = n_quantizers(config.bandwidth)
    device = resolve_device(config.device)
    if config.batch_seconds is None:  # resolved before the resume check, which compares it
        config.batch_seconds = BATCH_SECONDS["cuda" if device.startswith("cuda") else "cpu"]
    config.root = str(Path(config.root).resolve()) if "://" not in config.root else config.root
    files = StoreFiles(config.out)

    dataset = get_dataset(config.dataset)
    loaded = dataset.load(Path(config.root), config.splits)
    log(f"{loaded.description}: {len(loaded.table)} utterances, {len(loaded.problems)} protocol problems")

    if files.exists():
        attrs = files.read_group_attrs()
        weights = _check_resume(files, attrs, config)
        if attrs.get("state") == sf.STATE_COMPLETE:
            files.remove(sf.PARTS)  # left over if a finish was killed after it marked the store complete
            log(f"{config.out} is already complete; nothing to do")
            return ExtractResult(config.out, files.read_table(sf.UTTERANCES), files.read_table(sf.FAILURES), weights, wall_seconds=time.perf_counter() - started)
        plan = files.read_table(sf.PLAN)
        log(f"resuming {config.out} ({weights.label})")
    else:
        plan = loaded.table.reset_index(drop=True)
        if plan.empty:
            raise StoreError(f"{config.root}: no usable utterances in {config.dataset}")
        model, weights_bytes, weights = _codec_for_new_store(config, plan, n_q, log)
        codebooks = np.stack([layer._codebook.embed.detach().numpy() for layer in model.quantizer.vq.layers[:n_q]])
        problems = pd.DataFrame([asdict(p) for p in loaded.problems], columns=list(sf.FAILURE_COLUMNS))
        attrs = {
            "codec": {
                "name": CODEC_NAME,
                "sample_rate": model.sample_rate,
                "frame_rate": FRAME_RATE,
                "n_q": n_q,
                "bandwidth": config.bandwidth,
                "codebook_size": CODEBOOK_SIZE,
                "dim": DIM,
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            "weights": {**weights.to_dict(), "file": sf.WEIGHTS},
            "dataset": {"name": config.dataset, "root": config.root, "splits": sorted(plan["split"].unique().tolist()), "description": loaded.description},
            "config": asdict(config),
            "versions": package_versions(),
            "provenance": provenance(device_label(device)),
        }
        create_store(config.out, attrs, plan, problems, codebooks, weights_bytes)
        log(f"created {config.out} ({weights.label})")

    n_units = -(-len(plan) // config.unit_size)
    done = done_units(config.out, n_units)
    settings = EncoderSettings(
        store=config.out,
        weights_sha256=weights.sha256,
        bandwidth=config.bandwidth,
        device=device,
        latent=config.latent,
        window_seconds=config.window_seconds,
        min_batch_seconds=config.min_batch_seconds,
        batch_seconds=config.batch_seconds,
        max_seconds=config.max_seconds,
        torch_threads=config.torch_threads,
    )
    paths = plan["path"].tolist()
    tasks = [
        UnitTask(unit, tuple((row, paths[row]) for row in range(unit * config.unit_size, min(len(plan), (unit + 1) * config.unit_size))), settings)
        for unit in range(n_units)
        if unit not in done
    ]
    if done:
        log(f"{len(done)} of {n_units} work units already done; running {len(tasks)}")
    results = submit(tasks) if submit is not None else map(run_unit, tasks)
    for result in results:
        if progress is not None:
            progress(result)
    table = finish_store(config.out, n_units, {"weights": weights.label}, {"finished_by": provenance(device_label(device))})
    return ExtractResult(
        config.out,
        table,
        files.read_table(sf.FAILURES),
        weights,
        resumed_units=len(done),
        ran_units=len(tasks),
        wall_seconds=time.perf_counter() - started,
    )
