"""`pipeline evaluate`: score a split of a feature store with a trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from classify.config import DEVICES
from classify.evaluate import FORMATS, evaluate
from classify.views import evaluate_views
from pipeline.errors import local_path, one_line
from store.reader import FeatureStore

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("evaluate")
@click.option("--model", "checkpoint", type=click.Path(exists=True, path_type=Path), required=True,
              help="Checkpoint (best.pt / last.pt) or a run directory (its best.pt).")
@click.option("--features", required=True, help="Feature store (path or fsspec URL) of the same codec.")
@click.option("--split", default="eval", show_default=True, help="Split of the store to score.")
@click.option("--out", "out_dir", callback=local_path, type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the score file, metrics.json and det.png.")
@click.option("--asv-scores", type=_FILE, default=None,
              help="ASV scores for the min t-DCF: ASVspoof 2019's file (SOURCE KEY SCORE); on an asv21la store, "
                   "a score file for the keys package's ASV trials (ASV_SPEAKER TRIAL SCORE), instead of "
                   "keys/LA/ASV/ASVTorch_Kaldi/score.txt.")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Map scores to LLRs with the model's calibration (a logistic regression fitted on its dev "
                   "split at the end of training; for a checkpoint without one, fitted on the store's dev split) "
                   "before actDCF and Cllr.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
              help="Score file format; auto: the official one of the store's dataset.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--view", default=None, help="Score the store's augmented view NAME of the split instead of the clean "
              "copy; several (a,b or all): clean and each view into OUT/NAME, and OUT/views.md, EER per view beside clean.")
@one_line("evaluation")  # store, split, checkpoint/codec mismatch, score file errors; a full disk
def command(checkpoint, features, split, out_dir, asv_scores, calibrate, fmt, device, view):
    """Write official-format scores (higher = bona fide), metrics.json (EER, minDCF, actDCF, Cllr,
    per attack and codec condition; min t-DCF with --asv-scores) and a DET plot. On ASVspoof 2021,
    In-the-Wild, MLAAD and Codecfake stores, also the official per-condition tables (per phase for 2021)."""
    store = FeatureStore(features, check=True)  # refuses a damaged store before any work
    kwargs = dict(asv_scores=asv_scores, calibrate=calibrate, fmt=fmt, device=device, log=click.echo)
    if view:
        evaluate_views(checkpoint, store, split, out_dir, view, **kwargs)
    else:
        evaluate(checkpoint, store, split, out_dir, **kwargs)
    click.echo(f"wrote {out_dir / ('views.md' if view and (view == 'all' or ',' in view) else 'metrics.json')}")
