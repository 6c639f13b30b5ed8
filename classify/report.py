"""The comparison report of a sweep: ``DIR/report.md`` and its PNGs, from the results table.

A *setting* is a trial's full config without its seed; the trials of one setting are its seeds.
The report names the codec weights first (loudly when UNTRAINED), then:

- the ranking of settings by mean DEV EER (selection never looks at eval), each with its eval
  EER: mean over seeds, a 95 % interval from a bootstrap over eval speakers and attacks
  (`classify.bootstrap`; when the store's utterance table and the trials' score files are at
  hand), standard deviation over seeds (ddof 1), min, max; eval minDCF / actDCF / Cllr means;
  trainable parameters (``eer.png``: bars with ±1 std error bars, one dot per seed). The first
  row is the selected setting;
- when the head varies, each head's best setting (chosen on dev) side by side;
- the paired comparison of each setting against the baseline variant (the sweep file's
  ``baseline``, default `mean`) with an otherwise equal config, seed by
  seed: the difference in eval EER per seed (variant minus mean, percentage points), their mean,
  std, min and max, the bootstrap interval of the mean difference, how many seeds the variant
  wins (lower EER), and the two-sided sign-test p;
- the learned level weights of each trainable variant, averaged over seeds (a table of the
  per-level mean, over dimensions for QAF-Static, and ``weights_<setting>.png``: bars for [Q], a
  levels x dims heatmap for [Q, D]);
- failed trials, and what the sweep can and cannot show.

Only ``ok`` trials enter the numbers. Tables are Markdown; EERs are printed in %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from classify.plots import plot_level_weights
from classify.report_stats import (
    BASELINE,
    BootstrapResult,
    SplitSummary,
    best_per_head,
    bootstrap_eval,
    mean_level_weights,
    paired_vs_mean,
    ranking,
    selected,
    sign_test_p,
    with_settings,
)
from classify.sweep import OK
from classify.variants import FIXED_KINDS

REPORT = "report.md"
EER_PLOT = "eer.png"
_DPI = 120


@dataclass(frozen=True)
class ReportContext:
    """What the results table does not say: where the trials came from."""

    sweep_file: str
    store_url: str
    dataset: str
    dataset_root: str
    eval_split: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    #: The store's utterance table (utt_id, speaker, system, label, split, status), for the bootstrap.
    utterances: pd.DataFrame | None = None
    n_boot: int = 1000
    boot_seed: int = 0
    #: The variant each setting is paired against (the sweep file's ``baseline``).
    baseline: str = BASELINE
    #: The store's dataset is an official ASVspoof corpus (its registry record says so).
    official_dataset: bool = False



def _pct(value: float, digits: int = 2) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}"


def _num(value: float, digits: int = 4) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _signed_pp(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{100 * value:+.2f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _interval(low: float, high: float, signed: bool = False) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    return f"{_signed_pp(low)} / {_signed_pp(high)}" if signed else f"{_pct(low)}–{_pct(high)}"


def format_ranking(table: pd.DataFrame, intervals: bool = True) -> str:
    """The ranking as a Markdown table (EERs in %), in ``ranking``'s order (dev EER); without the
    bootstrap's interval column when ``intervals`` is False (a table ranked without them)."""
    rows = [[str(i + 1), f"`{r.setting}`" + (" (control: no codec)" if r.control else ""), str(r.n_seeds), _pct(r.dev_eer_mean), _pct(r.eval_eer_mean),
             *([_interval(r.eval_ci_low, r.eval_ci_high)] if intervals else []), _pct(r.eval_eer_std),
             f"{_pct(r.eval_eer_min)}–{_pct(r.eval_eer_max)}", _num(r.eval_min_dcf_mean),
             _num(r.eval_act_dcf_mean), _num(r.eval_cllr_mean), f"{int(r.n_trainable):,}"]
            for i, r in enumerate(table.itertuples())]
    return _markdown(["rank", "setting", "seeds", "dev EER % (mean; ranks)", "eval EER % (mean)",
                      *(["eval 95 % CI (speakers x attacks)"] if intervals else []), "std over seeds", "min–max",
                      "eval minDCF", "eval actDCF", "eval Cllr", "trainable params"], rows)


def format_heads(table: pd.DataFrame) -> str:
    """Each head's best setting on dev (``best_per_head``) as a Markdown table, then every control
    setting (no codec) beside them."""
    controls = table[table["control"]]
    rows = [[f"`{r.head}`" + (" (control: no codec)" if r.control else ""), f"`{r.setting}`",
             f"{int(r.n_trainable):,}", str(r.n_seeds), _pct(r.dev_eer_mean), _pct(r.eval_eer_mean),
             _interval(r.eval_ci_low, r.eval_ci_high), _pct(r.eval_eer_std)]
            for r in pd.concat([best_per_head(table), controls]).itertuples()]
    return _markdown(["head", "best setting (chosen on dev)", "trainable params", "seeds", "dev EER % (mean)",
                      "eval EER % (mean)", "eval 95 % CI", "std over seeds"], rows)


def format_paired(table: pd.DataFrame, intervals: dict[str, tuple[float, float]] | None = None) -> str:
    """The paired comparison as a Markdown table (differences in percentage points); ``intervals``:
    setting_key -> bootstrap interval of the mean difference."""
    intervals = intervals or {}
    rows = [[f"`{r.setting}`", str(r.n_paired),
             ", ".join(f"s{seed}: {_signed_pp(d)}" for seed, d in r.diffs.items()),
             _signed_pp(r.diff_mean), _interval(*intervals.get(r.setting_key, (math.nan, math.nan)), signed=True),
             _pct(r.diff_std), f"{_signed_pp(r.diff_min)} / {_signed_pp(r.diff_max)}",
             f"{r.wins}/{r.n_paired}" + (f" ({r.ties} tied)" if r.ties else ""), f"{r.sign_p:.3f}"]
            for r in table.itertuples()]
    return _markdown(["setting", "paired seeds", "Δ eval EER per seed (pp)", "mean Δ (pp)",
                      "mean Δ 95 % CI (pp)", "std Δ (pp)", "min / max Δ (pp)", "wins", "sign-test p"], rows)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text).strip("_")


def plot_eer(table: pd.DataFrame, ok: pd.DataFrame, path: Path, note: str) -> Path:
    """Horizontal bars of the mean eval EER per setting (best on top), ±1 std error bars, a dot per seed."""
    fig = Figure(figsize=(8, max(3.0, 0.45 * len(table) + 1.8)))
    ax = fig.subplots()
    y = np.arange(len(table))[::-1]
    std = np.nan_to_num(table["eval_eer_std"].to_numpy(dtype=float))
    ax.barh(y, 100 * table["eval_eer_mean"], xerr=100 * std, color="tab:blue", alpha=0.6, capsize=3,
            label="mean ± std over seeds")
    for pos, key in zip(y, table["setting_key"]):
        values = 100 * ok.loc[ok["setting_key"] == key, "eval_eer"].to_numpy(dtype=float)
        ax.plot(values, np.full(values.size, pos), "o", color="black", markersize=3)
    ax.plot([], [], "o", color="black", markersize=3, label="one seed")
    ax.set_yticks(y, table["setting"])
    ax.set_xlabel("eval EER (%)")
    ax.grid(True, axis="x", color="0.85")
    ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Eval EER by setting (ordered by dev EER, best on top)\n{note}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI)
    return path


def _codec_header(results: pd.DataFrame) -> list[str]:
    labels = sorted(set(results["codec_weights_label"].dropna()) - {""})
    trained = results.loc[results["codec_weights_label"] != "", "codec_trained"]
    lines = [f"**Codec weights: {label}**" for label in labels] or ["**Codec weights: unknown (no trial reached the store)**"]
    if "ssl_weights_label" in results:  # the SSL variants' second stream (classify.fusion)
        lines += [f"**SSL weights: {label}**" for label in sorted(set(results["ssl_weights_label"].dropna()) - {""})]
    if len(labels) > 1:
        lines.append("> **WARNING: the trials used features of different codec weights; they are not comparable.**")
    if len(trained) and not trained.astype(bool).all():
        lines.append("> **WARNING: the codec is UNTRAINED.** These features are not those of the trained EnCodec, "
                     "so these results say nothing about how the real codec's quantizer levels behave: they test "
                     "the pipeline, not the method.")
    return lines


def _splits_line(context: ReportContext) -> str:
    parts = [f"{name}: {s.utterances} utterances ({s.bonafide} bona fide / {s.spoof} spoof, {s.speakers} speakers)"
             for name, s in context.splits.items()]
    return "; ".join(parts) if parts else "split sizes unknown"


def _caveats(context: ReportContext, results: pd.DataFrame, table: pd.DataFrame,
             boot: BootstrapResult | None) -> str:
    """The 'what this can and cannot show' paragraph, with this sweep's numbers."""
    if not len(table):
        return "No trial finished, so this sweep shows nothing yet; see the failed trials above."
    seeds = sorted(set(int(n) for n in table["n_seeds"]))
    n_seeds = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    ev = context.splits.get(context.eval_split)
    text = [f"Each setting has {n_seeds} seed(s). Seeds vary only the initialisation and the data order, on one "
            "fixed split of one dataset: the spread over seeds is training noise, not the uncertainty of a "
            "new dataset or new speakers.",
            "Settings are ranked and the best one is selected on the dev split only; eval is reported, never used "
            "to choose, so the selected setting's eval EER is not optimistically biased by the selection (its dev "
            "EER is)."]
    if ev:
        text.append(f"The eval split has {ev.bonafide} bona fide and {ev.spoof} spoof utterances from "
                    f"{ev.speakers} speakers; one more misclassified bona fide utterance moves the miss rate by "
                    f"{100 / max(ev.bonafide, 1):.2f} pp.")
    if boot is not None:
        text.append(f"The 95 % intervals resample the eval split's {boot.speakers} speakers and {boot.attacks} "
                    "attacks: they say how much the EER could move with other speakers and attacks drawn like "
                    "these, and with so few of each they are wide; they do not cover a different dataset, "
                    "recording conditions or attack families unlike these, nor the training data's own sampling. "
                    "Intervals of two settings overlap even when their paired difference is consistent; the "
                    "paired interval is the one to read for a comparison.")
    else:
        text.append("No bootstrap intervals were computed (no utterance table or score files); utterances of one "
                    "speaker are not independent, so EER differences of a few points between settings are within "
                    "what speaker and sampling effects alone can produce.")
    if seeds[-1] <= 5:
        text.append(f"With {seeds[-1]} paired seeds even a variant that wins every seed has a two-sided sign-test "
                    f"p of {sign_test_p(seeds[-1], 0):.3f}: the paired table ranks, it does not prove.")
    if table["control"].any():
        text.append("The control (`energy`: statistics of each frame's log energy, no codec at all) shows what the "
                    "corpus gives away without the codec, such as the cleaner pauses of some synthesizers; a codec "
                    "setting no better than it shows nothing the codec adds.")
    if _codec_untrained(results):
        text.append("The codec is UNTRAINED, so its quantizer levels are not EnCodec's: the learned level weights "
                    "and the ranking of variants say nothing about the real codec's hierarchy or the paper's claims.")
    text.append("The dev actDCF and Cllr are calibrated on dev itself (optimistic); the eval ones use the dev "
                "calibration. What the sweep can show: whether the pipeline trains every variant, how large the "
                "seed-to-seed spread is at these settings, and which differences stand out from that spread and "
                f"from speaker and attack resampling on this data ({context.dataset}, "
                f"{context.dataset_root or context.store_url}). {_cannot_show(context, results)}")
    return " ".join(text)


def _codec_untrained(results: pd.DataFrame) -> bool:
    reached = results.loc[results["codec_weights_label"] != "", "codec_trained"] if len(results) else results
    return bool(len(reached)) and not reached.astype(bool).all()


def _cannot_show(context: ReportContext, results: pd.DataFrame) -> str:
    """What the sweep cannot show, from the store's provenance: its dataset (an official ASVspoof
    corpus or not) and its codec weights (untrained or not)."""
    missing = ([] if context.official_dataset else ["on ASVspoof"]) + \
        (["with a trained codec"] if _codec_untrained(results) else [])
    where = " or ".join(missing) if missing else "on other corpora, recording conditions or attack families"
    return f"It cannot show how the variants compare {where}, or that a small difference is real."


def _bootstrap_text(boot: BootstrapResult) -> str:
    """How the intervals were made (the report's own record of the procedure)."""
    extra = []
    if boot.invalid:
        extra.append(f"{boot.invalid} replicate(s) held only one class and were left out.")
    if boot.missing:
        extra.append(f"Trials without a usable eval score file, left out: {', '.join(boot.missing)}.")
    return (f"Eval EER intervals are {100 * boot.level:.0f} % percentile intervals of a bootstrap over the eval "
            f"split's {boot.speakers} speakers and {boot.attacks} attacks ({boot.utterances} utterances), "
            f"{boot.n_boot} replicates, seed {boot.seed}. A replicate draws {boot.speakers} speakers and "
            f"{boot.attacks} attacks with replacement; each utterance enters once per draw of its speaker, times "
            "(for a spoof) once per draw of its attack, and the replicate's EER is the official EER of that list "
            "(`classify.bootstrap`). The same replicates serve every trial: a setting's interval is that of its "
            "EER averaged over its seeds, and a paired interval that of its seed-averaged difference to the baseline. "
            "The std and min–max columns are the spread over seeds (training noise); the intervals are the "
            "data's (speakers and attacks). " + " ".join(extra)).strip()


def write_report(results: pd.DataFrame, out_dir: str | Path, context: ReportContext) -> Path:
    """Write ``out_dir/report.md`` with ``eer.png`` and ``weights_*.png``; return the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = with_settings(results)
    boot = None
    if context.utterances is not None and len(ok):
        boot = bootstrap_eval(results, context.utterances, context.eval_split, context.n_boot, context.boot_seed,
                              baseline=context.baseline)
    table = ranking(results, boot.setting_ci if boot else None)
    paired = paired_vs_mean(results, context.baseline)
    note = "; ".join(sorted(set(results["codec_weights_label"].dropna()) - {""})) if len(results) else ""
    failed = results[results["status"] != OK] if len(results) else results
    grid = ", ".join(f"{k} ({len(v)}: {', '.join(map(str, v))})" for k, v in context.grid.items()) or "none"
    base = ", ".join(f"{k}={v!r}" for k, v in context.base.items()) or "defaults"
    md = [f"# Sweep report: {Path(context.sweep_file).name}", "", *_codec_header(results), "",
          f"- Store: `{context.store_url}` (dataset {context.dataset}, {context.dataset_root})",
          f"- Splits: {_splits_line(context)}",
          f"- Trials: {len(ok)} ok, {len(failed)} failed; eval split `{context.eval_split or 'none'}`",
          f"- Base settings: {base}", f"- Grid: {grid}", ""]

    md += ["## Ranking on dev, eval reported" if context.eval_split else "## Ranking on dev (no eval split)", "",
           "Settings (configs without the seed) sorted by mean DEV EER over seeds: the selection never sees eval. "
           "Eval columns are reported for every setting; std has ddof 1.", ""]
    best = selected(table)
    if best is not None:
        md += [f"**Selected on dev: `{best.setting}`**: dev EER {_pct(best.dev_eer_mean)} %, eval EER "
               f"{_pct(best.eval_eer_mean)} % (95 % CI {_interval(best.eval_ci_low, best.eval_ci_high)}, "
               f"{best.n_seeds} seeds).", "",
               format_ranking(table), "", f"![eval EER by setting]({EER_PLOT})", ""]
        plot_eer(table, ok, out_dir / EER_PLOT, note)
        if boot is not None:
            md += [_bootstrap_text(boot), ""]
    else:
        md += ["No trial finished.", ""]

    if len(table) and (table["head"].nunique() > 1 or table["control"].any()):
        md += ["## Heads side by side", "",
               "Each head's best setting, chosen on dev among that head's settings, with its eval EER; below them "
               "the controls that see no codec (e.g. `energy`: frame-energy statistics alone), never selected, "
               "so that what the codec adds shows.", "",
               format_heads(table), ""]

    baseline = context.baseline
    md += [f"## Paired comparison against `{baseline}`", "",
           f"Δ = eval EER of the setting minus that of `{baseline}` with the same seed and an otherwise equal "
           "config, in percentage points: negative means the setting is better. A win is a seed with Δ < 0. "
           "The interval is the bootstrap's (speakers x attacks) for the mean Δ over the paired seeds.", ""]
    md += [format_paired(paired, boot.paired_ci if boot else None) if len(paired) else f"No setting has a `{baseline}` baseline with an otherwise "
           "equal config and a common seed.", ""]

    md += ["## Learned level weights", "",
           "Alpha per quantizer level (level 1 = coarsest), averaged over seeds; QAF-Static's [levels x dims] "
           "is averaged over dims here and drawn in full in its PNG. Fixed variants are listed for reference.", ""]
    weights = mean_level_weights(results)
    if weights:
        n_levels = max(w.shape[0] for _, w, _ in weights.values())
        rows = []
        for setting, (variant, alpha, n) in weights.items():
            per_level = alpha if alpha.ndim == 1 else alpha.mean(axis=1)
            kind = "fixed" if variant.split(":")[0] in FIXED_KINDS else "learned"
            rows.append([f"`{setting}`", kind, str(n), *(f"{v:.3f}" for v in per_level),
                         *([""] * (n_levels - per_level.size))])
        md += [_markdown(["setting", "weights", "seeds", *(f"L{q}" for q in range(1, n_levels + 1))], rows), ""]
        for setting, (variant, alpha, n) in weights.items():
            if variant.split(":")[0] in FIXED_KINDS:
                continue
            name = f"weights_{_slug(setting)}.png"
            plot_level_weights(alpha, out_dir / name, title=f"Level weights: {setting} (mean over {n} seeds)",
                               note=note)
            md += [f"![level weights of {setting}]({name})", ""]
    else:
        md += ["No trial recorded level weights.", ""]

    if len(failed):
        md += ["## Failed trials", "", _markdown(["trial", "error"], [
            [f"`{r.trial_id}`", str(r.error).replace("|", "\\|").replace("\n", " ")] for r in failed.itertuples()]), ""]

    md += ["## What this can and cannot show", "", _caveats(context, results, table, boot), ""]
    path = out_dir / REPORT
    path.write_text("\n".join(md))
    return path
