"""Training checkpoints: plain dicts of tensors and builtins, loadable with ``weights_only=True``.

A checkpoint (``best.pt``, ``last.pt``) holds::

    format, format_version   "rvq-antispoof-checkpoint", 2 (`classify.migrations`: older versions are
                             migrated on reading)
    model                    the SpoofDetector's state dict
    config                   TrainConfig as a dict
    codec                    the store's CodecInfo as a dict (what made the features)
    store                    the training store: {"url", "dataset", "weights" (the store's weights
                             record: source, sha256, trained, origin, label, file), "extraction" (the
                             settings that shape its features: window_seconds, min_batch_seconds,
                             batch_seconds, max_seconds)}; see :func:`store_entry`
    optimizer, schedule      AdamW state dict; {"step", "total_steps"} of the LR schedule
    scaler                   the fp16 GradScaler's state dict ({} when unused)
    rng                      {"torch", "data", "cuda": [...]}: generator states as uint8 tensors
    epoch, history           epochs completed; one dict per epoch (as in history.jsonl)
    early_stop               {"best_eer", "best_epoch", "bad_epochs", "stopped"}
    calibration              (best.pt, once training ends) the dev calibration and decision
                             thresholds of this model, see `classify.calibration`

Files are written atomically (temporary file, then rename), so a kill never leaves a torn one.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import torch

from classify import rebuild
from classify.fusion import FusedDetector, check_ssl_compatible
from classify.migrations import FORMAT_VERSION, FormatError, migrate
from classify.model import SpoofDetector
from common.atomic import write_atomic
from store.reader import CodecInfo, FeatureStore

FORMAT = "rvq-antispoof-checkpoint"
BEST = "best.pt"
LAST = "last.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, of another format, or does not fit the store."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, dicts, lists, str, int, float, bool) to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, buffer)
    # written whole, then renamed: a kill or a full disk (a clear OSError) leaves the previous checkpoint
    return write_atomic(path, buffer.getbuffer(), fault="checkpoint:before-replace")


def checkpoint_path(path: str | Path) -> Path:
    """``path`` itself, or its ``best.pt`` when it is a run directory."""
    path = Path(path)
    return path / BEST if path.is_dir() else path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` onto the CPU, migrated to the
    current format version (`classify.migrations`).

    A directory means its ``best.pt``. CheckpointError names the file for a missing, unreadable
    or foreign file, or one of a newer format version.
    """
    path = checkpoint_path(path)
    state = read_model_file(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of this tool")
    return migrated(state, path)


def migrated(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """``state`` at the current format version; CheckpointError naming ``path`` when it cannot be."""
    try:
        return migrate(state, str(path))
    except FormatError as err:
        raise CheckpointError(str(err)) from None


def read_model_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU; CheckpointError naming the file when it
    is missing or unreadable (a file that would need to run code to load is unreadable)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types (struct.error, UnpicklingError...) for junk
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None


def codec_dict(info: CodecInfo) -> dict[str, Any]:
    return dataclasses.asdict(info)


EXTRACTION_KEYS = ("window_seconds", "min_batch_seconds", "batch_seconds", "max_seconds")
"""Extraction settings that shape a store's features, recorded with a model so that the Detector
rebuilds the same front end."""


def store_entry(store: FeatureStore) -> dict[str, Any]:
    """The checkpoint's ``store`` entry: where the training features came from and how they were made."""
    config = store.attrs.get("config", {})
    url = store.url if "://" in store.url else str(Path(store.url).resolve())
    return {"url": url, "dataset": str(store.attrs.get("dataset", {}).get("name")),
            "weights": dict(store.attrs.get("weights", {})),
            "extraction": {k: config[k] for k in EXTRACTION_KEYS if k in config}}


def check_compatible(checkpoint: dict[str, Any], store: FeatureStore, where: str | Path) -> None:
    """Refuse a store whose features come from another codec, bandwidth or codec weights than
    the checkpoint's (CheckpointError listing each differing field with both values)."""
    trained = CodecInfo(**checkpoint["codec"])
    differing = trained.compatible_with(store.codec)
    if differing:
        details = "; ".join(f"{k}: checkpoint {getattr(trained, k)!r}, store {getattr(store.codec, k)!r}"
                            for k in differing)
        raise CheckpointError(
            f"{where} was trained on features of another codec than those in {store.url} ({details}). "
            f"Checkpoint codec weights: {trained.weights_label}; store codec weights: "
            f"{store.codec.weights_label}. Use a store extracted with the same codec settings.")


def model_from_checkpoint(checkpoint: dict[str, Any], store: FeatureStore) -> SpoofDetector | FusedDetector:
    """The checkpoint's model (a migrated state, see :func:`load_checkpoint`), built by
    `classify.rebuild.build` over the store's codebooks (and SSL stream), with the trained
    parameters; CheckpointError when the store's SSL features differ from the checkpoint's."""
    config = checkpoint["config"]
    codebooks, source = rebuild.store_inputs(config, store)
    problems = check_ssl_compatible(checkpoint, source)
    if problems:
        raise CheckpointError(f"the checkpoint was trained on other SSL features than those of {store.url}: "
                              + "; ".join(problems))
    # the model records the SSL stream it was trained on (its storage, which evaluation on a store of
    # another storage codes the store's frames to: classify.sources.stored_as_trained); model, layers
    # and weights are the store's (checked above)
    trained_on = checkpoint.get("ssl") or source
    return rebuild.build(config, codebooks, trained_on, checkpoint["model"], where=f"the checkpoint on {store.url}",
                         pca=rebuild.store_pca(config, store))  # for checkpoints saved before models carried it


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """The global torch (and CUDA) RNG states and the data ``generator``'s, as uint8 tensors."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "data": generator.get_state(), "cuda": cuda}


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Inverse of :func:`rng_state`; CUDA states are restored when this machine has as many GPUs."""
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
