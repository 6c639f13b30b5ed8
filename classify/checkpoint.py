"""Training checkpoints: plain dicts of tensors and builtins, loadable with ``weights_only=True``.

A checkpoint (``best.pt``, ``last.pt``) holds::

    format, format_version   "rvq-antispoof-checkpoint", 1
    model                    the SpoofDetector's state dict
    config                   TrainConfig as a dict
    codec                    the store's CodecInfo as a dict (what made the features)
    store                    {"url", "dataset"} of the training store
    optimizer, schedule      AdamW state dict; {"step", "total_steps"} of the LR schedule
    scaler                   the fp16 GradScaler's state dict ({} when unused)
    rng                      {"torch", "data", "cuda": [...]}: generator states as uint8 tensors
    epoch, history           epochs completed; one dict per epoch (as in history.jsonl)
    early_stop               {"best_eer", "best_epoch", "bad_epochs", "stopped"}

Files are written atomically (temporary file, then rename), so a kill never leaves a torn one.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from classify.fusion import build_detector, check_ssl_compatible
from classify.model import SpoofDetector
from store.reader import CodecInfo, FeatureStore

FORMAT = "rvq-antispoof-checkpoint"
FORMAT_VERSION = 1
BEST = "best.pt"
LAST = "last.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, of another format, or does not fit the store."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, dicts, lists, str, int, float, bool) to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, tmp)
    os.replace(tmp, path)
    return path


def checkpoint_path(path: str | Path) -> Path:
    """``path`` itself, or its ``best.pt`` when it is a run directory."""
    path = Path(path)
    return path / BEST if path.is_dir() else path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    A directory means its ``best.pt``. CheckpointError names the file for a missing, unreadable
    or foreign file.
    """
    path = checkpoint_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of this tool")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {state['format_version']} is newer "
                              f"than this tool's {FORMAT_VERSION}")
    return state


def codec_dict(info: CodecInfo) -> dict[str, Any]:
    return dataclasses.asdict(info)


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


def model_from_checkpoint(checkpoint: dict[str, Any], store: FeatureStore) -> SpoofDetector:
    """The checkpoint's model, built over the store's codebooks (and SSL stream), with the trained
    parameters; CheckpointError when the store's SSL features differ from the checkpoint's."""
    model = build_detector({"ssl_kwargs": {}, **checkpoint["config"]}, store)
    problems = check_ssl_compatible(checkpoint, model, str(store.url))
    if problems:
        raise CheckpointError(f"the checkpoint was trained on other SSL features than those of {store.url}: "
                              + "; ".join(problems))
    model.load_state_dict(checkpoint["model"])
    return model


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
