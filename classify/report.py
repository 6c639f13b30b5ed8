"""The comparison report of a sweep: ``DIR/report.md`` and its PNGs, from the results table.

A *setting* is a trial's full config without its seed; the trials of one setting are its seeds.
The report names the codec weights first (loudly when UNTRAINED), then:

- the ranking of settings by mean eval EER: n seeds, mean, standard deviation (ddof 1), min, max;
  dev EER and eval minDCF / actDCF / Cllr means; trainable parameters (``eer.png``: bars with
  ±1 std error bars, one dot per seed);
- the paired comparison of each setting against `mean` with an otherwise equal config, seed by
  seed: the difference in eval EER per seed (variant minus mean, percentage points), their mean,
  std, min and max, how many seeds the variant wins (lower EER), and the two-sided sign-test p;
- the learned level weights of each trainable variant, averaged over seeds (a table of the
  per-level mean, over dimensions for QAF-Static, and ``weights_<setting>.png``: bars for [Q], a
  levels x dims heatmap for [Q, D]);
- failed trials, and what the sweep can and cannot show.

Only ``ok`` trials enter the numbers. Tables are Markdown; EERs are printed in %.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from classify.plots import plot_level_weights
from classify.sweep import CONFIG_FIELDS, OK
from store.reader import FeatureStore

REPORT = "report.md"
EER_PLOT = "eer.png"
BASELINE = "mean"
#: Variant kinds whose level weights are fixed, not learned.
FIXED_KINDS = ("mean", "single", "first")
_DPI = 120


@dataclass(frozen=True)
class SplitSummary:
    """Size of one split: ok utterances, bona fide, spoof, speakers."""

    utterances: int
    bonafide: int
    spoof: int
    speakers: int


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


def split_summaries(store: FeatureStore, names: list[str]) -> dict[str, SplitSummary]:
    """SplitSummary of each named split that the store has."""
    table = store.utterances
    out = {}
    for name in dict.fromkeys(names):
        rows = table[(table["split"] == name) & (table["status"] == "ok")]
        if len(rows):
            bona = int((rows["label"] == "bonafide").sum())
            out[name] = SplitSummary(len(rows), bona, len(rows) - bona, int(rows["speaker"].nunique()))
    return out


def _setting_key(row: pd.Series) -> str:
    config = json.loads(row["config_json"])
    config.pop("seed")
    return json.dumps(config, sort_keys=True)


def _varying(ok: pd.DataFrame) -> list[str]:
    """Config fields (besides seed) that take more than one value among the trials."""
    return [k for k in CONFIG_FIELDS if k != "seed" and ok[k].astype(str).nunique() > 1]


def with_settings(results: pd.DataFrame) -> pd.DataFrame:
    """The ok trials with two more columns: ``setting_key`` (config without seed, JSON) and
    ``setting`` (a short label: the variant alone when only the variant varies, else
    ``key=value`` pairs of the varying fields)."""
    ok = results[results["status"] == OK].copy()
    if ok.empty:
        return ok.assign(setting_key=pd.Series(dtype=str), setting=pd.Series(dtype=str))
    ok["setting_key"] = ok.apply(_setting_key, axis=1)
    varying = _varying(ok) or ["variant"]
    if varying == ["variant"]:
        ok["setting"] = ok["variant"].astype(str)
    else:
        ok["setting"] = ok.apply(lambda r: ", ".join(f"{k}={r[k]}" for k in varying), axis=1)
    return ok


def ranking(results: pd.DataFrame) -> pd.DataFrame:
    """One row per setting, best (lowest mean eval EER) first: ``setting``, ``variant``,
    ``n_seeds``, ``eval_eer_mean``/``_std``/``_min``/``_max``, ``dev_eer_mean``,
    ``eval_min_dcf_mean``, ``eval_act_dcf_mean``, ``eval_cllr_mean``, ``n_trainable``
    (fractions; std NaN for one seed). Ties keep the setting label order."""
    ok = with_settings(results)
    columns = ["setting", "variant", "n_seeds", "eval_eer_mean", "eval_eer_std", "eval_eer_min", "eval_eer_max",
               "dev_eer_mean", "eval_min_dcf_mean", "eval_act_dcf_mean", "eval_cllr_mean", "n_trainable",
               "setting_key"]
    if ok.empty:
        return pd.DataFrame(columns=columns)
    groups = ok.groupby("setting_key", sort=False)
    table = pd.DataFrame({
        "setting": groups["setting"].first(),
        "variant": groups["variant"].first(),
        "n_seeds": groups.size(),
        "eval_eer_mean": groups["eval_eer"].mean(),
        "eval_eer_std": groups["eval_eer"].std(ddof=1),
        "eval_eer_min": groups["eval_eer"].min(),
        "eval_eer_max": groups["eval_eer"].max(),
        "dev_eer_mean": groups["dev_eer"].mean(),
        "eval_min_dcf_mean": groups["eval_min_dcf"].mean(),
        "eval_act_dcf_mean": groups["eval_act_dcf"].mean(),
        "eval_cllr_mean": groups["eval_cllr"].mean(),
        "n_trainable": groups["n_trainable"].first(),
    }).reset_index()
    table = table.sort_values(["eval_eer_mean", "setting"], kind="mergesort").reset_index(drop=True)
    return table[columns]


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test of ``wins`` against ``losses`` (ties dropped); 1.0 when n = 0."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(max(wins, losses), n + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_vs_mean(results: pd.DataFrame) -> pd.DataFrame:
    """Each non-`mean` setting against the `mean` setting whose config is equal but for the
    variant, on the seeds both have: ``setting``, ``n_paired``, ``diffs`` ({seed: eval EER of the
    variant minus `mean`'s}), ``diff_mean``, ``diff_std`` (ddof 1), ``diff_min``, ``diff_max``,
    ``wins`` (seeds where the variant's EER is lower), ``losses``, ``ties``, ``sign_p``
    (fractions). Settings without such a baseline are left out."""
    ok = with_settings(results)
    rows = []
    if ok.empty:
        return pd.DataFrame(rows)
    baseline_of = {}
    for key in ok["setting_key"].unique():
        config = json.loads(key)
        config["variant"] = BASELINE
        baseline_of[key] = json.dumps(config, sort_keys=True)
    for key, group in ok[ok["variant"] != BASELINE].groupby("setting_key", sort=False):
        base = ok[ok["setting_key"] == baseline_of[key]]
        if base.empty:
            continue
        paired = group.set_index("seed")["eval_eer"].to_frame("variant").join(
            base.set_index("seed")["eval_eer"].to_frame("mean"), how="inner").sort_index()
        if paired.empty:
            continue
        diff = paired["variant"] - paired["mean"]
        wins, losses = int((diff < 0).sum()), int((diff > 0).sum())
        rows.append({
            "setting": group["setting"].iloc[0], "n_paired": len(diff),
            "diffs": {int(seed): float(d) for seed, d in diff.items()},
            "diff_mean": float(diff.mean()), "diff_std": float(diff.std(ddof=1)) if len(diff) > 1 else math.nan,
            "diff_min": float(diff.min()), "diff_max": float(diff.max()),
            "wins": wins, "losses": losses, "ties": len(diff) - wins - losses, "sign_p": sign_test_p(wins, losses),
        })
    return pd.DataFrame(rows).sort_values("diff_mean", kind="mergesort").reset_index(drop=True) if rows else \
        pd.DataFrame(rows)


def mean_level_weights(results: pd.DataFrame) -> dict[str, tuple[str, np.ndarray, int]]:
    """setting -> (variant, alpha averaged over its seeds [Q] or [Q, D], number of seeds), for
    settings whose trials recorded level weights (not `latent`)."""
    ok = with_settings(results)
    out = {}
    for _, group in ok.groupby("setting_key", sort=False):
        weights = [np.asarray(json.loads(w), dtype=np.float64) for w in group["level_weights"] if w]
        if weights:
            out[group["setting"].iloc[0]] = (group["variant"].iloc[0], np.mean(weights, axis=0), len(weights))
    return out


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


def format_ranking(table: pd.DataFrame) -> str:
    """The ranking as a Markdown table (EERs in %)."""
    rows = [[str(i + 1), f"`{r.setting}`", str(r.n_seeds), _pct(r.eval_eer_mean), _pct(r.eval_eer_std),
             f"{_pct(r.eval_eer_min)}–{_pct(r.eval_eer_max)}", _pct(r.dev_eer_mean), _num(r.eval_min_dcf_mean),
             _num(r.eval_act_dcf_mean), _num(r.eval_cllr_mean), f"{int(r.n_trainable):,}"]
            for i, r in enumerate(table.itertuples())]
    return _markdown(["rank", "setting", "seeds", "eval EER % (mean)", "std", "min–max", "dev EER % (mean)",
                      "eval minDCF", "eval actDCF", "eval Cllr", "trainable params"], rows)


def format_paired(table: pd.DataFrame) -> str:
    """The paired comparison as a Markdown table (differences in percentage points)."""
    rows = [[f"`{r.setting}`", str(r.n_paired),
             ", ".join(f"s{seed}: {_signed_pp(d)}" for seed, d in r.diffs.items()),
             _signed_pp(r.diff_mean), _pct(r.diff_std), f"{_signed_pp(r.diff_min)} / {_signed_pp(r.diff_max)}",
             f"{r.wins}/{r.n_paired}" + (f" ({r.ties} tied)" if r.ties else ""), f"{r.sign_p:.3f}"]
            for r in table.itertuples()]
    return _markdown(["setting", "paired seeds", "Δ eval EER per seed (pp)", "mean Δ (pp)", "std Δ (pp)",
                      "min / max Δ (pp)", "wins", "sign-test p"], rows)


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
    fig.suptitle(f"Eval EER by setting\n{note}", fontsize=10)
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


def _caveats(context: ReportContext, results: pd.DataFrame, table: pd.DataFrame) -> str:
    """The 'what this can and cannot show' paragraph, with this sweep's numbers."""
    if not len(table):
        return "No trial finished, so this sweep shows nothing yet; see the failed trials above."
    seeds = sorted(set(int(n) for n in table["n_seeds"]))
    n_seeds = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    ev = context.splits.get(context.eval_split)
    text = [f"Each setting has {n_seeds} seed(s). Seeds vary only the initialisation and the data order, on one "
            "fixed split of one dataset: the spread over seeds is training noise, not the uncertainty of a "
            "new dataset or new speakers."]
    if ev:
        text.append(f"The eval split has {ev.bonafide} bona fide and {ev.spoof} spoof utterances from "
                    f"{ev.speakers} speakers; one more misclassified bona fide utterance moves the miss rate by "
                    f"{100 / max(ev.bonafide, 1):.2f} pp, and utterances of one speaker are not independent, so "
                    "EER differences of a few points between settings are within what speaker and sampling "
                    "effects alone can produce.")
    if seeds[-1] <= 5:
        text.append(f"With {seeds[-1]} paired seeds even a variant that wins every seed has a two-sided sign-test "
                    f"p of {sign_test_p(seeds[-1], 0):.2f}: the paired table ranks, it does not prove.")
    if len(results) and not results.loc[results["codec_weights_label"] != "", "codec_trained"].astype(bool).all():
        text.append("The codec is UNTRAINED, so its quantizer levels are not EnCodec's: the learned level weights "
                    "and the ranking of variants say nothing about the real codec's hierarchy or the paper's claims.")
    text.append("The dev actDCF and Cllr are calibrated on dev itself (optimistic); the eval ones use the dev "
                "calibration. What the sweep can show: whether the pipeline trains every variant, how large the "
                "seed-to-seed spread is at these settings, and which differences stand out from that spread on "
                f"this data ({context.dataset}, {context.dataset_root or context.store_url}). It cannot show how "
                "the variants compare on ASVspoof or with a trained codec, or that a small difference is real.")
    return " ".join(text)


def write_report(results: pd.DataFrame, out_dir: str | Path, context: ReportContext) -> Path:
    """Write ``out_dir/report.md`` with ``eer.png`` and ``weights_*.png``; return the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = with_settings(results)
    table = ranking(results)
    paired = paired_vs_mean(results)
    note = "; ".join(sorted(set(results["codec_weights_label"].dropna()) - {""})) if len(results) else ""
    failed = results[results["status"] != OK] if len(results) else results
    grid = ", ".join(f"{k} ({len(v)}: {', '.join(map(str, v))})" for k, v in context.grid.items()) or "none"
    base = ", ".join(f"{k}={v!r}" for k, v in context.base.items()) or "defaults"
    md = [f"# Sweep report: {Path(context.sweep_file).name}", "", *_codec_header(results), "",
          f"- Store: `{context.store_url}` (dataset {context.dataset}, {context.dataset_root})",
          f"- Splits: {_splits_line(context)}",
          f"- Trials: {len(ok)} ok, {len(failed)} failed; eval split `{context.eval_split}`",
          f"- Base settings: {base}", f"- Grid: {grid}", ""]

    md += ["## Ranking by eval EER", "",
           "Settings (configs without the seed) sorted by mean eval EER over seeds; std has ddof 1.", ""]
    if len(table):
        md += [format_ranking(table), "", f"![eval EER by setting]({EER_PLOT})", ""]
        plot_eer(table, ok, out_dir / EER_PLOT, note)
    else:
        md += ["No trial finished.", ""]

    md += [f"## Paired comparison against `{BASELINE}`", "",
           f"Δ = eval EER of the setting minus that of `{BASELINE}` with the same seed and an otherwise equal "
           "config, in percentage points: negative means the setting is better. A win is a seed with Δ < 0.", ""]
    md += [format_paired(paired) if len(paired) else f"No setting has a `{BASELINE}` baseline with an otherwise "
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

    md += ["## What this can and cannot show", "", _caveats(context, results, table), ""]
    path = out_dir / REPORT
    path.write_text("\n".join(md))
    return path
