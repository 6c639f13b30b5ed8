"""Scoring a split with a trained checkpoint: official score file, metrics.json, DET plot.

Outputs in ``out_dir``:

- ``scores.txt`` (ASVspoof 2019: ``utt score`` lines) or ``scores.tsv`` (ASVspoof5:
  ``filename<TAB>cm-score`` with header): the model's raw logits, higher = more bona fide.
- ``scores_calibrated.*`` (with calibration): the same utterances' calibrated LLRs.
- ``metrics.json``: EER, minDCF (raw scores; calibration is monotone and cannot change them),
  actDCF and Cllr (of the calibrated LLRs when calibrated; raw ones under ``raw``), min t-DCF
  with ASV scores, per attack and per codec condition, counts, codec weights, checkpoint,
  calibration record.
- ``not_scored.tsv`` (only when some are): the split's trials that failed extraction and so have no
  line in the score files (`classify.unscored`: utt_id, label, stage, reason); metrics.json's
  ``not_scored`` says how many, of how many protocol trials, and why. No score is invented for them.
- ``det.png``.

Calibration: a logistic regression (scikit-learn) fitted on the checkpoint's DEV split maps a raw
score s to the log posterior odds a s + b under the dev class balance; subtracting the dev log
prior odds ln(N_bona / N_spoof) leaves a log-likelihood ratio LLR = a s + b - ln(N_bona / N_spoof),
which is what actDCF and Cllr expect. Scores are standardised for the fit, whose L2 penalty is
nearly nil (C = 1e4): it only keeps the slope finite when the dev scores are separable.
The calibration belongs to the model: training fits it on its dev split and saves it in best.pt
(`classify.calibration`), so a store that holds only an eval split is evaluated with it. Only a
checkpoint without one (last.pt, or trained before calibrations were saved) is calibrated here, on
the store's dev split.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classify.checkpoint import (
    check_compatible,
    checkpoint_path,
    load_checkpoint,
    model_from_checkpoint,
)
from classify.config import TrainConfig, amp_dtype, resolve_device
from classify.data import DataError, FrameSource, SplitData
from classify.fusion import ssl_label, ssl_provenance
from classify.metrics import (
    compute_actdcf,
    compute_cllr,
    metrics_table,
    min_tdcf_with_asv,
)
from classify.model import SpoofDetector
from classify.plots import plot_det
from classify.scorefiles import SCORE_FORMAT_REGISTRY, SCORE_FORMATS, read_asv_scores, score_format_of, write_scores
from classify.sources import make_source
from classify.tables import headline_mask, store_tables
from classify.unscored import not_scored, summary, write_not_scored
from classify.views import open_view, view_names
from common.provenance import device_label, provenance
from store.reader import FeatureStore

FORMATS = ("auto", *SCORE_FORMATS)
_CALIBRATION_C = 1e4


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast for ``dtype`` on ``device``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def frame_window(config: TrainConfig, frame_rate: int) -> tuple[int, int]:
    """(longest scored window, frames per scoring batch) in frames, from the config."""
    window = max(1, round(config.max_eval_seconds * frame_rate))
    crop = max(1, round(config.crop_seconds * frame_rate))
    return window, max(window, config.batch_size * crop)


def score_split(model: SpoofDetector, source: FrameSource, split: SplitData, window: int,
                frame_budget: int, device: torch.device, dtype: torch.dtype | None = None) -> np.ndarray:
    """Logits float64 [N] of every utterance of ``split`` (higher = more bona fide): whole
    utterances, or the mean logit over the windows of those longer than ``window`` frames."""
    model.eval()
    sums = np.zeros(len(split))
    counts = np.zeros(len(split))
    with torch.no_grad(), autocast(device, dtype):
        for batch, utt in source.eval_batches(split, window, frame_budget):
            batch = batch.to(device)
            logits = model(*batch.inputs()).float().cpu().numpy()
            np.add.at(sums, utt, logits)
            np.add.at(counts, utt, 1)
    return sums / counts


def resolve_format(fmt: str, store: FeatureStore) -> str:
    """The score format: ``fmt`` itself, or (``auto``) the official one of the store's dataset."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown score format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    return score_format_of(store.attrs.get("dataset", {}).get("name"), store.score_format).name


def fit_calibration(scores: np.ndarray, is_bonafide: np.ndarray) -> dict[str, Any]:
    """Fit raw score -> LLR on labelled scores [N]; returns the record kept in metrics.json
    (``coef`` a, ``intercept`` b, ``log_prior_odds``; LLR = a s + b - log_prior_odds)."""
    from sklearn.linear_model import (  # noqa: PLC0415
        LogisticRegression,  # slow to import; only evaluation needs it
    )

    n_bona = int(is_bonafide.sum())
    n_spoof = int(is_bonafide.size - n_bona)
    mean, std = float(scores.mean()), float(scores.std()) or 1.0
    fit = LogisticRegression(C=_CALIBRATION_C).fit(((scores - mean) / std).reshape(-1, 1), is_bonafide.astype(int))
    slope = float(fit.coef_[0, 0]) / std
    return {
        "method": f"logistic regression (scikit-learn, standardised scores, L2 C={_CALIBRATION_C:g}), "
                  "minus the dev log prior odds",
        "coef": slope,
        "intercept": float(fit.intercept_[0]) - slope * mean,
        "log_prior_odds": math.log(n_bona / n_spoof),
        "n": int(is_bonafide.size),
        "n_bonafide": n_bona,
        "n_spoof": n_spoof,
    }


def apply_calibration(calibration: dict[str, Any], scores: np.ndarray) -> np.ndarray:
    """LLRs [N] of raw scores [N] under a :func:`fit_calibration` record."""
    return calibration["coef"] * scores + calibration["intercept"] - calibration["log_prior_odds"]


def _tdcf(scores: np.ndarray, is_bonafide: np.ndarray, asv_path: Path) -> dict[str, Any]:
    """Min t-DCF (ASVspoof 2019 LA cost model) of the CM scores with the ASV file's error rates."""
    asv = read_asv_scores(asv_path)
    try:
        rates = min_tdcf_with_asv(scores[is_bonafide], scores[~is_bonafide], asv.target, asv.nontarget, asv.spoof)
    except ValueError as err:
        raise ValueError(f"t-DCF with ASV scores {asv_path}: {err}") from None
    return {"min_tdcf": rates.pop("min_tdcf"), "asv_scores": str(asv_path), "asv_error_rates": rates}


def _with_calibrated_costs(raw: dict[str, Any], calibrated: dict[str, Any]) -> dict[str, Any]:
    """``raw``'s metrics with actDCF and Cllr taken from ``calibrated`` (per group too)."""
    out = dict(raw)
    for key in ("act_dcf", "cllr"):
        out[key] = calibrated[key]
    for group in ("per_attack", "per_codec"):
        out[group] = {label: {**metrics, "act_dcf": calibrated[group][label]["act_dcf"],
                              "cllr": calibrated[group][label]["cllr"]}
                      for label, metrics in raw[group].items()}
    return out


def evaluate(checkpoint: str | Path, store: FeatureStore, split: str, out_dir: str | Path,
             asv_scores: str | Path | None = None, calibrate: bool = True, fmt: str = "auto",
             device: str = "auto", log: Callable[[str], None] = print,
             origin: dict[str, Any] | None = None, view: str | None = None) -> dict[str, Any]:
    """Score ``split`` of ``store`` with ``checkpoint`` (a file, or a run directory meaning its
    best.pt), or (``view``) the store's augmented view of it (`classify.views`), write the outputs
    listed in the module docstring to ``out_dir``, return metrics.json's
    content (``origin``: provenance of what asked, as in `classify.train.train`). Raises CheckpointError (other codec), DataError (split), ValueError (inputs)."""
    ckpt_path = checkpoint_path(checkpoint)
    state = load_checkpoint(ckpt_path)
    check_compatible(state, store, ckpt_path)
    config = TrainConfig(**state["config"])
    score_format = resolve_format(fmt, store)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    dtype = amp_dtype(config, torch_device)
    model = model_from_checkpoint(state, store).to(torch_device)
    clean = make_source(store, model, {**state["config"], "device": str(torch_device)})
    names = view_names(store, view, split) if view else []
    if len(names) > 1:  # one view per call: `evaluate_views` scores several side by side
        raise ValueError(f"evaluate scores one view at a time; {view!r} names {len(names)} ({', '.join(names)}): "
                         "use classify.views.evaluate_views (`pipeline evaluate --view` does)")
    scored = open_view(store, names[0]) if names else store
    source = clean if scored is store else make_source(scored, model, {**state["config"], "device": str(torch_device)})
    data = source.split(scored, split)
    missing = not_scored(scored, split)
    missing_file = write_not_scored(out_dir, missing)
    if data.n_failed:
        log(f"warning: {data.n_failed} utterance(s) of split {split!r} failed extraction in {store.url}; "
            f"they have no features and are not scored (no line in the score files; listed in {missing_file})")
    window, budget = frame_window(config, store.codec.frame_rate)
    scores = score_split(model, source, data, window, budget, torch_device, dtype)
    scores_path = write_scores(out_dir / f"scores{SCORE_FORMAT_REGISTRY[score_format].suffix}", data.utt_ids, scores, score_format)

    headline = headline_mask(store, data.utt_ids)  # ASVspoof 2021: the eval phase; others: every trial
    attacks, codecs = [a for a, h in zip(data.attacks, headline) if h], [c for c, h in zip(data.codecs, headline) if h]
    raw = metrics_table(scores[headline], data.is_bonafide[headline], attacks, codecs)
    result: dict[str, Any] = {
        "split": split,
        "view": view or "clean",
        **({"view_recipe": scored.recipe} if view else {}),
        "checkpoint": str(ckpt_path),
        "store": store.url,
        "dataset": store.attrs.get("dataset", {}).get("name"),
        "codec_weights": {"label": store.codec.weights_label, "sha256": store.codec.weights_sha256},
        **({"ssl_weights": {"label": ssl_label(model), **ssl_provenance(model)["weights"]}} if ssl_label(model) else {}),
        "variant": config.variant,
        "head": config.head,
        "scores_file": str(scores_path),
        "scores_format": score_format,
        "n_scored": len(data),
        "n_failed": data.n_failed,
        "not_scored": summary(missing, len(data), missing_file),
        "provenance": {**(origin or provenance()), "device": device_label(str(torch_device))},
        "model_provenance": state.get("provenance", {}),
    }
    if calibrate and state.get("calibration"):
        calibration = {"applied": True, **state["calibration"]["calibration"],
                       "source": f"the checkpoint (fitted at the end of training on split "
                                 f"{state['calibration']['calibration']['dev_split']!r}"
                                 f"{_view_note(state['calibration']['calibration'])})"}
    elif calibrate:
        try:
            dev = clean.split(store, config.dev_split)  # calibration: the clean dev split
        except DataError as err:
            raise DataError(f"{err}; {ckpt_path} holds no calibration of its own (last.pt, or trained before "
                            "calibrations were saved with the run), so it would be fitted on the store's dev "
                            "split: use best.pt of a current run, or --no-calibrate to skip it") from None
        dev_scores = score_split(model, clean, dev, window, budget, torch_device, dtype)
        calibration = {"applied": True, "dev_split": config.dev_split,
                       **fit_calibration(dev_scores, dev.is_bonafide), "source": f"fitted now on {store.url}"}
    if calibrate:
        if calibration["coef"] <= 0:
            log(f"warning: the calibration fitted on split {config.dev_split!r} has slope "
                f"{calibration['coef']:.4g} <= 0: the dev scores do not rank bona fide above spoof")
        llr = apply_calibration(calibration, scores)
        calibrated_path = write_scores(out_dir / f"scores_calibrated{SCORE_FORMAT_REGISTRY[score_format].suffix}",
                                       data.utt_ids, llr, score_format)
        calibration["scores_file"] = str(calibrated_path)
        metrics = _with_calibrated_costs(raw, metrics_table(llr[headline], data.is_bonafide[headline], attacks, codecs))
    else:
        calibration = {"applied": False}
        metrics = raw
    bona, spoof = scores[data.is_bonafide & headline], scores[~data.is_bonafide & headline]
    result.update(metrics)
    if not headline.all():
        result["headline"] = f"phase eval ({int(headline.sum())} of {len(headline)} trials); phases apart below"
    tables = store_tables(store, data.utt_ids, scores, str(asv_scores) if asv_scores else None, log=log)
    if tables is not None:
        result.update(tables)
        la = tables.get("phases", {}).get("eval", {}).get("tables", {}).get("attack x condition", {})
        if la.get("min_tdcf") and la["min_tdcf"][-1][-1] is not None:
            result["min_tdcf"] = la["min_tdcf"][-1][-1]  # the eval phase, pooled (2021 revised t-DCF)
    result["raw"] = {"act_dcf": compute_actdcf(bona, spoof)[0], "cllr": compute_cllr(bona, spoof)}
    result["calibration"] = calibration
    if asv_scores is not None and "phases" not in result:
        result.update(_tdcf(scores, data.is_bonafide, Path(asv_scores)))
    note = store.codec.weights_label + (f"; SSL: {ssl_label(model)}" if ssl_label(model) else "")
    copy = f"{split}, view {view}" if view else split
    result["det_plot"] = str(plot_det({f"{config.variant} / {config.head} ({copy})": (bona, spoof)},
                                      out_dir / "det.png", title=f"DET, split {copy}", note=note))
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    tdcf = f", min t-DCF {result['min_tdcf']:.4f}" if result.get("min_tdcf") is not None else ""
    log(f"{copy}: EER {100 * result['eer']:.2f} %, minDCF {result['min_dcf']:.4f}, actDCF "
        f"{result['act_dcf']:.4f}, Cllr {result['cllr']:.4f}{tdcf} ({len(data)} utterances; "
        f"codec weights: {note})")
    return result


def _view_note(calibration: dict[str, Any]) -> str:
    return f", view {calibration['dev_view']!r}" if calibration.get("dev_view") else ""
