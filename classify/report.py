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
- the paired comparison of each setting against `mean` with an otherwise equal config, seed by
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

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from classify.bootstrap import cluster_counts, percentile_interval, replicate_eers
from classify.config import LATER_FIELDS
from classify.plots import plot_level_weights
from classify.scorefiles import ScoreFileError, read_scores
from classify.sweep import CONFIG_FIELDS, OK
from classify.variants import CONTROL_KINDS, FIXED_KINDS
from store.reader import FeatureStore

REPORT = "report.md"
EER_PLOT = "eer.png"
BASELINE = "mean"
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
    #: The store's utterance table (utt_id, speaker, system, label, split, status), for the bootstrap.
    utterances: pd.DataFrame | None = None
    n_boot: int = 1000
    boot_seed: int = 0


@dataclass(frozen=True)
class BootstrapResult:
    """Intervals from one set of speaker x attack replicates shared by every trial.

    ``setting_ci``: setting_key -> (low, high) of the eval EER averaged over the setting's seeds;
    ``paired_ci``: setting_key -> (low, high) of its mean paired difference to `mean`; ``invalid``:
    replicates without both classes (left out); ``missing``: trials without a readable score file
    for every eval utterance (left out)."""

    n_boot: int
    seed: int
    level: float
    utterances: int
    speakers: int
    attacks: int
    setting_ci: dict[str, tuple[float, float]]
    paired_ci: dict[str, tuple[float, float]]
    invalid: int
    missing: list[str]


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
    config = {**LATER_FIELDS, **json.loads(row["config_json"])}  # rows older than a field ran at its value
    config.pop("seed")
    return json.dumps(config, sort_keys=True)


def _varying(ok: pd.DataFrame) -> list[str]:
    """Config fields (besides seed) that take more than one value among the trials; ``head_kwargs``
    is left out when the head alone determines it (a head bundle in the grid)."""
    varying = [k for k in CONFIG_FIELDS if k != "seed" and ok[k].astype(str).nunique() > 1]
    if {"head", "head_kwargs"} <= set(varying):
        pairs = ok[["head", "head_kwargs"]].astype(str).drop_duplicates()
        if len(pairs) == pairs["head"].nunique():
            varying.remove("head_kwargs")
    return varying


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


def ranking(results: pd.DataFrame, intervals: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """One row per setting, best (lowest mean DEV EER: selection on dev) first: ``setting``,
    ``variant``, ``head``, ``n_seeds``, ``dev_eer_mean``, ``eval_eer_mean``/``_std``/``_min``/``_max``,
    ``eval_ci_low``/``_high`` (from ``intervals``, setting_key -> (low, high); NaN without),
    ``eval_min_dcf_mean``, ``eval_act_dcf_mean``, ``eval_cllr_mean``, ``n_trainable`` (fractions;
    std NaN for one seed). Ties keep the setting label order."""
    ok = with_settings(results)
    columns = ["setting", "variant", "head", "n_seeds", "dev_eer_mean", "eval_eer_mean", "eval_eer_std",
               "eval_eer_min", "eval_eer_max", "eval_ci_low", "eval_ci_high", "eval_min_dcf_mean",
               "eval_act_dcf_mean", "eval_cllr_mean", "n_trainable", "control", "setting_key"]
    if ok.empty:
        return pd.DataFrame(columns=columns)
    groups = ok.groupby("setting_key", sort=False)
    table = pd.DataFrame({
        "setting": groups["setting"].first(),
        "variant": groups["variant"].first(),
        "head": groups["head"].first(),
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
    table["control"] = [is_control(v) for v in table["variant"]]
    intervals = intervals or {}
    table["eval_ci_low"] = [intervals.get(k, (math.nan, math.nan))[0] for k in table["setting_key"]]
    table["eval_ci_high"] = [intervals.get(k, (math.nan, math.nan))[1] for k in table["setting_key"]]
    table = table.sort_values(["dev_eer_mean", "setting"], kind="mergesort").reset_index(drop=True)
    return table[columns]


def is_control(variant: str) -> bool:
    """True for a variant that sees no codec (`classify.variants.CONTROL_KINDS`, e.g. `energy`)."""
    return str(variant).split(":")[0] in CONTROL_KINDS


def best_per_head(table: pd.DataFrame) -> pd.DataFrame:
    """The first (best on dev) row of ``ranking``'s table for each head, in ranking order; controls
    are never a head's best."""
    return table[~table["control"]].drop_duplicates("head", keep="first").reset_index(drop=True)


def selected(table: pd.DataFrame) -> pd.Series | None:
    """The setting selected on dev: ``ranking``'s first row that is not a control (None if none)."""
    trained = table[~table["control"]]
    return trained.iloc[0] if len(trained) else None


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test of ``wins`` against ``losses`` (ties dropped); 1.0 when n = 0."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(max(wins, losses), n + 1)) / 2**n
    return min(1.0, 2 * tail)


def baseline_key(key: str) -> str:
    """The setting_key of the `mean` setting with an otherwise equal config."""
    config = json.loads(key)
    config["variant"] = BASELINE
    return json.dumps(config, sort_keys=True)


def paired_vs_mean(results: pd.DataFrame) -> pd.DataFrame:
    """Each non-`mean` setting against the `mean` setting whose config is equal but for the
    variant, on the seeds both have: ``setting``, ``setting_key``, ``n_paired``, ``diffs`` ({seed: eval EER of the
    variant minus `mean`'s}), ``diff_mean``, ``diff_std`` (ddof 1), ``diff_min``, ``diff_max``,
    ``wins`` (seeds where the variant's EER is lower), ``losses``, ``ties``, ``sign_p``
    (fractions). Settings without such a baseline are left out."""
    ok = with_settings(results)
    rows = []
    if ok.empty:
        return pd.DataFrame(rows)
    for key, group in ok[ok["variant"] != BASELINE].groupby("setting_key", sort=False):
        base = ok[ok["setting_key"] == baseline_key(key)]
        if base.empty:
            continue
        paired = group.set_index("seed")["eval_eer"].to_frame("variant").join(
            base.set_index("seed")["eval_eer"].to_frame("mean"), how="inner").sort_index()
        if paired.empty:
            continue
        diff = paired["variant"] - paired["mean"]
        wins, losses = int((diff < 0).sum()), int((diff > 0).sum())
        rows.append({
            "setting": group["setting"].iloc[0], "setting_key": key, "n_paired": len(diff),
            "diffs": {int(seed): float(d) for seed, d in diff.items()},
            "diff_mean": float(diff.mean()), "diff_std": float(diff.std(ddof=1)) if len(diff) > 1 else math.nan,
            "diff_min": float(diff.min()), "diff_max": float(diff.max()),
            "wins": wins, "losses": losses, "ties": len(diff) - wins - losses, "sign_p": sign_test_p(wins, losses),
        })
    return pd.DataFrame(rows).sort_values("diff_mean", kind="mergesort").reset_index(drop=True) if rows else \
        pd.DataFrame(rows)


def _trial_scores(trial_dir: str, role: str, utt_ids: pd.Index) -> np.ndarray | None:
    """A trial's raw scores of split role ``role`` aligned to ``utt_ids`` [N]; None when its score
    file is missing, unreadable, or lacks an utterance."""
    folder = Path(trial_dir) / role
    for name in ("scores.txt", "scores.tsv"):
        if (folder / name).is_file():
            try:
                read = read_scores(folder / name)
            except ScoreFileError:
                return None
            aligned = pd.Series(read.scores, index=read.utt_ids).reindex(utt_ids).to_numpy(dtype=np.float64)
            return None if np.isnan(aligned).any() else aligned
    return None


def bootstrap_eval(results: pd.DataFrame, utterances: pd.DataFrame, split: str, n_boot: int = 1000,
                   seed: int = 0, level: float = 0.95) -> BootstrapResult | None:
    """Speaker x attack bootstrap intervals (see `classify.bootstrap`) of every setting's eval EER
    (averaged over its seeds) and of every paired difference to `mean` (averaged over the paired
    seeds), from each trial's ``eval`` score file and the store's utterance table. One set of
    ``n_boot`` replicates (seeded by ``seed``) is shared by all trials, so settings and seeds are
    compared on the same resampled data. None when no trial has a usable score file."""
    ok = with_settings(results)
    rows = utterances[(utterances["split"] == split) & (utterances["status"] == "ok")]
    if ok.empty or rows.empty:
        return None
    utt_ids = pd.Index(rows["utt_id"].astype(str))
    is_bona = (rows["label"] == "bonafide").to_numpy()
    counts = cluster_counts(rows["speaker"].astype(str).tolist(), rows["system"].astype(str).tolist(), is_bona,
                            n_boot, np.random.default_rng(seed))
    replicates: dict[str, np.ndarray] = {}
    missing = []
    for row in ok.itertuples():
        scores = _trial_scores(row.trial_dir, "eval", utt_ids)
        if scores is None:
            missing.append(row.trial_id)
        else:
            replicates[row.trial_id] = replicate_eers(scores, is_bona, counts)
    if not replicates:
        return None
    by_setting: dict[str, dict[int, np.ndarray]] = {}
    for row in ok.itertuples():
        if row.trial_id in replicates:
            by_setting.setdefault(row.setting_key, {})[int(row.seed)] = replicates[row.trial_id]
    setting_ci = {key: percentile_interval(np.mean(list(seeds.values()), axis=0), level)
                  for key, seeds in by_setting.items()}
    paired_ci = {}
    for key, seeds in by_setting.items():
        base = by_setting.get(baseline_key(key))
        common = sorted(set(seeds) & set(base or {}))
        if key != baseline_key(key) and common:
            paired_ci[key] = percentile_interval(np.mean([seeds[s] - base[s] for s in common], axis=0), level)
    invalid = int(np.isnan(next(iter(replicates.values()))).sum())
    n_attacks = rows.loc[~is_bona, "system"].nunique()
    return BootstrapResult(n_boot, seed, level, len(rows), rows["speaker"].nunique(), n_attacks, setting_ci,
                           paired_ci, invalid, missing)


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
    if len(results) and not results.loc[results["codec_weights_label"] != "", "codec_trained"].astype(bool).all():
        text.append("The codec is UNTRAINED, so its quantizer levels are not EnCodec's: the learned level weights "
                    "and the ranking of variants say nothing about the real codec's hierarchy or the paper's claims.")
    text.append("The dev actDCF and Cllr are calibrated on dev itself (optimistic); the eval ones use the dev "
                "calibration. What the sweep can show: whether the pipeline trains every variant, how large the "
                "seed-to-seed spread is at these settings, and which differences stand out from that spread and "
                f"from speaker and attack resampling on this data ({context.dataset}, "
                f"{context.dataset_root or context.store_url}). It cannot show how the variants compare on ASVspoof "
                "or with a trained codec, or that a small difference is real.")
    return " ".join(text)


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
            "EER averaged over its seeds, and a paired interval that of its seed-averaged difference to `mean`. "
            "The std and min–max columns are the spread over seeds (training noise); the intervals are the "
            "data's (speakers and attacks). " + " ".join(extra)).strip()


def write_report(results: pd.DataFrame, out_dir: str | Path, context: ReportContext) -> Path:
    """Write ``out_dir/report.md`` with ``eer.png`` and ``weights_*.png``; return the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = with_settings(results)
    boot = None
    if context.utterances is not None and len(ok):
        boot = bootstrap_eval(results, context.utterances, context.eval_split, context.n_boot, context.boot_seed)
    table = ranking(results, boot.setting_ci if boot else None)
    paired = paired_vs_mean(results)
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

    md += [f"## Paired comparison against `{BASELINE}`", "",
           f"Δ = eval EER of the setting minus that of `{BASELINE}` with the same seed and an otherwise equal "
           "config, in percentage points: negative means the setting is better. A win is a seed with Δ < 0. "
           "The interval is the bootstrap's (speakers x attacks) for the mean Δ over the paired seeds.", ""]
    md += [format_paired(paired, boot.paired_ci if boot else None) if len(paired) else f"No setting has a `{BASELINE}` baseline with an otherwise "
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
