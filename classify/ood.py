"""An out-of-distribution warning: how far a recording's pooled representation lies from the
training data, with a threshold fitted on dev at the end of training (like the calibration).

Representation: the model's own fused frame features h[t] (`HierarchyWeighting`: the weighted sum
of the level embeddings, or the standardised continuous stream of `latent` / `energy`), pooled over
the recording: their mean and standard deviation per dimension, [2 D]. Utterances are read as
evaluation reads them (`classify.data.FrameSource.eval_batches`: the whole utterance, or evenly spread windows
of ``max_eval_seconds``; a recording's pooled moments are over all the frames its windows hold).

Distance: the Mahalanobis distance to the training split's pooled vectors, with a Ledoit-Wolf
shrunk covariance (the training split may have fewer utterances than dimensions), divided by
sqrt(2 D) so that in-distribution values are about 1. Threshold: the :data:`QUANTILE` quantile of
the dev split's distances (both classes: dev is in-domain data the model never trained on), so
that about 1 % of in-domain recordings are flagged. The record is saved as ``checkpoint["ood"]``
(and ``ood.json`` in the run directory without the matrices); a model trained before has none
and every answer is ``ood: null`` with the reason (:func:`check`). The SSL variants' AttM stream
is not covered (``ood: null``, reason stated).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

QUANTILE = 0.99
OOD_FILE = "ood.json"
METHOD = ("Mahalanobis distance (Ledoit-Wolf shrunk covariance of the training split) of the mean and standard "
          "deviation over frames of the model's fused frame features, divided by sqrt(dimensions)")


def _unsupported(model: Any) -> str:
    """Why ``model`` has no OOD check ("" when it has one)."""
    if getattr(model, "attm", None) is not None:
        return "the out-of-distribution check covers the codec variants only, not the SSL variants (AttM)"
    if model.weighting is None:
        return "the model has no codec weighting to pool"
    return ""


@torch.no_grad()
def pooled(model: Any, source: Any, split: Any, window: int, budget: int, device: torch.device) -> np.ndarray:
    """float64 [N, 2 D]: each utterance's mean and standard deviation over frames of the fused
    features, read as evaluation reads them (module docstring)."""
    model.eval()
    sums = sq = None
    counts = np.zeros(len(split))
    for batch, utt in source.eval_batches(split, window, budget):
        batch = batch.to(device)
        h = model.weighting(batch.codes, batch.latent).double().cpu()  # [B, T, D]
        mask = (torch.arange(h.shape[1])[None] < batch.lengths[:, None]).double()[..., None]
        if sums is None:
            sums, sq = np.zeros((len(split), h.shape[2])), np.zeros((len(split), h.shape[2]))
        np.add.at(sums, utt, (h * mask).sum(1).numpy())
        np.add.at(sq, utt, (h.square() * mask).sum(1).numpy())
        np.add.at(counts, utt, batch.lengths.numpy().astype(np.float64))
    mean = sums / counts[:, None]
    std = np.sqrt(np.maximum(sq / counts[:, None] - mean**2, 0.0))
    return np.concatenate([mean, std], axis=1)


def fit(train: np.ndarray, dev: np.ndarray, quantile: float = QUANTILE) -> dict[str, Any]:
    """The record from the training split's pooled vectors [N, P] and the dev split's [M, P]."""
    from sklearn.covariance import LedoitWolf  # noqa: PLC0415 - only at the end of training

    estimate = LedoitWolf().fit(train)
    precision = np.linalg.pinv(estimate.covariance_, hermitian=True)
    record = {"method": METHOD, "mean": torch.from_numpy(estimate.location_),
              "precision": torch.from_numpy(precision), "shrinkage": float(estimate.shrinkage_),
              "dimensions": int(train.shape[1]), "n_train": int(train.shape[0]), "n_dev": int(dev.shape[0]),
              "quantile": quantile}
    dev_distances = distances(record, dev)
    record["threshold"] = float(np.quantile(dev_distances, quantile))
    record["dev_distance_quantiles"] = np.quantile(dev_distances, [0.5, 0.9, 0.99, 1.0]).tolist()
    return record


def distances(record: dict[str, Any], vectors: np.ndarray) -> np.ndarray:
    """Scaled Mahalanobis distances [N] of pooled vectors [N, P]."""
    diff = np.atleast_2d(vectors) - np.asarray(record["mean"], dtype=np.float64)
    d2 = np.einsum("np,pq,nq->n", diff, np.asarray(record["precision"], dtype=np.float64), diff)
    return np.sqrt(np.maximum(d2, 0.0) / record["dimensions"])


def fit_run(run: Any) -> Path | None:
    """At the end of training (`classify.train`): fit the record for the best model now loaded in
    ``run`` (a `classify.train.TrainingRun`), save it into best.pt and ood.json; None (nothing
    saved) for a model it does not cover."""
    from classify.checkpoint import BEST, load_checkpoint, save_checkpoint  # noqa: PLC0415

    if _unsupported(run.model):
        return None
    args = (run.window, run.frame_budget, run.device)
    record = fit(pooled(run.model, run.source, run.train_data, *args), pooled(run.model, run.dev_source, run.dev_data, *args))
    record.update(train_split=run.config.train_split, dev_split=run.config.dev_split, codec_weights=run.label,
                  **({"dev_view": run.config.dev_view} if run.config.dev_view else {}))
    best = load_checkpoint(run.out_dir / BEST)
    best["ood"] = record
    save_checkpoint(run.out_dir / BEST, best)
    path = run.out_dir / OOD_FILE
    path.write_text(json.dumps(summary(record), indent=2) + "\n")
    return path


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The record without its matrices (for JSON)."""
    return {k: v for k, v in record.items() if k not in ("mean", "precision")}


def check(detector: Any, features: Any) -> tuple[dict[str, Any] | None, str]:
    """({score, threshold, flagged, method}, "") for one recording's features, or (None, reason)."""
    record = detector.model_file.state.get("ood")
    reason = _unsupported(detector.model)
    if reason:
        return None, reason
    if not record:
        return None, ("this model has no out-of-distribution record (trained before it was fitted at the end of "
                      "training, or last.pt)")
    source, split = detector.features_source([features])
    vector = pooled(detector.model, source, split, detector.window, detector.frame_budget, detector.device)
    score = float(distances(record, vector)[0])
    return {"score": score, "threshold": record["threshold"], "flagged": score > record["threshold"],
            "method": record["method"], "quantile": record["quantile"]}, ""
