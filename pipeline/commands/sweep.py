"""`pipeline sweep`: every combination of a sweep file's grid, trained and scored in parallel on dask."""

from __future__ import annotations

import os
import secrets
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import click
from tqdm import tqdm

from classify.report import ReportContext, format_ranking, write_report
from classify.report_stats import ranking, split_summaries
from classify.sweep import (
    FAILED,
    OK,
    SweepSpec,
    Trial,
    TrialTask,
    base_config,
    config_diff,
    expand,
    finished_ids,
    load_sweep,
    open_store,
    result_row,
    run_sweep,
    run_trial,
    store_identity,
)
from common.config import ConfigError, parse_overrides
from pipeline.cluster import NO_WORKER_SECONDS, WorkersLost, as_finished, dask_client, threads_per_worker
from pipeline.commands.matrix import Several, many_values
from pipeline.errors import local_path, one_line


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _cluster_threads(client) -> int:
    """torch threads per trial on a running cluster: each host's cores shared by its worker threads
    (the smallest share over hosts)."""
    cores = client.run(os.cpu_count)
    slots_of = client.nthreads()
    per_host = Counter()
    for address, slots in slots_of.items():
        per_host[urlparse(address).hostname] += slots
    return min(max(1, (cores[a] or 1) // per_host[urlparse(a).hostname]) for a in slots_of)


def _execute_local(tasks: list[TrialTask]) -> Iterator[dict]:
    return map(run_trial, tasks)


def _execute_dask(client, no_worker_seconds: float | None = NO_WORKER_SECONDS):
    """An executor that submits every task at once and yields rows as trials finish; a trial
    whose worker died (or whose future failed) becomes a failed row. WorkersLost when the cluster
    has had no worker for ``no_worker_seconds`` (`pipeline.cluster.as_finished`)."""

    def execute(tasks: list[TrialTask]) -> Iterator[dict]:
        futures = {client.submit(run_trial, task, key=f"trial-{task.trial_id}-{secrets.token_hex(4)}", pure=False): task for task in tasks}
        for future, row in as_finished(client, futures, no_worker_seconds):
            if isinstance(row, Exception):  # a lost worker fails its trial, not the sweep
                row = result_row(futures[future], FAILED, f"{type(row).__name__}: {row}", host="", pid=0, torch_threads=0)
            yield row

    return execute


def _dry_run(spec: SweepSpec, trials: list[Trial], out_dir: Path) -> None:
    base = base_config(spec)
    done = finished_ids(out_dir)
    click.echo(f"{len(trials)} trial(s) ({spec.shape()}), {sum(t.trial_id in done for t in trials)} already done in "
               f"{out_dir}")
    click.echo("base: " + (", ".join(f"{k}={v!r}" for k, v in spec.base.items()) or "TrainConfig defaults"))
    width = max(len(t.trial_id) for t in trials)
    for trial in trials:
        diff = config_diff(trial.config, base)
        text = ", ".join(f"{k}={v!r}" for k, v in diff.items()) or "(same as base)"
        click.echo(f"  {trial.trial_id:<{width}}  {'done' if trial.trial_id in done else 'to run':<6}  {text}")


def _on_row(bar: tqdm):
    def on_row(row: dict) -> None:
        bar.update()
        if row["status"] == OK:
            _log(f"{row['trial_id']}: eval EER {100 * row['eval_eer']:.2f} %, dev EER {100 * row['dev_eer']:.2f} %, "
                 f"{row['epochs_run']} epochs, {row['wall_seconds']:.0f} s")
        else:
            _log(f"{row['trial_id']}: FAILED: {row['error']}")
    return on_row


def _official(store) -> bool:
    """True when the store's dataset is an official ASVspoof corpus (its registry record says so)."""
    from extract.datasets import DATASETS  # noqa: PLC0415 - the dataset registry, only for the report

    dataset = DATASETS.get(str(store.attrs.get("dataset", {}).get("name")))
    return bool(dataset is not None and dataset.official)


def _eval_split(store, eval_store, asked: str | None, separate: bool) -> str | None:
    """The split every trial is scored on: ``asked`` (it must be in ``eval_store``), else ``eval``
    when ``eval_store`` has it, else None (dev only; refused for a separate eval store, which is
    there for its eval split). Also refuses an eval store of another codec."""
    differing = store.codec.compatible_with(eval_store.codec)
    if differing:
        raise click.ClickException(f"{eval_store.url} (--eval-features) holds features of another codec than "
                                   f"{store.url} (differing: {', '.join(differing)}); extract it with the same codec "
                                   "weights and bandwidth")
    splits = sorted(eval_store.utterances["split"].unique())
    if asked is not None and asked not in splits:
        raise click.ClickException(f"{eval_store.url}: no split {asked!r} to score (--eval-split); the store has "
                                   f"{', '.join(splits)}")
    if asked is not None or "eval" in splits:
        return asked or "eval"
    if separate:
        raise click.ClickException(f"{eval_store.url}: no split 'eval' (--eval-features); the store has "
                                   f"{', '.join(splits)}: name one with --eval-split")
    _log(f"{store.url} has no split 'eval' (and no --eval-features): trials are scored on dev only and ranked by "
         "dev EER")
    return None


def _test_matrix(results, test_features: tuple[str, ...], out_dir: Path) -> None:
    """`pipeline matrix` of the dev-selected setting's runs on the test stores, into OUT/matrix/."""
    from classify.matrix import dev_selected_runs, run_matrix  # noqa: PLC0415

    try:
        setting, runs = dev_selected_runs(results)
        click.echo(f"dev-selected setting ({len(runs)} seed(s)): {setting}", err=True)
        run_matrix(runs, many_values(test_features), out_dir / "matrix", log=_log)
    except ValueError as err:
        raise click.ClickException(f"test stores: {err}") from None
    click.echo(f"test matrix of the dev-selected setting: {out_dir / 'matrix' / 'matrix.md'}")


@click.command("sweep")
@click.option("--features", required=True, help="Feature store made by `pipeline extract` (path or fsspec URL).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Sweep file: [base] settings and [grid] lists (see configs/sweeps/).")
@click.option("--out", "out_dir", callback=local_path, type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Sweep directory: trials/, results.parquet, report.md. Re-running resumes it.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="LocalCluster worker processes, one trial each at a time (0: run in this process).")
@click.option("--scheduler", default=None, help="Address of a running dask scheduler to use instead of a LocalCluster.")
@click.option("--eval-split", default=None,
              help="Split every trial is scored on (default eval; when there is none, trials are scored and "
                   "ranked on dev alone).")
@click.option("--eval-features", default=None,
              help="Feature store holding the eval split, when it was extracted on its own (same codec).")
@click.option("--test-features", cls=Several, multiple=True,
              help="Test stores (other corpora; several, or the flag repeated): the dev-selected setting's runs (all "
                   "its seeds) are scored on each, as `pipeline matrix`, into OUT/matrix/.")
@click.option("--dry-run", is_flag=True, help="List the trials (id, status, config diff from [base]) and exit.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a [base] setting, or replace a [grid] axis: seed=0 pins it, "
                   "seed=[0,1] is the new list (repeatable).")
@one_line("sweep", "fix that and run the same command again: finished trials are skipped")
def command(features, config_file, out_dir, workers, scheduler, eval_split, eval_features, test_features, dry_run,
            overrides):
    """Train every combination of a sweep file's [grid] (each with the [base] settings), score each
    trial's best checkpoint on the dev and eval splits, and write results.parquet and report.md.

    Trials run in parallel on dask workers; each worker reads the store once. With --scheduler,
    the store and --out must be reachable under the same paths from every worker. Finished trials
    are skipped on a re-run and a killed trial resumes from its last.pt. Exit status 1 when any
    trial failed.
    """
    if workers < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--workers")
    try:
        values = parse_overrides(overrides)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="--set") from None
    spec = load_sweep(config_file, values)  # every trial's settings, before any store is opened
    store = open_store(features)
    eval_store = open_store(eval_features) if eval_features else store
    identity = store_identity(store)
    if eval_features:
        identity["eval_store"] = store_identity(eval_store)
    trials = expand(spec, identity)
    if dry_run:
        _dry_run(spec, trials, out_dir)
        return
    eval_split = _eval_split(store, eval_store, eval_split, eval_features is not None)

    click.echo(f"sweep {config_file}: {len(trials)} trial(s) ({spec.shape()}) on {store.url}", err=True)
    click.echo(f"codec weights: {store.codec.weights_label}", err=True)
    bar = tqdm(total=len(trials), unit="trial", desc="sweep", dynamic_ncols=True, file=sys.stderr)
    try:
        if workers == 0 and not scheduler:
            outcome = run_sweep(trials, store.url, out_dir, eval_split, _execute_local, on_row=_on_row(bar),
                                eval_store_url=eval_features)
        else:
            with dask_client(workers, scheduler) as client:
                threads = _cluster_threads(client) if scheduler else threads_per_worker(workers)
                outcome = run_sweep(trials, store.url, out_dir, eval_split,
                                    _execute_dask(client, None if scheduler else NO_WORKER_SECONDS), threads=threads,
                                    on_row=_on_row(bar), eval_store_url=eval_features)
    except WorkersLost as err:
        raise click.ClickException(f"sweep stopped: {err}; run the same command again: finished trials are "
                                   "skipped") from None
    finally:
        bar.close()

    base = base_config(spec)
    context = ReportContext(
        sweep_file=str(config_file), store_url=store.url,
        dataset=str(store.attrs.get("dataset", {}).get("name")), dataset_root=str(store.attrs.get("dataset", {}).get("root", "")),
        eval_split=eval_split or "", base=spec.base, grid=spec.grid,
        splits={**split_summaries(store, [base.train_split, base.dev_split]),
                **(split_summaries(eval_store, [eval_split]) if eval_split else {})},
        utterances=eval_store.utterances if eval_split else None, baseline=spec.baseline,
        official_dataset=_official(store))
    report = write_report(outcome.results, out_dir, context)
    click.echo(f"{outcome.ran} trial(s) run, {outcome.skipped} already done, {len(outcome.failed)} failed; "
               f"codec weights: {store.codec.weights_label}")
    click.echo(format_ranking(ranking(outcome.results), intervals=False))
    click.echo(f"report: {report} (with the eval EERs' 95 % intervals over speakers and attacks)")
    if test_features:
        _test_matrix(outcome.results, test_features, out_dir)
    if outcome.failed:
        click.echo(f"failed trial(s): {', '.join(outcome.failed)} (errors in {out_dir / 'results.parquet'} and "
                   "each trial's trial.log)", err=True)
        sys.exit(1)
