"""`pipeline export-model`: one file that scores audio anywhere (classify.bundle)."""

from __future__ import annotations

from pathlib import Path

import click

from classify.bundle import export_model
from pipeline.errors import local_path, one_line


@click.command("export-model")
@click.argument("model_path", type=click.Path(exists=True, path_type=Path))
@click.option("--out", callback=local_path, type=click.Path(dir_okay=False, path_type=Path), required=True, help="The bundle to write (DETECTOR.pt).")
@click.option("--codec-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The codec's weights file, when the model's provenance does not lead to it (sha256 checked); "
                   "with the pretrained codec it is embedded too.")
@one_line("export")  # not a checkpoint, codec weights not found or of another sha256; a full disk
def command(model_path, out, codec_weights):
    """Bundle a run (its best.pt) or a checkpoint with its codec weights (their sha256 only for the
    pretrained codec), calibration and thresholds into one file that `pipeline score --model` and
    `Detector.load` accept, loadable with torch.load(weights_only=True)."""
    path = export_model(model_path, out, codec_weights=codec_weights, log=click.echo)
    click.echo(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
