"""`pipeline score`: a trained model judges audio files nobody extracted (classify.detector)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import click
from tqdm import tqdm

from classify.config import DEVICES
from classify.decision import PRIOR
from classify.detector import Detector
from classify.ood import check as ood_check
from classify.plots import plot_explanation
from classify.score_rows import FORMATS, RowWriter, ScoreRow, format_for
from classify.timeline import HOP_SECONDS, WINDOW_SECONDS, aggregate_rule, iter_timelines
from classify.verdict import verdict
from common.provenance import provenance
from extract.frontend import AUDIO_EXTENSIONS, find_audio
from pipeline.errors import local_path, one_line

PROGRESS_MIN_FILES = 5
"""A progress bar is shown on stderr from this many files on (or for a stream)."""


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _inputs(paths: tuple[str, ...], skipped: list[str]) -> Iterator[str]:
    """Files to score: each PATH as given; a folder's audio files (recursive, by extension; others are
    counted in ``skipped``); ``-``: one path per line of stdin, as they come."""
    for path in paths:
        if path == "-":
            for line in sys.stdin:
                if line.strip():
                    yield line.rstrip("\r\n")
        elif Path(path).is_dir():
            yield from (str(p) for p in find_audio(path))
            skipped.extend(str(p) for p in Path(path).rglob("*")
                           if p.is_file() and p.suffix.lower() not in AUDIO_EXTENSIONS)
        else:
            yield path


def _in_order(indexed: Iterator[tuple[int, ScoreRow]]) -> Iterator[ScoreRow]:
    """Rows in input order, each released as soon as every earlier one is done."""
    waiting: dict[int, ScoreRow] = {}
    following = 0
    for index, row in indexed:
        waiting[index] = row
        while following in waiting:
            yield waiting.pop(following)
            following += 1


def _with_segments(detector: Detector, files, window: float, hop: float, handle) -> Iterator[ScoreRow]:
    """Rows in input order, one file at a time, each file's verdict (`classify.verdict`: LLR,
    probability, decision, segments, out-of-distribution check, model) written to ``handle`` as one JSON line."""
    for row, timeline, features in iter_timelines(detector, files, window, hop):
        ood, reason = ood_check(detector, features) if features is not None else (None, row.error)
        handle.write(json.dumps(verdict(detector, row, timeline, ood, reason)) + "\n")
        handle.flush()
        yield row


def _explain(detector: Detector, path: Path, plot: Path | None, window: float) -> None:
    explanation = detector.explain_file(path, window_seconds=window)
    llr = "" if explanation.llr is None else f", LLR {explanation.llr:.3f}"
    click.echo(f"{path}: score {explanation.score:.4f}{llr}, {explanation.decision or 'no decision'}; codec weights: "
               f"{detector.codec_label}")
    click.echo("level contributions (score - score with the level at its mean codeword):")
    for level, value in enumerate(explanation.levels, start=1):
        click.echo(f"  level {level}: {value:+.4f}")
    if not len(explanation.levels):
        click.echo(f"  (the {detector.config.variant} variant reads no quantizer levels)")
    strongest = explanation.times[abs(explanation.over_time).argmax()] if len(explanation.times) else 0.0
    click.echo(f"over time: {len(explanation.times)} windows of {explanation.window_seconds:.2f} s; the strongest "
               f"is centred at {strongest:.2f} s ({explanation.method})")
    if plot is not None:
        plot_explanation(explanation, plot, title=f"Explanation: {path.name}")
        click.echo(f"plot: {plot}")


@click.command("score")
@click.argument("paths", nargs=-1)
@click.option("--model", "model_path", type=click.Path(exists=True, path_type=Path), required=True,
              help="A run directory (its best.pt), a checkpoint, or a bundle from `pipeline export-model`.")
@click.option("--out", callback=local_path, type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Results file (default: a table on stdout). OUT.meta.json records the model, codec and threshold.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="csv | jsonl | asvspoof (ASVspoof5 score file) | table. Default: table on stdout, else by "
                   "the suffix of --out (.jsonl, .txt/.tsv = asvspoof, otherwise csv).")
@click.option("--threshold", default="eer", show_default=True,
              help="The operating point: eer (dev EER threshold of the calibrated score), bayes (Bayes threshold of "
                   "the LLR for the ASVspoof5 costs), prior (Bayes threshold at --prior, equal costs), mindcf (dev "
                   "min-DCF threshold), far:R (dev false-accept rate R, e.g. far:0.01) or a number (raw-score "
                   "threshold). Decision: bonafide when >= it.")
@click.option("--prior", type=float, default=PRIOR, show_default=True,
              help="Prior probability of bona fide for the probabilities (and --threshold prior).")
@click.option("--segments", "segments_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write each file's verdict as JSON lines here: LLR, probability at --prior, decision, the "
                   "timeline of windows (--segment-window every --segment-hop) and the model's labels.")
@click.option("--segment-window", type=float, default=WINDOW_SECONDS, show_default=True,
              help="With --segments: seconds per timeline window.")
@click.option("--segment-hop", type=float, default=HOP_SECONDS, show_default=True,
              help="With --segments: seconds between timeline windows' starts.")
@click.option("--batch-seconds", type=float, default=None,
              help="Padded audio seconds per encoder batch (default 0 = one file at a time on CPUs, where it is "
                   "about as fast and each file gets the codes it gets alone; 120 on CUDA).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--codec-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The codec's weights file, when the model's provenance does not lead to it (sha256 checked).")
@click.option("--ssl-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="SSL variants: the SSL model's weights file, when the model's provenance does not lead to it "
                   "(sha256 checked).")
@click.option("--eval-crop", type=float, default=None, metavar="SECONDS",
              help="Score the first SECONDS of every file (shorter ones tiled), as the ASVspoof baselines (~4 s); "
                   "default: the whole file.")
@click.option("--explain", "explain_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Explain one file: each quantizer level's contribution and the score over time, by occlusion.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --explain: PNG of the waveform, the score over time and the level contributions.")
@click.option("--window", type=float, default=0.5, show_default=True,
              help="With --explain: seconds of audio occluded at a time (half a window apart).")
@one_line("scoring")  # model, codec weights, threshold and setting errors; two files with one id in a score file
def command(paths, model_path, out, fmt, threshold, prior, segments_path, segment_window, segment_hop, batch_seconds,
            device, codec_weights, ssl_weights, eval_crop, explain_path, plot, window):
    """Score audio files with a trained model: PATH is a file, a folder (searched recursively for
    audio files) or - (paths on stdin, one a line). One row per file: path, score (the model's logit,
    higher = more bona fide), llr (calibrated), decision, duration, and error for a file that cannot
    be read. Exit status 1 when any file failed (the others are still scored)."""
    if not paths and explain_path is None:
        raise click.UsageError("give PATH(s) to score, or --explain FILE")
    if plot is not None and explain_path is None:
        raise click.UsageError("--plot goes with --explain FILE")
    fmt = format_for(out, fmt)
    detector = Detector.load(model_path, codec_weights=codec_weights, device=device, threshold=threshold,
                             batch_seconds=batch_seconds, eval_crop=eval_crop, ssl_weights=ssl_weights, prior=prior)
    if not segment_window > 0 or not segment_hop > 0:
        raise ValueError(f"--segment-window and --segment-hop must be > 0, got {segment_window} and {segment_hop}")
    _log(f"model: {detector.model_file.path} ({detector.config.variant} / {detector.config.head}); codec weights: "
         f"{detector.codec_label}, from {detector.codec_source}")
    if detector.ssl_label:
        _log(f"SSL weights: {detector.ssl_label}, from {detector.ssl_source}")
    _log(f"decision: {detector.threshold.description}")
    if segments_path is not None:
        _log(f"segments: {segment_window:g} s windows every {segment_hop:g} s; {aggregate_rule(detector)}")
    if explain_path is not None:
        try:
            _explain(detector, explain_path, plot, window)
        except Exception as err:  # noqa: BLE001 - a bad file is reported, not a traceback
            raise click.ClickException(f"{explain_path}: {err}") from None
        if not paths:
            return

    skipped: list[str] = []
    files = list(_inputs(paths, skipped)) if "-" not in paths else _inputs(paths, skipped)
    counted = isinstance(files, list)
    bar = tqdm(total=len(files) if counted else None, unit="file", desc="score", file=sys.stderr, dynamic_ncols=True,
               disable=counted and len(files) < PROGRESS_MIN_FILES)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    handle = out.open("w", encoding="utf-8", newline="") if out is not None else sys.stdout
    if segments_path is not None:
        segments_path.parent.mkdir(parents=True, exist_ok=True)
    segments_handle = segments_path.open("w", encoding="utf-8") if segments_path is not None else None
    rows = (_in_order(detector.iter_scores(files)) if segments_handle is None else
            _with_segments(detector, files, segment_window, segment_hop, segments_handle))
    n_rows, failed, seconds = 0, [], 0.0
    try:
        writer = RowWriter(handle, fmt, detector.weights_label)
        for row in rows:
            writer.write(row)
            n_rows += 1
            if row.error:
                failed.append(row)
            seconds += (row.duration or 0.0) if row.ok else 0.0
            bar.update()
            bar.set_postfix_str(f"{seconds / max(bar.format_dict['elapsed'], 1e-9):.1f} audio-s/s")
    finally:
        bar.close()
        if out is not None:
            handle.close()
        if segments_handle is not None:
            segments_handle.close()
    if out is not None:
        meta = {**detector.describe(), "prior": detector.prior, "results": str(out),
                "segments": None if segments_path is None else {
                    "file": str(segments_path), "window_seconds": segment_window, "hop_seconds": segment_hop,
                    "aggregate": aggregate_rule(detector)}, "format": fmt, "files": n_rows, "failed": len(failed),
                "failed_files": [{"path": row.path, "error": row.error} for row in failed],
                "failed_rows": ("none: the ASVspoof score file has a line per scored file only" if fmt == "asvspoof"
                                else "a row each, with an empty score and the error"),
                "audio_seconds": seconds, "timings_seconds": detector.timings, "provenance": provenance()}
        Path(f"{out}.meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    if skipped:
        _log(f"{len(skipped)} file(s) in the folder(s) without an audio extension were not scored")
    _log(f"{n_rows - len(failed)} file(s) scored, {len(failed)} failed, {seconds:.1f} audio s; codec weights: "
         f"{detector.codec_label}" + (f"; results: {out}" if out is not None else ""))
    for row in failed[:20]:
        _log(f"  {row.path}: {row.error}")
    if len(failed) > 20:
        _log(f"  ... and {len(failed) - 20} more")
    if failed:
        sys.exit(1)
