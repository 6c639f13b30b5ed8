"""`pipeline train`: train a hierarchy weighting and head on a feature store's codes."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import click
from tqdm import tqdm

from classify.config import DEVICES, TrainConfig
from classify.heads import HEADS
from classify.train import DIVERGED, train
from classify.variants import VARIANT_NAMES
from common.config import ConfigError, load_config, parse_overrides
from pipeline.errors import local_path, one_line
from store.reader import FeatureStore


def _log(message: str) -> None:
    tqdm.write(message)  # above the progress bar, not through it


@click.command("train")
@click.option("--features", required=True, help="Feature store made by `pipeline extract` (path or fsspec URL).")
@click.option("--out", "out_dir", callback=local_path, type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run directory; re-running into it resumes from its last.pt.")
@click.option("--variant", default=None, help=f"Hierarchy weighting: {', '.join(VARIANT_NAMES)} (default qaf-static).")
@click.option("--head", default=None, help=f"Classifier head: {', '.join(HEADS)} (default lstm).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML file of training settings (see configs/train/default.toml).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any setting, e.g. --set lr=3e-4 --set head_kwargs={hidden_dim=64} (repeatable).")
@click.option("--seed", type=int, default=None, help="Seed of initialisation and data order (default 0).")
@click.option("--epochs", type=int, default=None, help="Maximum number of epochs (default 30).")
@click.option("--train-split", default=None, help="Split to train on (default train).")
@click.option("--dev-split", default=None, help="Split for early stopping and model choice (default dev).")
@click.option("--device", type=click.Choice(DEVICES), default=None, help="Default auto: cuda when available.")
@click.option("--ssl-online", is_flag=True, default=False,
              help="SSL variants: compute the SSL layers from the audio during training instead of reading the "
                   "store's SSL stream (sets ssl_kwargs.online; for caches too large to keep).")
@click.option("--views", default=None, help="Also train on the store's augmented views: all, or a,b (sets views; "
              "each epoch each utterance is drawn clean with probability view_clean_share, default 0.5).")
@click.option("--dev-view", default=None, help="Choose the best epoch and fit the calibration on this augmented "
              "view of the dev split instead of the clean one (sets dev_view; default: clean dev).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from OUT/last.pt when there is one (else start over).")
def command(features, out_dir, variant, head, config_file, overrides, seed, epochs, train_split, dev_split,
            device, ssl_online, views, dev_view, resume):
    """Train on the cached codes of a feature store: writes best.pt, last.pt, history.jsonl,
    config.json, training_curves.png and level_weights.png to --out. Exit status 1 when the loss
    became NaN (the last good checkpoint stays)."""
    try:
        values = parse_overrides(overrides)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="--set") from None
    _train(features=features, out_dir=out_dir, config_file=config_file, values=values, ssl_online=ssl_online,
           resume=resume, flags=dict(variant=variant, head=head, seed=seed, epochs=epochs, train_split=train_split,
                                     dev_split=dev_split, device=device, views=views,
                                     dev_view=dev_view))


@one_line("training", lambda out_dir, **_: f"fix that and run the same command again: it resumes from "
                                            f"{out_dir / 'last.pt'}")
def _train(features, out_dir, config_file, values, ssl_online, resume, flags) -> None:
    """Settings first (every key, nested ones included, before any data is read), then the store and
    the run, which holds --out's lease (`classify.train.train`)."""
    config = load_config(TrainConfig, config_file, values, **flags)
    if ssl_online:
        config = dataclasses.replace(config, ssl_kwargs={**config.ssl_kwargs, "online": True})
    store = FeatureStore(features, check=True)  # refuses a damaged store before any work
    result = train(config, store, out_dir, log=_log, resume=resume)
    if result.stopped == DIVERGED:
        sys.exit(1)  # train() has logged why and which checkpoint is the last good one
    eer = "-" if math.isnan(result.best_dev_eer) else f"{100 * result.best_dev_eer:.2f} %"
    click.echo(f"run: {out_dir}; best dev EER {eer} (epoch {result.best_epoch}); {result.epochs_run} epochs, "
               f"{result.seconds:.1f} s; codec weights: {store.codec.weights_label}")
