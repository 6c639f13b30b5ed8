"""The training loop: AdamW with warm-up and cosine decay, dev EER each epoch, early stopping,
checkpoints that resume bit-exactly, and the run directory's reports.

RUN_DIR receives ``best.pt`` (lowest dev EER) and ``last.pt`` (end of the latest epoch), see
`classify.checkpoint`; ``config.json``; ``history.jsonl`` (one JSON object per epoch);
``training_curves.png``; ``level_weights.png`` (not for the `latent` variant); ``calibration.json``
(the best model's dev calibration and thresholds, also saved in ``best.pt``: see
`classify.calibration`). Every JSON output has a ``codec_weights`` field and every plot names the
codec weights.

Reproducibility: the model is initialised from ``torch.manual_seed(seed)``, and all data
randomness (epoch order, crop positions) comes from one ``torch.Generator`` seeded with ``seed``;
both states are saved each epoch. On the CPU two runs with the same seed give bit-identical
parameters, and a run killed and resumed from ``last.pt`` ends exactly as an uninterrupted one
(its partial epoch is redone from the saved state).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from classify import budget, rebuild
from classify.calibration import CALIBRATION_FILE, model_calibration
from classify.checkpoint import (
    BEST,
    LAST,
    CheckpointError,
    check_compatible,
    codec_dict,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
    store_entry,
)
from classify.config import RESUMABLE_CHANGES, TrainConfig, amp_dtype, resolve_device
from classify.data import (
    Batch,
    class_weights,
    load_split,
    n_train_batches,
)
from classify.evaluate import autocast, frame_window, score_split
from classify.fusion import FusedDetector, check_ssl_compatible, ssl_label, ssl_provenance
from classify.metrics import compute_eer, compute_mindcf
from classify.model import SpoofDetector
from classify.ood import fit_run as fit_ood
from classify.plots import plot_level_weights, plot_training_curves
from classify.sources import make_source
from classify.variants import needs
from classify.views import dev_source, train_source
from common.lease import Lease
from common.provenance import device_label, provenance
from store.reader import FeatureStore

HISTORY = "history.jsonl"
CONFIG = "config.json"
CURVES = "training_curves.png"
LEVEL_WEIGHTS = "level_weights.png"
COMPLETED, EARLY_STOP, DIVERGED = "completed", "early stopping", "non-finite loss"


class NonFiniteLoss(RuntimeError):
    """The loss (or the dev scores) became NaN or infinite."""


@dataclass
class TrainResult:
    """What a run produced. ``stopped``: ``completed``, ``early stopping`` or ``non-finite loss``
    (then ``message`` says where, and which checkpoint is the last good one). ``best_dev_eer`` is
    a fraction (NaN when no epoch finished); ``level_weights`` is alpha of the best model as a
    nested list ([Q] or [Q][D]), None for `latent`; ``paths`` maps output names to files."""

    best_dev_eer: float
    best_epoch: int
    epochs_run: int
    stopped: str
    message: str
    n_trainable: int
    seconds: float
    level_weights: list | None
    paths: dict[str, str]


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up to ``base_lr`` over
    ``warmup_steps`` steps, then cosine decay to 0 at step ``total_steps``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: SpoofDetector | FusedDetector, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``model`` (the head, and trainable tables) at ``lr`` with
    ``weight_decay``; ``hierarchy_weights`` (the weighting's logits, when it has any) at
    ``weights_lr`` without weight decay. Each group keeps its peak rate as ``peak_lr``.

    Why the logits get their own rate (measured in bench/RESULTS_planted.md, on a planted store whose
    label only level 4 carries, at the shipped sweep's 266 steps and lr 3e-3). Adam divides each
    parameter's gradient by its running RMS, so a parameter moves by about its learning rate per step
    whatever the gradient's size, and a logit can travel at most about the sum of its learning rates
    over the run (0.40 there). With the logits at the head's lr, level 4's logit travelled 0.36 of
    that 0.40, and alpha = softmax(w / tau) ended at 0.21 for level 4 against 0.10 to 0.12 for the
    others. Not the brake: the gradient's size (the logits' gradients were 70x the head's), nor
    ``level_norm`` (without it the levels' logit gradients differ 13x, and Adam moves them alike),
    nor ``tau`` as such: under Adam, tau / c is the same as ``weights_lr`` * c (tau = 0.03 at lr 3e-3
    gave the same alpha, to 3 decimals, as weights_lr = 0.1 at tau 1). At weights_lr = 0.1 the logit
    moved 3.1, stopped once the task was solved, and level 4 got alpha 0.98 (dev EER 0 %). Weight
    decay is left off the logits: it would pull them towards uniform at a strength that grows with
    ``weights_lr``."""
    weights = model.weighting.weights if model.weighting is not None else None  # `ssl`: no codec weighting
    logits = [weights] if weights is not None and weights.requires_grad else []
    rest = [p for p in model.parameters() if p.requires_grad and not any(p is w for w in logits)]
    groups = [{"name": "model", "params": rest, "lr": config.lr, "peak_lr": config.lr,
               "weight_decay": config.weight_decay}]
    if logits:
        groups.append({"name": "hierarchy_weights", "params": logits, "lr": config.weights_lr,
                       "peak_lr": config.weights_lr, "weight_decay": 0.0})
    return groups


def effective_warmup(config: TrainConfig, total_steps: int) -> int:
    """``warmup_steps``, capped at a tenth of the run so that short runs still reach ``lr``."""
    return min(config.warmup_steps, total_steps // 10)


@dataclass
class _Progress:
    """The mutable state of a run that checkpoints carry besides model and optimizer."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_eer: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: str = ""


class TrainingRun:
    """One training run over a store: model, optimizer, data, and the run directory."""

    def __init__(self, config: TrainConfig, store: FeatureStore, out_dir: Path, log: Callable[[str], None]):
        self.config, self.store, self.out_dir, self.log = config, store, out_dir, log
        self.device = resolve_device(config.device)
        self.dtype = amp_dtype(config, self.device)
        load_split(store, config.train_split)  # split errors before the model is built
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.model: SpoofDetector | FusedDetector = rebuild.for_store(dataclasses.asdict(config), store).to(self.device)
        self.source = make_source(store, self.model, dataclasses.asdict(config))
        self.train_data = self.source.split(store, config.train_split)
        self.dev_source, self.dev_data = dev_source(store, self.model, dataclasses.asdict(config), self.source,
                                                    config.dev_split, log)  # clean dev, or config.dev_view's
        self.train_source = train_source(store, self.model, dataclasses.asdict(config), self.source,
                                         config.train_split, log)  # augmented views drawn in (classify.views)
        self.fit_stream()
        self.optimizer = torch.optim.AdamW(param_groups(self.model, config), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.steps_per_epoch = n_train_batches(self.train_data, config.batch_size)
        self.total_steps = config.epochs * self.steps_per_epoch
        self.warmup = effective_warmup(config, self.total_steps)
        self.crop = max(1, round(config.crop_seconds * store.codec.frame_rate))
        self.window, self.frame_budget = frame_window(config, store.codec.frame_rate)
        w_bona, w_spoof = class_weights(self.train_data.is_bonafide) if config.balance == "weighted-loss" else (1.0, 1.0)
        self.class_weight = torch.tensor([w_spoof, w_bona], device=self.device)  # indexed by target
        self.progress = _Progress()
        self.provenance: dict[str, Any] = {}

    def fit_stream(self) -> None:
        """Standardise the stream of a variant that asks for the training split's statistics
        (`energy`); a resumed run then loads the checkpoint's."""
        weighting = self.model.weighting
        stream = weighting.spec.stream if weighting is not None else None
        if stream is None or stream.norm != "train":
            return
        mean, std = self.source.stream_moments(self.train_data)
        weighting.fit_stream(torch.from_numpy(mean).float(), torch.tensor(std, dtype=torch.float32))

    @property
    def label(self) -> str:
        return self.store.codec.weights_label

    def state(self) -> dict[str, Any]:
        """The checkpoint dict of the current state (see `classify.checkpoint`)."""
        p = self.progress
        return {
            "model": self.model.state_dict(),
            "config": dataclasses.asdict(self.config),
            "codec": codec_dict(self.store.codec),
            "ssl": ssl_provenance(self.model),
            "store": store_entry(self.store),
            "optimizer": self.optimizer.state_dict(),
            "schedule": {"step": p.step, "total_steps": self.total_steps, "warmup_steps": self.warmup},
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": rng_state(self.generator),
            "epoch": p.epoch,
            "history": p.history,
            "early_stop": {"best_eer": p.best_eer, "best_epoch": p.best_epoch, "bad_epochs": p.bad_epochs,
                           "stopped": p.stopped},
            "provenance": self.provenance,
        }

    def resume(self, path: Path) -> None:
        """Continue from the checkpoint at ``path`` (same codec; config equal up to RESUMABLE_CHANGES),
        migrated to the current format (`classify.migrations`), into the model `classify.rebuild` built."""
        state = load_checkpoint(path)
        check_compatible(state, self.store, path)
        ssl_problems = check_ssl_compatible(state, ssl_provenance(self.model))
        if ssl_problems:
            raise CheckpointError(f"{path} was trained on other SSL features: {'; '.join(ssl_problems)}")
        now = dataclasses.asdict(self.config)
        then = state["config"]  # migrated: an older checkpoint's config says what it ran with
        changed = [k for k in now if k not in RESUMABLE_CHANGES and then.get(k) != now[k]]
        if changed:
            details = "; ".join(f"{k}: run {then.get(k)!r}, now {now[k]!r}" for k in changed)
            raise CheckpointError(f"{path} holds a run with other settings ({details}); resume with the same "
                                  "settings, or start over (--no-resume) or in another --out")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"], self.generator)
        stop = state["early_stop"]
        self.progress = _Progress(epoch=state["epoch"], step=state["schedule"]["step"], history=state["history"],
                                  best_eer=stop["best_eer"], best_epoch=stop["best_epoch"],
                                  bad_epochs=stop["bad_epochs"], stopped=stop["stopped"])
        p = self.progress
        patience_left = not (self.config.patience and p.bad_epochs >= self.config.patience)
        if p.stopped and p.epoch < self.config.epochs and patience_left:
            self.log(f"extending the run ({p.stopped} after epoch {p.epoch}) to {self.config.epochs} epochs")
            p.stopped = ""
        if state["schedule"]["total_steps"] != self.total_steps:
            self.log(f"the learning-rate schedule is recomputed for {self.config.epochs} epochs; the result will "
                     "differ from an uninterrupted run of that length")
        self.log(f"resuming {path} after epoch {p.epoch}")

    def run_epoch(self, epoch: int) -> tuple[float, float, float]:
        """Train one epoch: (mean loss, last learning rate, seconds spent gathering batches).
        Raises NonFiniteLoss at the first NaN or infinite loss."""
        self.model.train()
        batches = self.train_source.train_batches(self.train_data, self.config.batch_size, self.crop, self.config.pad,
                                            self.config.balance, self.generator)
        losses: list[float] = []
        load_seconds = 0.0
        lr = self.config.lr
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{self.config.epochs}", unit="batch",
                   leave=False, disable=None)
        with bar:
            while True:
                started = time.perf_counter()
                item = next(batches, None)
                load_seconds += time.perf_counter() - started
                if item is None:
                    break
                batch, targets = item
                for group in self.optimizer.param_groups:
                    group["lr"] = lr_at(self.progress.step, self.total_steps, self.warmup, group["peak_lr"])
                lr = self.optimizer.param_groups[0]["lr"]
                loss = self.step(batch.to(self.device), torch.from_numpy(targets).to(self.device))
                if not math.isfinite(loss):
                    raise NonFiniteLoss(f"the training loss became {loss} at epoch {epoch}, step {self.progress.step + 1}")
                self.progress.step += 1
                losses.append(loss)
                bar.set_postfix(loss=f"{loss:.4f}")
                bar.update()
        return float(np.mean(losses)), lr, load_seconds

    def step(self, batch: Batch, targets: torch.Tensor) -> float:
        """One optimizer step on ``batch`` with bona fide ``targets`` bool [B]; returns the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.dtype):
            logits = self.model(*batch.inputs())
        weight = self.class_weight[targets.long()]
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), weight=weight)
        value = float(loss.detach())
        if not math.isfinite(value):
            return value
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return value

    def dev_metrics(self) -> tuple[float, float]:
        """(EER, minDCF) of the dev split; NonFiniteLoss when the model gives non-finite scores."""
        scores = score_split(self.model, self.dev_source, self.dev_data, self.window, self.frame_budget,
                             self.device, self.dtype)
        if not np.isfinite(scores).all():
            raise NonFiniteLoss(f"the dev scores became NaN or infinite after epoch {self.progress.epoch + 1}")
        bona, spoof = scores[self.dev_data.is_bonafide], scores[~self.dev_data.is_bonafide]
        return compute_eer(bona, spoof)[0], compute_mindcf(bona, spoof)[0]

    def calibrate_best(self) -> Path:
        """Fit the calibration and thresholds of the model now loaded (the best one) on the dev
        split; save them into best.pt and calibration.json; return the JSON's path."""
        scores = score_split(self.model, self.dev_source, self.dev_data, self.window, self.frame_budget,
                             self.device, self.dtype)
        record = model_calibration(scores, self.dev_data.is_bonafide, self.config.dev_split, self.store.url,
                                   self.label, self.config.dev_view)
        best = load_checkpoint(self.out_dir / BEST)
        best["calibration"] = record
        save_checkpoint(self.out_dir / BEST, best)
        _write_json(self.out_dir / CALIBRATION_FILE, {**record, "checkpoint": str(self.out_dir / BEST)})
        return self.out_dir / CALIBRATION_FILE

    def end_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        """Early-stopping bookkeeping, checkpoints, and the history line of a finished epoch."""
        p = self.progress
        p.epoch = epoch
        improved = row["dev_eer"] < p.best_eer
        if improved:
            p.best_eer, p.best_epoch, p.bad_epochs = row["dev_eer"], epoch, 0
        else:
            p.bad_epochs += 1
        row["best"] = improved
        p.history.append(row)
        if self.config.patience and p.bad_epochs >= self.config.patience:
            p.stopped = EARLY_STOP
        elif epoch >= self.config.epochs:
            p.stopped = COMPLETED
        state = self.state()
        if improved:
            save_checkpoint(self.out_dir / BEST, state)
        save_checkpoint(self.out_dir / LAST, state)
        with (self.out_dir / HISTORY).open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        self.log(f"epoch {epoch}/{self.config.epochs}: train loss {row['train_loss']:.4f}, dev EER "
                 f"{100 * row['dev_eer']:.2f} %, dev minDCF {row['dev_min_dcf']:.4f}, lr {row['lr']:.3g}, "
                 f"{row['seconds']:.1f} s{' (best)' if improved else ''}")


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


def train(config: TrainConfig, store: FeatureStore, out_dir: str | Path, log: Callable[[str], None] = print,
          resume: bool = True, origin: dict[str, Any] | None = None, lease: Lease | None = None) -> TrainResult:
    """Train on ``config.train_split`` of ``store``, choose epochs by ``config.dev_split`` EER, write
    RUN_DIR (see the module docstring). With ``resume`` and an existing ``out_dir/last.pt``, the run
    continues from it. ``origin``: the provenance record of what asked for this run (a sweep passes
    its command's; default: this process's); the device is filled in here. The run holds
    ``out_dir``'s lease (`common.lease`: one run at a time in a folder, whoever calls) while it runs;
    ``lease``: the one the caller already holds on ``out_dir`` (a sweep trial's). Raises DataError
    (splits, store), CheckpointError (resume), ValueError (variant, head, device), LeaseHeld (another
    process trains in ``out_dir``); a non-finite loss ends the run with ``stopped == "non-finite loss"``."""
    out_dir = Path(out_dir)
    if lease is not None:
        if Path(lease.url).resolve() != out_dir.resolve():
            raise ValueError(f"the lease given is on {lease.url}, not on the run folder {out_dir}")
        return _train(config, store, out_dir, log, resume, origin)
    with Lease(str(out_dir), "training run", log=log):
        return _train(config, store, out_dir, log, resume, origin)


def _train(config: TrainConfig, store: FeatureStore, out_dir: Path, log: Callable[[str], None], resume: bool,
           origin: dict[str, Any] | None) -> TrainResult:
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    run = TrainingRun(config, store, out_dir, log)
    run.provenance = {**(origin or provenance()), "device": device_label(str(run.device))}
    info = store.codec
    n_trainable = run.model.n_trainable()
    uses = needs(config.variant)  # the variant's records say what it reads and runs
    trainable_share = budget.share(n_trainable, budget.frozen_used(
        store.attrs["codec"] if uses.codec else None, ssl_provenance(run.model), codebooks=uses.codebooks,
        encoder=uses.encoder))
    log(f"model: variant {config.variant}, head {config.head}: {budget.describe(trainable_share)}")
    log(f"codec weights: {info.weights_label}")
    if ssl_label(run.model):
        log(f"SSL weights: {ssl_label(run.model)}")
    log(f"data: {len(run.train_data)} {config.train_split} / {len(run.dev_data)} {config.dev_split} utterances, "
        f"{run.steps_per_epoch} steps per epoch, crops of {run.crop} frames, device {run.device}"
        f"{f', autocast {run.dtype}' if run.dtype else ''}")
    if resume and (out_dir / LAST).is_file():
        run.resume(out_dir / LAST)
    _write_json(out_dir / CONFIG, {
        "config": dataclasses.asdict(config), "store": store.url, "codec": codec_dict(info),
        "codec_weights": info.weights_label, "n_trainable": n_trainable,
        "trainable_percent_of_codec": 100 * n_trainable / info.parameters,
        "trainable_share": trainable_share, "ssl_weights": ssl_label(run.model), "ssl": ssl_provenance(run.model),
        "provenance": run.provenance,
    })
    (out_dir / HISTORY).write_text("".join(json.dumps(row) + "\n" for row in run.progress.history))

    message = ""
    while not run.progress.stopped:
        epoch = run.progress.epoch + 1
        epoch_started = time.perf_counter()
        try:
            loss, lr, load_seconds = run.run_epoch(epoch)
            dev_eer, dev_min_dcf = run.dev_metrics()
        except NonFiniteLoss as err:
            run.progress.stopped = DIVERGED
            kept = (f"the last good checkpoint is {out_dir / LAST} (epoch {run.progress.epoch})"
                    if run.progress.epoch else "no checkpoint was saved")
            message = f"training stopped: {err}; {kept}. Lower lr (now {config.lr:g}) or check the data."
            log(message)
            break
        run.end_epoch(epoch, {
            "epoch": epoch, "train_loss": loss, "dev_eer": dev_eer, "dev_min_dcf": dev_min_dcf, "lr": lr,
            "seconds": time.perf_counter() - epoch_started, "load_seconds": load_seconds,
            "codec_weights": info.weights_label,
            **({"view_draws": run.train_source.counts} if run.train_source is not run.source else {}),
            **({"dev_view": config.dev_view} if config.dev_view else {}),
        })
    p = run.progress
    if p.stopped != DIVERGED:
        message = (f"{p.stopped} after epoch {p.epoch}; best dev EER {100 * p.best_eer:.2f} % at epoch "
                   f"{p.best_epoch}")
        log(message)
    paths = {"run_dir": str(out_dir), "config": str(out_dir / CONFIG), "history": str(out_dir / HISTORY)}
    level_weights = None
    if p.history:
        best_path = out_dir / BEST
        run.model.load_state_dict(load_checkpoint(best_path)["model"])
        paths.update(best=str(best_path), last=str(out_dir / LAST))
        paths["calibration"] = str(run.calibrate_best())
        ood_path = fit_ood(run)  # the out-of-distribution record, beside the calibration (classify.ood)
        if ood_path is not None:
            paths["ood"] = str(ood_path)
        paths["training_curves"] = str(plot_training_curves(
            p.history, out_dir / CURVES, title=f"Training: {config.variant} / {config.head}", note=run.label))
        alpha = run.model.weighting.level_weights() if run.model.weighting is not None else None
        if alpha is not None:
            level_weights = alpha.tolist()
            paths["level_weights"] = str(plot_level_weights(
                alpha.numpy(), out_dir / LEVEL_WEIGHTS,
                title=f"Quantizer level weights ({config.variant}, best epoch {p.best_epoch})", note=run.label))
    return TrainResult(
        best_dev_eer=p.best_eer if p.history else math.nan,
        best_epoch=p.best_epoch,
        epochs_run=p.epoch,
        stopped=p.stopped,
        message=message,
        n_trainable=n_trainable,
        seconds=time.perf_counter() - started,
        level_weights=level_weights,
        paths=paths,
    )
