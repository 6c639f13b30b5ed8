"""The statistics of a sweep's comparison report (`classify.report` renders them): settings and
their seeds, the ranking on dev, each head's best, the paired comparison against a baseline
variant with its sign test, the speaker x attack bootstrap intervals, the mean level weights.

A *setting* is a trial's full config without its seed (migrated to the current format,
`classify.migrations`, so rows of older sweeps group with new ones); the trials of one setting
are its seeds. Only ``ok`` trials enter the numbers; every value is a fraction.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from classify.bootstrap import cluster_counts, percentile_interval, replicate_eers
from classify.migrations import migrate_config
from classify.scorefiles import ScoreFileError, read_scores
from classify.sweep import CONFIG_FIELDS, OK
from classify.variants import CONTROL_KINDS
from store.reader import FeatureStore

BASELINE = "mean"
"""The variant a sweep's settings are paired against unless its file names another (``baseline``)."""


@dataclass(frozen=True)
class SplitSummary:
    """Size of one split: ok utterances, bona fide, spoof, speakers."""

    utterances: int
    bonafide: int
    spoof: int
    speakers: int


@dataclass(frozen=True)
class BootstrapResult:
    """Intervals from one set of speaker x attack replicates shared by every trial.

    ``setting_ci``: setting_key -> (low, high) of the eval EER averaged over the setting's seeds;
    ``paired_ci``: setting_key -> (low, high) of its mean paired difference to the baseline; ``invalid``:
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
    config = migrate_config(json.loads(row["config_json"]))  # rows older than a field ran at its value
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


def baseline_key(key: str, baseline: str = BASELINE) -> str:
    """The setting_key of the ``baseline`` variant's setting with an otherwise equal config."""
    config = json.loads(key)
    config["variant"] = baseline
    return json.dumps(config, sort_keys=True)


def paired_vs_mean(results: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """Each setting not of the ``baseline`` variant (default `mean`) against the ``baseline`` setting
    whose config is equal but for the
    variant, on the seeds both have: ``setting``, ``setting_key``, ``n_paired``, ``diffs`` ({seed: eval EER of the
    variant minus the baseline's}), ``diff_mean``, ``diff_std`` (ddof 1), ``diff_min``, ``diff_max``,
    ``wins`` (seeds where the variant's EER is lower), ``losses``, ``ties``, ``sign_p``
    (fractions). Settings without such a baseline are left out."""
    ok = with_settings(results)
    rows = []
    if ok.empty:
        return pd.DataFrame(rows)
    for key, group in ok[ok["variant"] != baseline].groupby("setting_key", sort=False):
        base = ok[ok["setting_key"] == baseline_key(key, baseline)]
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
                   seed: int = 0, level: float = 0.95, baseline: str = BASELINE) -> BootstrapResult | None:
    """Speaker x attack bootstrap intervals (see `classify.bootstrap`) of every setting's eval EER
    (averaged over its seeds) and of every paired difference to ``baseline`` (averaged over the paired
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
        base = by_setting.get(baseline_key(key, baseline))
        common = sorted(set(seeds) & set(base or {}))
        if key != baseline_key(key, baseline) and common:
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
