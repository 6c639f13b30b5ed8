"""`pipeline metrics`: official ASVspoof metrics of a CM score file against a key file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from classify.metrics import metrics_table, min_tdcf_with_asv
from classify.scorefiles import (
    ScoreFileError,
    Trials,
    join_scores_keys,
    read_asv_scores,
    read_keys,
    read_scores,
)
from pipeline.errors import one_line

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_GROUP_COLUMNS = ("n_bonafide", "n_spoof", "eer", "min_dcf", "act_dcf", "cllr")


def _tdcf(trials: Trials, scores: Path, asv_path: Path) -> dict[str, float]:
    """Min t-DCF (ASVspoof 2019 LA cost model) with ASV error rates at the ASV EER threshold."""
    try:
        asv = read_asv_scores(asv_path)
        return min_tdcf_with_asv(trials.scores[trials.is_bonafide], trials.scores[~trials.is_bonafide],
                                 asv.target, asv.nontarget, asv.spoof)
    except ScoreFileError:
        raise
    except ValueError as err:  # a problem of the pair of files: name both (one line, `pipeline.errors`)
        raise ValueError(f"{err} (CM scores {scores}, ASV scores {asv_path})") from None


def _cell(value: Any, column: str) -> str:
    """One table cell: EER in %, counts as integers, other metrics with 5 decimals."""
    if value is None:
        return "-"
    if column.startswith("n_"):
        return str(value)
    if column == "eer":
        return f"{100 * value:.3f}"
    return f"{value:.5f}"


def _group_table(groups: dict[str, dict[str, Any]], name: str) -> list[str]:
    """Fixed-width rows of a per-attack or per-codec table."""
    headers = (name, "bona fide", "spoof", "EER (%)", "minDCF", "actDCF", "Cllr")
    rows = [[label] + [_cell(metrics[col], col) for col in _GROUP_COLUMNS] for label, metrics in groups.items()]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = []
    for row in (headers, *rows):
        cells = [str(row[0]).ljust(widths[0])] + [str(c).rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
    return lines


def _report(result: dict[str, Any], scores: Path, keys: Path) -> str:
    """Human-readable summary of :func:`_evaluate`'s result."""
    lines = [
        f"scores: {scores} ({result['scores_format']})",
        f"keys:   {keys} ({result['keys_format']})",
        f"trials: {result['n_bonafide']} bona fide, {result['n_spoof']} spoof",
        "",
        f"EER        {100 * result['eer']:.3f} %   (threshold {result['eer_threshold']:.6g})",
        f"minDCF     {result['min_dcf']:.5f}   (Pspoof 0.05, Cmiss 1, Cfa 10)",
        f"actDCF     {result['act_dcf']:.5f}   (scores read as LLRs)",
        f"Cllr       {result['cllr']:.5f} bits",
    ]
    if "min_tdcf" in result:
        asv = result["asv_error_rates"]
        lines.append(
            f"min t-DCF  {result['min_tdcf']:.5f}   (ASVspoof 2019 LA cost model; ASV at its EER "
            f"threshold: Pfa {asv['pfa_asv']:.4f}, Pmiss {asv['pmiss_asv']:.4f}, "
            f"Pmiss_spoof {asv['pmiss_spoof_asv']:.4f})"
        )
    if result["per_attack"]:
        lines += ["", "Per attack (all bona fide vs that attack's spoofs):"]
        lines += _group_table(result["per_attack"], "attack")
    if result["per_codec"]:
        lines += ["", "Per codec condition (both classes within the condition):"]
        lines += _group_table(result["per_codec"], "codec")
    return "\n".join(lines)


def _evaluate(scores: Path, keys: Path, asv_scores: Path | None) -> dict[str, Any]:
    """Load, join and score; every input problem is a ValueError naming the file (ScoreFileError
    names it itself), which `pipeline.errors.one_line` turns into one line."""
    score_file = read_scores(scores)
    key_file = read_keys(keys)
    trials = join_scores_keys(score_file, key_file)
    try:
        result = metrics_table(trials.scores, trials.is_bonafide, trials.attacks, trials.codecs)
    except ValueError as err:  # e.g. a class absent from the key file
        raise ValueError(f"{keys}: {err}") from None
    result["scores_format"] = score_file.format
    result["keys_format"] = key_file.format
    if asv_scores is not None:
        tdcf = _tdcf(trials, scores, asv_scores)
        result["min_tdcf"] = tdcf.pop("min_tdcf")
        result["asv_error_rates"] = tdcf
    return result


@click.command("metrics")
@click.option("--scores", "scores", type=_FILE, required=True,
              help="CM score file: ASVspoof 2019 'utt score' or ASVspoof5 'filename<TAB>cm-score'.")
@click.option("--keys", "keys", type=_FILE, required=True,
              help="ASVspoof 2019 LA CM protocol, ASVspoof5 protocol, or key table with header.")
@click.option("--asv-scores", "asv_scores", type=_FILE, default=None,
              help="ASVspoof 2019 ASV score file (SOURCE KEY SCORE) to add the min t-DCF.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@one_line("computing the metrics")
def command(scores: Path, keys: Path, asv_scores: Path | None, as_json: bool) -> None:
    """EER, minDCF, actDCF and Cllr (official ASVspoof definitions), pooled, per attack and per
    codec condition; min t-DCF when ASV scores are given. Higher score = more bona fide."""
    result = _evaluate(scores, keys, asv_scores)
    click.echo(json.dumps(result, indent=2) if as_json else _report(result, scores, keys))
