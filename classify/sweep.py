"""Sweeps: a grid of training settings over one feature store, run as independent, resumable trials.

A sweep file (TOML, see ``configs/sweeps/``) has two tables and an optional key::

    baseline = "mean"   the variant every setting is paired against in the report (default mean)
    [base]   training settings shared by every trial: TrainConfig fields, the `pipeline train --set` keys
    [grid]   a list of values per setting; every combination is one trial

A value in a grid list may also be a *bundle*: a table of settings applied together, which must set
the axis's own key, e.g. ``head = [{head = "lstm", head_kwargs = {proj_dim = 64}}, {head = "stats"}]``
(a table in the list of a setting whose values are tables, such as ``head_kwargs``, is a value).
A bundle's settings override [base] and may not be grid axes themselves.

``--set key=value`` overrides change ``[base]``; on a ``[grid]`` key they replace that axis: a list
is the new axis, one value pins it (``--set seed=0`` runs the seed-0 trials only, with the same
trial ids as in the full sweep).
Every trial's TrainConfig is built (and so validated, nested settings included) when the file is
read, before any store is opened: one bad trial refuses the whole file.

A trial's id is ``<variant>-s<seed>-<hash>``: the hash is a short SHA-256 of the trial's full
config and the store's identity (codec weights sha256, dataset name, frame count), so a re-run of
the same sweep on the same store finds the same ids, and the store's path may change.

Each trial trains into ``DIR/trials/<id>/`` (see `classify.train`; a killed trial resumes from its
``last.pt``), then scores its best checkpoint on the dev split (``dev/``) and the eval split
(``eval/``) with `classify.evaluate` (actDCF and Cllr of calibrated scores: the calibration is fitted
on dev, so the dev ones are self-calibrated and optimistic). The eval split may come from another
store of the same codec (``eval_store_url``: an eval set extracted on its own); without an eval
split (``eval_split`` None) trials are scored on dev only. :func:`run_trial` never raises: a
failure becomes a row with status ``failed`` and its error text.

``DIR/results.parquet`` holds one row per trial (see :func:`result_row`), rewritten atomically by the
client after every finished trial, so a killed sweep keeps what finished. A re-run skips the trials
whose row says ``ok`` and runs the others again (failed ones included).

This module runs trials through an ``execute`` callable (in-process, or dask futures: see
`pipeline.commands.sweep`); it never imports dask.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import itertools
import json
import math
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from classify.config import TrainConfig, resolve_device
from classify.evaluate import evaluate
from classify.migrations import id_fields, migrate_config
from classify.train import DIVERGED, train
from classify.variants import check_variant
from common.atomic import write_atomic
from common.config import ConfigError, build, load_toml
from common.lease import Lease
from common.provenance import device_label, provenance
from store.format import StoreFiles
from store.reader import FeatureStore
from store.views import state_token

SWEEP_TABLES = ("base", "grid")
SWEEP_KEYS = ("baseline",)
DEFAULT_BASELINE = "mean"
RESULTS = "results.parquet"
TRIALS = "trials"
TRIAL_LOG = "trial.log"
OK, FAILED = "ok", "failed"
#: Metrics recorded per scored split, as columns ``<split role>_<metric>`` (dev_eer, eval_cllr, ...).
METRICS = ("eer", "min_dcf", "act_dcf", "cllr")
#: TrainConfig field names, in declaration order: the config columns of the results table.
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
#: Fields whose values are tables: a table in their grid list is a value, not a bundle.
TABLE_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig) if str(f.type).startswith("dict"))
_ID_HASH_CHARS = 8


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file: ``base`` values (overrides applied) and the ``grid`` axes in file order."""

    path: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    baseline: str = DEFAULT_BASELINE

    @property
    def n_trials(self) -> int:
        return math.prod(len(values) for values in self.grid.values())

    def shape(self) -> str:
        """``"9 variant x 3 seed"`` (``"1 trial"`` for an empty grid)."""
        return " x ".join(f"{len(v)} {k}" for k, v in self.grid.items()) or "1 trial"


@dataclass(frozen=True)
class Trial:
    """One combination of the grid: its id, full config, and the grid values that made it."""

    trial_id: str
    config: TrainConfig
    params: dict[str, Any]


@dataclass(frozen=True)
class TrialTask:
    """What a worker needs to run one trial (plain data, cheap to pickle).

    ``threads``: torch intra-op threads to use in the worker (None: leave torch's setting);
    ``origin``: the sweep command's provenance record (`common.provenance`); ``eval_split``: None
    scores dev only; ``eval_store_url``: the store holding the eval split (None: ``store_url``)."""

    trial_id: str
    config: dict[str, Any]
    params: dict[str, Any]
    store_url: str
    trial_dir: str
    eval_split: str | None
    threads: int | None = None
    origin: dict[str, Any] | None = None
    eval_store_url: str | None = None


@dataclass(frozen=True)
class SweepOutcome:
    """``results``: the rows of this sweep's trials (trial order); ``ran``/``skipped``: trials run now /
    already finished before; ``failed``: ids of this sweep's failed trials."""

    results: pd.DataFrame
    ran: int
    skipped: int
    failed: list[str]


def _valid_keys() -> str:
    return ", ".join(sorted(CONFIG_FIELDS))


def _check_keys(keys: Iterable[str], where: str) -> None:
    unknown = sorted(set(keys) - set(CONFIG_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {_valid_keys()}")


def _build(values: dict[str, Any], where: str) -> TrainConfig:
    """TrainConfig from ``values``; every ConfigError message starts with ``where``."""
    try:
        return build(TrainConfig, values, where=where)
    except ConfigError as err:
        text = str(err)
        raise ConfigError(text if text.startswith(where) else f"{where}: {text}") from None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _check_axes(grid: dict[str, Any], where: str) -> None:
    """Each grid axis must be a non-empty list of distinct values."""
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {key} must be a non-empty list of values, got {values!r}")
        if len({_canonical(v) for v in values}) < len(values):
            raise ConfigError(f"{where}: {key} lists a value twice: {values!r}")


def _is_bundle(key: str, value: Any) -> bool:
    return isinstance(value, dict) and key not in TABLE_FIELDS


def _check_bundles(grid: dict[str, list[Any]], where: str) -> None:
    """A bundle sets its own axis's key, only valid keys, and no other grid axis."""
    for key, values in grid.items():
        for value in values:
            if not _is_bundle(key, value):
                continue
            if key not in value:
                raise ConfigError(f"{where}: a table in the {key} list sets settings together and must set {key} "
                                  f"itself, got {value!r}")
            _check_keys(value, f"{where}: {key} table {value!r}")
            clash = sorted((set(value) - {key}) & set(grid))
            if clash:
                raise ConfigError(f"{where}: the {key} table {value!r} sets {', '.join(clash)}, which is also a grid "
                                  "axis; keep each setting in one place")


def flatten_params(params: dict[str, Any]) -> dict[str, Any]:
    """One combination of grid values with its bundles spread into their settings."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        out.update(value if _is_bundle(key, value) else {key: value})
    return out


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepSpec:
    """Read and validate a sweep file; ``overrides`` are ``--set`` values (see the module docstring).

    Raises ConfigError naming the file (or ``--set``) and the problem: a missing file, bad TOML, a
    table other than [base] and [grid], an unknown key (the message lists the valid keys), a grid
    value that is not a non-empty list of distinct values, a key in both tables, or a value that
    TrainConfig rejects, in [base] or in any trial.
    """
    where = str(path)
    raw = load_toml(path)
    extra = sorted(set(raw) - set(SWEEP_TABLES) - set(SWEEP_KEYS))
    if extra:
        raise ConfigError(f"{where}: unexpected top-level key(s) {', '.join(extra)}; a sweep file has the "
                          "tables [base] (settings of every trial) and [grid] (lists of values to combine), "
                          "and optionally baseline = VARIANT")
    baseline = raw.get("baseline", DEFAULT_BASELINE)
    try:
        if not isinstance(baseline, str):
            raise ValueError(f"expected a variant name, got {baseline!r}")
        check_variant(baseline)
    except ValueError as err:
        raise ConfigError(f"{where}: baseline: {err}") from None
    base, grid = raw.get("base", {}), raw.get("grid", {})
    for name, table in (("base", base), ("grid", grid)):
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
    _check_keys(base, f"{where} [base]")
    _check_keys(grid, f"{where} [grid]")
    both = sorted(set(base) & set(grid))
    if both:
        raise ConfigError(f"{where}: key(s) {', '.join(both)} are in both [base] and [grid]; keep each in one")
    _check_axes(grid, f"{where} [grid]")
    overrides = dict(overrides or {})
    _check_keys(overrides, "--set")
    base, grid = dict(base), dict(grid)
    for key, value in overrides.items():
        if key in grid:
            grid[key] = value if isinstance(value, list) else [value]
        else:
            base[key] = value
    _check_axes({k: v for k, v in grid.items() if k in overrides}, "--set")
    _check_bundles(grid, f"{where} [grid]")
    _build(base, f"{where} [base]")
    spec = SweepSpec(path=where, base=base, grid=grid, baseline=baseline)
    for _ in _configs(spec):  # every trial's settings, nested ones included, before any store is read
        pass
    return spec


def store_identity(store: FeatureStore) -> dict[str, Any]:
    """What ties results to a store's content rather than its path (part of every trial id)."""
    return {
        "weights_sha256": store.codec.weights_sha256,
        "dataset": store.attrs.get("dataset", {}).get("name"),
        "frames": store.attrs.get("summary", {}).get("frames"),
    }


def trial_id(config: TrainConfig, identity: dict[str, Any]) -> str:
    """``<variant>-s<seed>-<hash>``, stable for equal configs and store identities; the hash is over
    the config in the form trial ids first hashed (`classify.migrations.id_fields`), so the ids of
    trials finished under an older format stay."""
    fields = id_fields(dataclasses.asdict(config))
    payload = _canonical({"config": fields, "store": identity})
    digest = hashlib.sha256(payload.encode()).hexdigest()[:_ID_HASH_CHARS]
    variant = "".join(c if c.isalnum() or c == "-" else "" for c in config.variant.lower())
    return f"{variant}-s{config.seed}-{digest}"


def expand(spec: SweepSpec, identity: dict[str, Any]) -> list[Trial]:
    """Every combination of the grid as a Trial, in the grid's order (last axis fastest).

    ConfigError names the file and the trial for a combination that TrainConfig rejects, or two
    combinations that give the same config (e.g. ``tau = [1, 1.0]``)."""
    trials: list[Trial] = []
    seen: dict[str, dict[str, Any]] = {}
    for params, config in _configs(spec):
        tid = trial_id(config, identity)
        if tid in seen:
            raise ConfigError(f"{spec.path}: trials {seen[tid]} and {params} have the same configuration")
        seen[tid] = params
        trials.append(Trial(tid, config, params))
    return trials


def _configs(spec: SweepSpec) -> Iterator[tuple[dict[str, Any], TrainConfig]]:
    """(grid values, TrainConfig) of every combination, in the grid's order; ConfigError naming the
    file and the trial for one that TrainConfig rejects."""
    keys = list(spec.grid)
    for combo in itertools.product(*(spec.grid[k] for k in keys)):
        params = flatten_params(dict(zip(keys, combo)))
        label = ", ".join(f"{k}={v!r}" for k, v in params.items())
        yield params, _build({**spec.base, **params}, f"{spec.path}: trial {label}")


def config_diff(config: TrainConfig, base: TrainConfig) -> dict[str, Any]:
    """The fields where ``config`` differs from ``base``, with ``config``'s values."""
    new, old = dataclasses.asdict(config), dataclasses.asdict(base)
    return {k: v for k, v in new.items() if v != old[k]}


def base_config(spec: SweepSpec) -> TrainConfig:
    """The TrainConfig of [base] alone (what trials are compared with in a dry run)."""
    return _build(spec.base, f"{spec.path} [base]")


def open_store(url: str) -> FeatureStore:
    """One FeatureStore per URL, store state and process: a worker reads a store's codes once (on first
    use) and reuses them for every trial it runs, as long as the store's group records are unchanged
    (`store.views.state_token`: a view or stream added by another process since, or a store
    recreated at the same URL, opens it again). The store's quick check runs first (a damaged store
    is refused)."""
    return _opened(url, state_token(StoreFiles(url)))


@functools.lru_cache(maxsize=4)
def _opened(url: str, state: str) -> FeatureStore:
    return FeatureStore(url, check=True)


def _config_columns(config: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig fields as flat columns; tables (``head_kwargs``, ``ssl_kwargs``) as canonical JSON."""
    return {k: _canonical(v) if isinstance(v, dict) else v for k, v in config.items()}


def result_row(task: TrialTask, status: str, error: str = "", **values: Any) -> dict[str, Any]:
    """A results-table row. Columns: ``trial_id``, ``status`` (ok / failed), ``error``; every
    TrainConfig field (``head_kwargs`` and ``ssl_kwargs`` as JSON); ``config_json`` (the full config),
    ``params_json`` (the grid values); ``dev_*`` and ``eval_*`` for each of METRICS (fractions;
    NaN when not reached); ``best_dev_eer``, ``best_epoch``, ``epochs_run``, ``stopped`` (from
    training); ``n_trainable``; ``wall_seconds`` (the whole trial), ``train_seconds``;
    ``codec_weights_label``, ``codec_weights_sha256``, ``codec_bandwidth``, ``codec_n_q``,
    ``codec_trained``; ``ssl_weights_label`` (SSL variants); ``level_weights`` (alpha of the best model as JSON, [Q] or [Q][D]; empty for
    `latent`); ``eval_per_attack_eer`` (JSON); ``eval_split`` ("" without one), ``store``,
    ``eval_store`` (the store of the eval split; "" without one), ``trial_dir``;
    ``device``, ``host``, ``pid`` and ``torch_threads`` of the process that ran it; ``finished_at`` (UTC ISO
    time); what made it (see :func:`provenance_columns`). ``values`` fill the columns known at the time."""
    row: dict[str, Any] = {"trial_id": task.trial_id, "status": status, "error": error}
    row.update(_config_columns(task.config))
    row["config_json"] = _canonical(task.config)
    row["params_json"] = _canonical(task.params)
    for role in ("dev", "eval"):
        row.update({f"{role}_{m}": math.nan for m in METRICS})
    row.update(best_dev_eer=math.nan, best_epoch=0, epochs_run=0, stopped="", n_trainable=0,
               wall_seconds=math.nan, train_seconds=math.nan, codec_weights_label="", codec_weights_sha256="",
               codec_bandwidth=math.nan, codec_n_q=0, codec_trained=False, ssl_weights_label="", level_weights="",
               eval_per_attack_eer="", eval_split=task.eval_split or "", store=task.store_url,
               eval_store=(task.eval_store_url or task.store_url) if task.eval_split else "",
               trial_dir=task.trial_dir, device="", host=socket.gethostname(), pid=os.getpid(),
               torch_threads=torch.get_num_threads(),
               finished_at=datetime.now(UTC).isoformat(timespec="seconds"))
    row.update(provenance_columns(task.origin or provenance()))
    row.update(values)
    return row


def provenance_columns(record: dict[str, Any]) -> dict[str, Any]:
    """``project_version``, ``git_commit``, ``git_dirty``, ``lock_sha256``, ``command`` and
    ``provenance_json`` (the whole record) of a `common.provenance` record."""
    git, lock = record.get("git") or {}, record.get("lock") or {}
    return {"project_version": record.get("version") or "", "git_commit": git.get("commit", ""),
            "git_dirty": git.get("dirty"), "lock_sha256": lock.get("sha256", ""),
            "command": record.get("command", ""), "provenance_json": _canonical(record)}


def _trial_logger(path: Path) -> Callable[[str], None]:
    def log(message: str) -> None:
        with path.open("a") as handle:
            handle.write(f"{datetime.now().isoformat(timespec='seconds')} {message}\n")
    return log


def _score_format(store: FeatureStore) -> str:
    """The dataset's official score format (`classify.scorefiles.score_format_of`: ASVspoof 5's for a
    dataset without one)."""
    return "auto"


def run_trial(task: TrialTask) -> dict[str, Any]:
    """Train one trial, score its best checkpoint on dev and eval, return its results row.

    Never raises: any error (and a diverged training) gives a row with status ``failed``, the
    error text, and whatever was measured before it; the traceback goes to the trial's log."""
    started = time.perf_counter()
    if task.threads:
        torch.set_num_threads(task.threads)
    out = Path(task.trial_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = _trial_logger(out / TRIAL_LOG)
    values: dict[str, Any] = {}
    lease = Lease(str(out), "sweep trial", log=log)  # a trial dask runs twice (a worker it thought lost) is refused
    try:
        lease.acquire()
        store = open_store(task.store_url)
        info = store.codec
        values.update(codec_weights_label=info.weights_label, codec_weights_sha256=info.weights_sha256,
                      codec_bandwidth=info.bandwidth, codec_n_q=info.n_q, codec_trained=info.trained)
        config = TrainConfig(**task.config)
        values["device"] = device_label(str(resolve_device(config.device)))
        result = train(config, store, out, log=log, resume=True, origin=task.origin, lease=lease)
        values.update(best_dev_eer=result.best_dev_eer, best_epoch=result.best_epoch,
                      epochs_run=result.epochs_run, stopped=result.stopped, n_trainable=result.n_trainable,
                      train_seconds=result.seconds,
                      level_weights="" if result.level_weights is None else json.dumps(result.level_weights))
        if result.stopped == DIVERGED:
            raise RuntimeError(result.message)
        roles = [("dev", config.dev_split, store)]
        if task.eval_split is not None:
            roles.append(("eval", task.eval_split, open_store(task.eval_store_url) if task.eval_store_url else store))
        for role, split, scored in roles:
            metrics = evaluate(out, scored, split, out / role, fmt=_score_format(scored), device=config.device,
                               log=log, origin=task.origin,
                               view=(config.dev_view or None) if role == "dev" else None)  # dev as selected
            values.update({f"{role}_{m}": metrics[m] for m in METRICS})
            values["ssl_weights_label"] = metrics.get("ssl_weights", {}).get("label", "")
            if role == "eval":
                values["eval_per_attack_eer"] = _canonical(
                    {attack: m["eer"] for attack, m in metrics["per_attack"].items()})
    except Exception as err:  # noqa: BLE001 - a trial's failure is data, recorded in its row
        log(traceback.format_exc())
        return result_row(task, FAILED, f"{type(err).__name__}: {err}", wall_seconds=time.perf_counter() - started,
                          **values)
    finally:
        lease.release()
    return result_row(task, OK, wall_seconds=time.perf_counter() - started, **values)


def read_results(out_dir: str | Path) -> pd.DataFrame:
    """``DIR/results.parquet``, or an empty table when there is none yet. A table written before a
    TrainConfig field existed gets that field's column from each row's config migrated to the current
    format (`classify.migrations.migrate_config`: what its trials ran with; their ids did not change)."""
    path = Path(out_dir) / RESULTS
    table = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
    missing = [name for name in CONFIG_FIELDS if name not in table.columns]
    if len(table) and missing and "config_json" in table.columns:
        configs = [migrate_config(json.loads(text)) for text in table["config_json"]]
        for name in missing:
            if all(name in config for config in configs):
                table[name] = [_config_columns({name: config[name]})[name] for config in configs]
    return table


def write_results(out_dir: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Replace ``DIR/results.parquet`` with ``rows`` atomically (temporary file, then rename)."""
    buffer = io.BytesIO()
    pd.DataFrame(list(rows)).to_parquet(buffer, index=False)
    return write_atomic(Path(out_dir) / RESULTS, buffer.getbuffer(), fault="sweep:before-results-replace")


def finished_ids(out_dir: str | Path) -> set[str]:
    """Ids of the trials recorded as ok in ``DIR/results.parquet``."""
    table = read_results(out_dir)
    return set(table.loc[table["status"] == OK, "trial_id"]) if len(table) else set()


Executor = Callable[[list[TrialTask]], Iterator[dict[str, Any]]]


def run_sweep(trials: list[Trial], store_url: str, out_dir: str | Path, eval_split: str | None, execute: Executor,
              threads: int | None = None, on_row: Callable[[dict[str, Any]], None] | None = None,
              origin: dict[str, Any] | None = None, eval_store_url: str | None = None) -> SweepOutcome:
    """Run the trials not yet finished in ``out_dir`` through ``execute`` (which yields one row per
    task, in any order), rewriting ``results.parquet`` after each; call ``on_row`` with each row.
    ``eval_split`` None: dev only; ``eval_store_url``: the eval split's store, if not ``store_url``.

    Rows of other trials already in the table (another grid over the same DIR) are kept. The sweep
    holds DIR's lease (`common.lease`) while it runs: a second sweep into DIR is refused (LeaseHeld)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with Lease(str(out_dir), "sweep", log=print):
        rows = {row["trial_id"]: row for row in read_results(out_dir).to_dict("records")}
        done = {tid for tid, row in rows.items() if row["status"] == OK}
        tasks = [TrialTask(t.trial_id, dataclasses.asdict(t.config), t.params, store_url,
                           str(out_dir / TRIALS / t.trial_id), eval_split, threads, origin or provenance(),
                           eval_store_url)
                 for t in trials if t.trial_id not in done]
        for row in execute(tasks):
            rows[row["trial_id"]] = row
            write_results(out_dir, rows.values())
            if on_row:
                on_row(row)
    ids = [t.trial_id for t in trials]
    results = pd.DataFrame([rows[tid] for tid in ids if tid in rows])
    failed = [tid for tid in ids if tid not in rows or rows[tid]["status"] != OK]
    return SweepOutcome(results=results, ran=len(tasks), skipped=len(trials) - len(tasks), failed=failed)
