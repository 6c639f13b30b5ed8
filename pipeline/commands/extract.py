"""`pipeline extract`: run the frozen codec once over a corpus into a feature store."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
from tqdm import tqdm

from common.config import load_config, parse_overrides
from extract.codec import WeightsError
from extract.datasets import DATASETS, DatasetError, get_dataset
from extract.run import ExtractConfig, extract, resolve_device
from extract.sizing import available_memory_gb, choose_workers, estimate_audio_hours
from extract.unit import UnitTask, iter_units, run_units, task_slices, warm_up
from pipeline.cluster import NO_WORKER_SECONDS, WorkersLost, as_finished, background_client, threads_per_worker
from pipeline.errors import one_line
from store.writer import StoreError


def _splits(value: str | None) -> list[str] | None:
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


def default_workers(config: ExtractConfig, log=None) -> int:
    """On CUDA one worker process per GPU, each on its own. On CPUs chosen by the corpus's audio hours
    and the available memory (`extract.sizing.choose_workers`: in this process below an hour of
    audio or when fewer than two workers fit, else one single-thread worker per core), said in ``log``.
    Re-coding a stored SSL stream (``--ssl-from``) runs in this process."""
    if config.ssl_from:  # re-coding a stored stream runs no model: nothing to spread over processes
        if log is not None:
            log(f"re-coding stream {config.ssl_from!r} runs in this process (--workers N decides otherwise)")
        return 0
    if resolve_device(config.device or "auto").startswith("cuda"):
        import torch  # noqa: PLC0415

        return max(1, torch.cuda.device_count())
    paths = get_dataset(config.dataset).load(Path(config.root), config.splits).table["path"].tolist()
    hours = estimate_audio_hours(paths)
    workers, why = choose_workers(hours, available_memory_gb(), os.cpu_count() or 1)
    if log is not None:
        log(f"extraction runs {why} (--workers N decides otherwise)")
    return workers


@one_line("extraction", "fix that and run the same command again: every work unit already committed is kept, "
          "only the others run", also=(DatasetError, StoreError, WeightsError))
def run_extraction(config: ExtractConfig, workers: int | None, scheduler: str | None) -> int:
    """Run an extraction with a progress bar; print a summary; return the exit status.
    ``workers``: LocalCluster processes (0: in this process; None: :func:`default_workers`)."""
    bar = tqdm(unit="utt", dynamic_ncols=True, desc="extract", file=sys.stderr, disable=True)  # enabled once units start
    audio = {"seconds": 0.0, "start": time.perf_counter()}

    def progress(result: dict) -> None:
        audio["seconds"] += result["audio_seconds"]
        rate = audio["seconds"] / max(1e-9, time.perf_counter() - audio["start"])
        bar.update(result["utterances"])
        bar.set_postfix_str(f"{rate:.1f} audio-s/s, {result['failed']} failed in unit {result['unit']}" if result["failed"] else f"{rate:.1f} audio-s/s")

    def log(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    def start_bar(tasks: list[UnitTask]) -> None:
        nonlocal bar
        bar.close()
        bar = tqdm(total=sum(len(t.rows) for t in tasks), unit="utt", dynamic_ncols=True, desc="extract", file=sys.stderr)
        audio["start"] = time.perf_counter()

    try:
        gpus = resolve_device(config.device).startswith("cuda")
        workers = default_workers(config, log) if workers is None and not scheduler else (workers or 0)
        if workers == 0 and not scheduler:
            def submit_local(tasks: list[UnitTask]) -> Iterator[dict]:
                start_bar(tasks)
                return iter_units(tasks)

            result = extract(config, submit_local, log=log, progress=progress)
        else:
            if config.torch_threads is None and not scheduler:
                config.torch_threads = threads_per_worker(workers)
            if gpus and config.decode_threads is None and not scheduler:  # each GPU's share of the cores
                config.decode_threads = max(1, threads_per_worker(workers) - 1)
            with background_client(workers, scheduler, gpus=gpus, warm=warm_up) as get_client:
                from distributed.scheduler import KilledWorker  # noqa: PLC0415

                def submit(tasks: list[UnitTask]) -> Iterator[dict]:
                    client = get_client()
                    start_bar(tasks)
                    slots = sum(client.nthreads().values())
                    futures = client.map(run_units, task_slices(tasks, slots), pure=False)
                    try:
                        for _, results in as_finished(client, futures, None if scheduler else NO_WORKER_SECONDS):
                            if isinstance(results, BaseException):
                                raise results
                            yield from results
                    except KilledWorker as err:
                        raise StoreError(f"a dask worker died each time it ran a work unit (killed, or out of "
                                         f"memory?): {err}. The units already committed are kept: run the same "
                                         "command again to resume") from None
                    except WorkersLost as err:
                        raise StoreError(f"{err}. The units already committed are kept: run the same command "
                                         "again to resume") from None

                result = extract(config, submit, log=log, progress=progress)
    finally:
        bar.close()

    table, failures = result.table, result.failures
    ok = table["status"] == "ok"
    click.echo(f"store: {result.store}")
    click.echo(f"codec weights: {result.weights.label}")
    if result.ssl_weights:
        click.echo(f"SSL weights: {result.ssl_weights}")
    if result.views:
        click.echo(f"views extracted: {', '.join(result.views)} (`pipeline inspect` lists every view's recipe)")
    if result.added_streams:
        click.echo(f"streams added to the finished store: {', '.join(result.added_streams)} (the others were not touched)")
    click.echo(
        f"utterances: {int(ok.sum())} extracted, {len(failures)} failed; "
        f"{table.loc[ok, 'duration'].sum():.1f} audio seconds; {int(table['n_frames'].sum())} frames; "
        f"{result.ran_units} units run, {result.resumed_units} already done; {result.wall_seconds:.1f} s"
    )
    if len(failures):
        click.echo("failures (see failures.parquet, `pipeline inspect`):")
        for row in failures.head(20).itertuples():
            click.echo(f"  {row.path}: {row.reason}")
        if len(failures) > 20:
            click.echo(f"  ... and {len(failures) - 20} more")
        return 1
    return 0


@click.command("extract")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), required=True, help="Corpus layout.")
@click.option("--root", required=True, help="Dataset root (for manifest: the CSV/Parquet file).")
@click.option("--out", required=True, help="Feature store to create or resume (path or fsspec URL).")
@click.option("--split", "split", default=None, help="Comma-separated splits (default: every split).")
@click.option("--bandwidth", type=float, default=None, help="kbps: 1.5/3/6/12/24 = 2/4/8/16/32 quantizers (default 6).")
@click.option("--weights", default=None, help="pretrained | untrained (seeded random LSUV encoder + k-means codebooks; offline, not real codec features) | FILE (a state dict; e.g. a store's codec_weights.th). Default pretrained.")
@click.option("--latent/--no-latent", default=None, help="Also store the continuous encoder output (default on; "
              "asked of a finished store without it, it is added).")
@click.option("--energy/--no-energy", default=None, help="Also store each frame's log energy, a no-codec control (default on).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--workers", type=int, default=None, help="LocalCluster worker processes (0: run in this process; "
              "default on CPUs: by the corpus's audio hours and memory, said at start (in this process under 1 "
              "audio hour); on CUDA one per GPU, each worker on its own GPU).")
@click.option("--scheduler", default=None, help="Address of a running dask scheduler to use instead of a LocalCluster.")
@click.option("--batch-seconds", type=float, default=None, help="Padded audio seconds per encoder batch (default 8 on CPU, 240 on CUDA; 0 = one utterance at a time).")
@click.option("--seed", type=int, default=None, help="Seed of the untrained codec (and SSL model) (default 0).")
@click.option("--ssl", default=None, help="Also add the frozen SSL stream of the paper's full system: wavlm-large "
              "(wavlm-tiny: a test architecture). Added to an existing store without touching its codes.")
@click.option("--ssl-layers", default=None, help="SSL transformer layers to store, 1-based: 1-12 (default) or e.g. 1-4,8.")
@click.option("--ssl-weights", default=None, help="pretrained (torch hub cache or torchaudio's URL) | FILE | untrained "
              "(offline and tests only). Default pretrained.")
@click.option("--ssl-crop", type=float, default=None, help="Keep only the centre SECONDS of each train utterance in the "
              "SSL stream (dev and eval stay whole): the stream's size drops to about SECONDS / mean duration.")
@click.option("--ssl-storage", default=None, help="How the SSL stream stores its frames: int8 (default for a new "
              "stream: per-frame-per-layer scales, 2x smaller than float16, every layer's cosine to float16 >= 0.999), "
              "float16, pca:K (K principal components per layer fitted on train, "
              "float16; pca:256 is 4x smaller for WavLM-Large) or pca:K:int8 (8x at K=256). Recorded in the stream; "
              "training reads every storage back as frames. Not given, a stream the store already has keeps its own.")
@click.option("--ssl-from", default=None, help="Re-code this finished SSL stream of the store into the stream "
              "--set ssl_stream=NAME with --ssl-storage (and --ssl-layers, a subset of its layers) without running the "
              "SSL model; it keeps the source's model, weights and crop.")
@click.option("--views", "views", type=click.Path(dir_okay=False), default=None, help="Views file (TOML, e.g. "
              "configs/views/train.toml): also extract each view's augmented copy of its splits; a finished store "
              "gets the views it lacks. The estimated cost is printed first.")
@click.option("--views-only", default=None, help="Comma-separated names of the views file's views to extract (default all).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="TOML file of extraction settings.")
@click.option("--set", "overrides", multiple=True, help="key=value override of any setting (repeatable).")
@one_line("extraction")
def command(dataset, root, out, split, bandwidth, weights, latent, energy, device, workers, scheduler, batch_seconds, seed,
            ssl, ssl_layers, ssl_weights, ssl_crop, ssl_storage, ssl_from, views, views_only, config_file, overrides):
    """Run the frozen EnCodec 24 kHz once over a corpus into a Zarr v3 feature store.

    Re-running the same command resumes an interrupted extraction. Exit status 1 when any file failed.
    """
    if workers is not None and workers < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--workers")
    config = load_config(
        ExtractConfig,
        config_file,
        parse_overrides(overrides),
        dataset=dataset,
        root=root,
        out=out,
        splits=_splits(split),
        bandwidth=bandwidth,
        weights=weights,
        latent=latent,
        energy=energy,
        device=device,
        batch_seconds=batch_seconds,
        seed=seed,
        ssl=ssl,
        ssl_layers=ssl_layers,
        ssl_weights=ssl_weights,
        ssl_crop=ssl_crop,
        ssl_storage=ssl_storage,
        ssl_from=ssl_from,
        views=views,
        views_only=views_only,
    )
    sys.exit(run_extraction(config, workers, scheduler))
