"""`pipeline demo`: the whole chain on the generated demo corpus, in a few minutes on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch
from tqdm import tqdm

from classify.config import TrainConfig
from classify.evaluate import evaluate
from classify.train import train
from common.config import load_config, parse_overrides
from extract.datasets.demo import generate_demo_corpus
from extract.run import ExtractConfig
from pipeline.commands.extract import run_extraction
from pipeline.errors import local_path, one_line
from store.reader import FeatureStore

DEMO_TRAIN = {"epochs": 12, "patience": 0, "crop_seconds": 2.0, "batch_size": 16, "warmup_steps": 10}


def _log(message: str) -> None:
    tqdm.write(message)


@click.command("demo")
@click.option("--out", "out_dir", callback=local_path, type=click.Path(file_okay=False, path_type=Path), default=Path("demo_out"), show_default=True)
@click.option("--workers", type=int, default=None,
              help="Extraction workers (0: in this process; default: as `pipeline extract`, in this process on CPUs).")
@click.option("--variant", default="qaf-static", show_default=True, help="Hierarchy weighting variant to train.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Training setting override (repeatable).")
@one_line("the demo", "fix that and run the same command again: it reuses what is done")
def command(out_dir: Path, workers: int | None, variant: str, overrides: tuple[str, ...]) -> None:
    """Generate the synthetic demo corpus, extract it with an UNTRAINED codec (no download), train
    a hierarchy weighting + head, evaluate on the eval split, and say where everything is.

    Re-running resumes or reuses what is already there. The numbers say nothing about real
    spoofing detection: the corpus is synthetic and the codec untrained.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = generate_demo_corpus(out_dir / "corpus")
    store_url = str(out_dir / "features.zarr")
    click.echo(f"[1/3] extract {corpus} -> {store_url}")
    extraction = ExtractConfig(dataset="demo", root=str(corpus), out=store_url, weights="untrained", kmeans_frames=4096)
    if run_extraction(extraction, workers, None) != 0:
        raise click.ClickException("extraction of the demo corpus had failures (see above)")
    store = FeatureStore(store_url)
    config = load_config(TrainConfig, None, {**DEMO_TRAIN, **parse_overrides(overrides)}, variant=variant)
    torch.set_num_threads(1)  # a 0.7 M-parameter model: one thread is faster than two on small CPUs
    run_dir = out_dir / "run"
    click.echo(f"[2/3] train {config.variant} + {config.head} head -> {run_dir}")
    result = train(config, store, run_dir, log=_log)
    eval_dir = out_dir / "eval"
    click.echo(f"[3/3] evaluate on eval -> {eval_dir}")
    metrics = evaluate(run_dir, store, "eval", eval_dir, log=_log)
    click.echo("")
    click.echo(f"codec weights: {store.codec.weights_label}")
    click.echo("corpus: synthetic demo signals, not speech: these numbers say nothing about real spoofing detection")
    click.echo(f"dev EER {100 * result.best_dev_eer:.2f} % (epoch {result.best_epoch}); eval EER {100 * metrics['eer']:.2f} %, "
               f"minDCF {metrics['min_dcf']:.4f}, actDCF {metrics['act_dcf']:.4f}, Cllr {metrics['cllr']:.4f}")
    click.echo(f"store:       {store_url}  (pipeline inspect {store_url})")
    click.echo(f"checkpoints: {run_dir}/best.pt, {run_dir}/last.pt")
    click.echo(f"plots:       {run_dir}/training_curves.png, {run_dir}/level_weights.png, {eval_dir}/det.png")
    scores = sorted(p.name for p in eval_dir.glob("scores*"))
    click.echo(f"scores:      {', '.join(str(eval_dir / s) for s in scores)}")
    click.echo(f"metrics:     {eval_dir}/metrics.json")
    if result.level_weights is not None:
        click.echo(f"learned level weights (alpha, mean over dims): {json.dumps(_level_means(result.level_weights))}")


def _level_means(weights: list) -> list[float]:
    return [round(sum(w) / len(w), 4) if isinstance(w, list) else round(w, 4) for w in weights]
