"""Model files the Detector reads (a run directory, a checkpoint, or a detector bundle), the codec
weights a model's provenance points to, and `pipeline export-model`'s bundle.

A bundle (``DETECTOR.pt``, written by :func:`export_model`) is one file, loadable with
``torch.load(..., weights_only=True)``, holding everything that scores audio::

    format, format_version   "rvq-antispoof-detector", 2: the checkpoints' version (`classify.migrations`;
                             older bundles are migrated on reading, as checkpoints are)
    model, config, codec     the checkpoint's trained parameters, TrainConfig, CodecInfo; a model of an
                             SSL stream stored as ``pca:K`` also holds the stream's mean and basis of
                             its layers (``ssl_pca_mean``, ``ssl_pca_basis``, `classify.fusion`), and
                             ``ssl.storage`` names the storage: new audio's frames are coded as the
                             training reader decoded them. Models saved before have neither buffer
                             and still load (the Detector then takes the basis from the training store)
    store                    the training store entry (`classify.checkpoint.store_entry`): its
                             extraction settings rebuild the same front end
    calibration              the model's dev calibration and thresholds ({} when it has none)
    codec_weights            {"source", "sha256", "label", "origin", "data"}: "data" is the codec's
                             state dict bytes as a uint8 tensor, except for the pretrained codec
                             (found through the torch hub cache or EnCodec's URL by its sha256)
    ood                      the out-of-distribution record (`classify.ood`), when the run has one
    ssl                      (SSL variants) the SSL stream's record: model, layers, weights (source,
                             sha256, origin, seed). The SSL weights are not embedded (WavLM-Large's
                             are 1.2 GB): scoring rebuilds untrained ones from their seed and finds
                             others by sha256 (`extract.frontend.ssl_front_end`, or --ssl-weights)
    provenance, exported     what made the model, and what exported it

Where a model's codec weights are looked for (:func:`codec_weights_bytes`), in order: a file the
user names (``--codec-weights``, and then only there); the bundle's own bytes; for the pretrained
codec, the torch hub cache; the training store's ``codec_weights.th``; the weights file the store
was extracted from; for the pretrained codec, EnCodec's URL. The first whose sha256 is the
model's wins; none gives a CheckpointError listing every place and why it did not serve.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from classify.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, migrated, read_model_file
from classify.migrations import FORMAT_VERSION
from common.provenance import provenance
from common.weights import FILE, PRETRAINED
from store import format as sf
from store.format import StoreFiles

BUNDLE_FORMAT = "rvq-antispoof-detector"
BUNDLE_VERSION = FORMAT_VERSION
"""Bundles and checkpoints share their format versions and migrations (`classify.migrations`)."""
_KEPT = ("model", "config", "codec", "ssl", "store", "provenance", "ood")
"""Checkpoint entries a bundle keeps (not the optimizer, RNG or history)."""


@dataclass(frozen=True)
class ModelFile:
    """A model ready to rebuild: ``state`` has the checkpoint entries of ``_KEPT`` and, when the
    model has one, ``calibration``; ``kind`` is "checkpoint" or "bundle"; ``codec_data`` the codec
    weights a bundle carries (None otherwise)."""

    path: Path
    kind: str
    state: dict[str, Any]
    codec_data: bytes | None = None

    @property
    def calibration(self) -> dict[str, Any] | None:
        return self.state.get("calibration") or None

    @property
    def weights(self) -> dict[str, Any]:
        """The training store's weights record (source, sha256, origin, label, ...; {} if unknown)."""
        return dict(self.state.get("store", {}).get("weights") or {})


def read_model(path: str | Path) -> ModelFile:
    """A run directory (its best.pt), a checkpoint or a bundle, migrated to the current format
    version; CheckpointError naming the file when it is none of these, or of a newer version."""
    path = checkpoint_path(path)
    state = read_model_file(path)
    if isinstance(state, dict) and state.get("format") == BUNDLE_FORMAT:
        state = migrated(state, path)
        codec = state.get("codec_weights", {})
        data = codec.get("data")
        return ModelFile(path, "bundle", state, None if data is None else data.numpy().tobytes())
    state = load_checkpoint(path)  # names the file when it is not a checkpoint either
    return ModelFile(path, "checkpoint", state)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def codec_weights_bytes(model: ModelFile, override: str | Path | None = None,
                        pretrained: Callable[[bool], Path] | None = None) -> tuple[bytes, str]:
    """(state dict bytes, where they came from) of the codec ``model`` was trained with: the
    places of the module docstring, in order, checked by sha256. ``pretrained(download)`` returns
    the pretrained checkpoint's path (``extract.codec.pretrained_file``; the caller passes it so
    that this module needs no codec code)."""
    expected = model.state["codec"]["weights_sha256"]
    weights = model.weights
    candidates: list[tuple[str, Callable[[], bytes]]] = []
    if override is not None:
        candidates.append((f"--codec-weights {override}", Path(override).read_bytes))
    else:
        if model.codec_data is not None:
            candidates.append((f"the bundle {model.path}", lambda: model.codec_data))
        is_pretrained = weights.get("source") == PRETRAINED
        if is_pretrained and pretrained is not None:
            candidates.append(("the torch hub cache (pretrained EnCodec)", lambda: pretrained(False).read_bytes()))
        url = model.state.get("store", {}).get("url")
        if url:
            candidates.append((f"the training store's {url}/{sf.WEIGHTS}", lambda: StoreFiles(url).read_bytes(sf.WEIGHTS)))
        if weights.get("source") == FILE and weights.get("origin"):
            candidates.append((f"the file the training store was extracted with, {weights['origin']}",
                               Path(weights["origin"]).read_bytes))
        if is_pretrained and pretrained is not None:
            candidates.append(("EnCodec's URL (pretrained EnCodec)", lambda: pretrained(True).read_bytes()))
    tried = []
    for where, read in candidates:
        try:
            data = read()
        except Exception as err:  # noqa: BLE001 - any failure of one place means: try the next
            tried.append(f"{where}: {type(err).__name__}: {err}")
            continue
        actual = _sha256(data)
        if actual == expected:
            return data, where
        tried.append(f"{where}: sha256 {actual[:12]}..., not the model's")
    label = model.state["codec"].get("weights_label", "")
    raise CheckpointError(
        f"{model.path}: cannot find the codec weights this model was trained with ({label}; sha256 {expected}). "
        f"Tried: {'; '.join(tried) or 'nowhere (no provenance recorded)'}. Pass the weights file with "
        "--codec-weights FILE, or score with a bundle made by `pipeline export-model` where they are.")


def export_model(model_path: str | Path, out: str | Path, codec_weights: str | Path | None = None,
                 log: Callable[[str], None] = print) -> Path:
    """Write the bundle of the module docstring for a run directory or checkpoint to ``out``
    (atomically); return its path. The codec weights are embedded unless pretrained."""
    model = read_model(model_path)
    if model.kind == "bundle":
        raise CheckpointError(f"{model.path} is already a detector bundle")
    state = model.state
    weights = model.weights
    codec = state["codec"]
    record: dict[str, Any] = {"source": weights.get("source", "unknown"), "sha256": codec["weights_sha256"],
                              "label": codec["weights_label"], "origin": weights.get("origin", "")}
    if weights.get("source") != PRETRAINED or codec_weights is not None:
        data, where = codec_weights_bytes(model, codec_weights)
        record["data"] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        log(f"codec weights embedded from {where} ({len(data) / 2**20:.1f} MiB)")
    else:
        log(f"pretrained codec: the bundle records its sha256 {codec['weights_sha256'][:12]}...; scoring finds it in "
            "the torch hub cache or downloads it from EnCodec's URL")
    if not state.get("calibration"):
        log(f"warning: {model.path} has no calibration (last.pt, or a run trained before calibrations were saved): "
            "the bundle gives raw scores and no LLR")
    bundle = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION,
              **{k: state[k] for k in _KEPT if k in state},
              "calibration": state.get("calibration") or {}, "codec_weights": record,
              "checkpoint": str(model.path), "exported": provenance()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(bundle, tmp)
    tmp.replace(out)
    return out
