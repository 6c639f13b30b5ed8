"""The train x test matrix: every run scored on every test store, runs that differ only by seed grouped.

`pipeline matrix --runs RUN... --features STORE... --out DIR` (and `pipeline sweep --test-features`
for the dev-selected setting) writes into DIR:

- ``cells/<run>/<store>/``: each run's `evaluate` of each store (its own calibration; the official
  score file, metrics.json with the per-condition tables, det.png);
- ``matrix.parquet``: one row per run x store x phase x condition (:data:`COLUMNS`): the pooled
  condition carries every metric, the others the EER (and min t-DCF where there is one) of the
  official table's pooled row (or, for one-factor tables, of its rows); a run whose codec or SSL
  weights differ from the store's (or that cannot be scored on it) has one row with ``empty`` saying why;
- ``matrix.md`` and ``matrix.png``: rows = training setting, columns = test corpus, a cell = the
  mean pooled EER of the scored trials (:data:`PHASES`) over the setting's seeds, their standard deviation, and a 95 % interval
  from a bootstrap over speakers and attacks (`classify.bootstrap`; each replicate's EER averaged
  over the seeds, so the interval is of the mean); plus a ``pooled`` column (all test corpora's
  trials together, per seed, then the mean) and the average over test corpora.

Which trials a cell scores (``phase``, `pipeline matrix --phase`): ``eval`` (the default) takes the
eval phase of a store whose trials have phases (ASVspoof 2021: progress / eval / hidden) and every
trial of the scored split of a store without phases; ``all`` takes every trial of the scored split,
all phases together. Every cell says which and how many: ``trials`` (e.g. ``phase eval: 60 of 180
trials``, ``all 60 trials (no phases)``; plus how many of the split's trials failed extraction and
have no score, `classify.unscored`) and ``n_trials`` in matrix.parquet and the summary, and the
same text in each matrix.md cell.

A *setting* is a run's training config without ``seed`` (and the device options), plus the store it
was trained on; its label names the variant, head and training corpus.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from classify.bootstrap import cluster_counts, percentile_interval, replicate_eers
from classify.checkpoint import checkpoint_path, load_checkpoint
from classify.metrics import compute_eer
from classify.scorefiles import read_scores
from classify.tables import POOLED, headline_mask
from store.reader import FeatureStore

COLUMNS = ("setting", "run", "seed", "store", "corpus", "phase", "condition", "eer", "min_dcf", "act_dcf", "cllr",
           "min_tdcf", "n_bonafide", "n_spoof", "codec_weights", "ssl_weights", "empty", "trials", "n_trials")
NOT_SETTING = ("seed", "device", "amp_cpu", "latent_ram_mb")
SPLITS = ("eval", "test", "all")
"""The split scored on each test store: the first of these it has."""
PHASES = ("eval", "all")
"""Which scored trials a cell's EER is of (module docstring); ``eval`` is the default."""
MAX_BOOT_CELLS = 40_000_000
"""Replicates x trials of one bootstrap (the counts' int64 array): fewer replicates on huge corpora."""


@dataclass
class Run:
    """One trained run: its checkpoint, seed, setting key and label, weights labels."""

    path: Path
    name: str
    seed: int
    setting: str
    label: str
    codec_weights: str
    trained_on: str


@dataclass
class Cell:
    """One run on one store: the evaluate result (None when empty) and why it is empty."""

    run: Run
    store: str
    corpus: str
    result: dict[str, Any] | None
    empty: str = ""
    scores: pd.DataFrame | None = field(default=None, repr=False)
    trials: str = ""
    """Which trials the cell scored and how many (module docstring); "" when empty."""
    eer: float | None = None
    """The pooled EER of those trials (the evaluate result's own where it scored the same ones)."""

    @property
    def n_trials(self) -> int:
        return 0 if self.scores is None else len(self.scores)


def read_run(path: str | Path) -> Run:
    """A run directory (its best.pt) or checkpoint file -> :class:`Run`."""
    ckpt = checkpoint_path(path)
    state = load_checkpoint(ckpt)
    config = state["config"]
    setting = {k: v for k, v in config.items() if k not in NOT_SETTING}
    entry = state.get("store", "")
    entry = entry if isinstance(entry, dict) else {"url": str(entry), "dataset": "?"}  # older checkpoints: the url
    trained_on = str(entry.get("url", ""))
    key = json.dumps({"config": setting, "store": trained_on}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    where = Path(trained_on.rstrip("/")).name.removesuffix(".zarr") or "?"
    label = f"{config.get('variant')}/{config.get('head')} on {entry.get('dataset', '?')} ({where}) [{digest}]"
    name = ckpt.parent.name if ckpt.name in ("best.pt", "last.pt") else ckpt.stem
    codec = state.get("codec", {})
    return Run(ckpt, name, int(config.get("seed", 0)), digest, label, str(codec.get("weights_label", "?")), trained_on)


def _split(store: FeatureStore) -> str | None:
    present = set(store.utterances["split"])
    return next((s for s in SPLITS if s in present), None)


def _condition_rows(result: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(phase, condition, metrics) rows of one evaluate result (module docstring)."""
    rows = [("eval" if "phases" in result else "all", POOLED,
             {k: result.get(k) for k in ("eer", "min_dcf", "act_dcf", "cllr", "min_tdcf", "n_bonafide", "n_spoof")})]
    phases = result.get("phases") or {"all": {"tables": result.get("tables") or {}, "pooled": None}}
    for phase, part in phases.items():
        if phase != rows[0][0] and part.get("pooled"):
            rows.append((phase, POOLED, dict(part["pooled"])))
        for table in list((part.get("tables") or {}).values())[:1]:
            one_factor = len(table["column_values"]) == 1
            labels = table["row_values"][:-1] if one_factor else table["column_values"][:-1]
            for k, value in enumerate(labels):
                at = (k, 0) if one_factor else (-1, k)
                metrics = {"eer": table["eer"][at[0]][at[1]], "n_bonafide": table["n_bonafide"][at[0]][at[1]],
                           "n_spoof": table["n_spoof"][at[0]][at[1]]}
                if table.get("min_tdcf"):
                    metrics["min_tdcf"] = table["min_tdcf"][at[0]][at[1]]
                rows.append((phase, str(value), metrics))
    if "phases" not in result and not result.get("tables"):
        rows += [("all", str(codec), dict(m)) for codec, m in (result.get("per_codec") or {}).items()]
    return rows


def _cell_scores(store: FeatureStore, result: dict[str, Any], phase: str = "eval") -> tuple[pd.DataFrame, str, float]:
    """The cell's scored trials of ``phase`` (:data:`PHASES`): (utt_id, score, is_bonafide, speaker,
    attack; the text saying which and how many; their pooled EER)."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    scores = read_scores(result["scores_file"])
    table = store.utterances.set_index("utt_id").loc[scores.utt_ids]
    phased = "phase" in store.utterances.columns
    keep = headline_mask(store, scores.utt_ids) if phase == "eval" else np.ones(len(scores.utt_ids), bool)
    frame = pd.DataFrame({"utt_id": np.asarray(scores.utt_ids)[keep], "score": scores.scores[keep],
                          "is_bonafide": (table["label"] == "bonafide").to_numpy()[keep],
                          "speaker": table["speaker"].astype(str).to_numpy()[keep],
                          "attack": table["system"].astype(str).to_numpy()[keep]})
    split = result.get("split", "?")
    if not phased:
        text = f"all {len(frame)} trials of split {split} (no phases)"
    elif phase == "eval":
        text = f"phase eval: {len(frame)} of {len(keep)} trials of split {split}"
    else:
        text = f"all phases: {len(frame)} trials of split {split}"
    missing = (result.get("not_scored") or {}).get("n", result.get("n_failed", 0)) or 0
    if missing:
        text += f"; {missing} of the split's trials not scored (extraction failed)"
    if phase == "eval" or not phased:  # the trials evaluate's own headline metrics are of
        eer = float(result["eer"])
    else:
        bona = frame["is_bonafide"].to_numpy()
        eer = float(compute_eer(frame["score"].to_numpy()[bona], frame["score"].to_numpy()[~bona])[0])
    return frame, text, eer


def score_cells(runs: Sequence[Run], stores: Sequence[str], out: Path, evaluate: Callable[..., dict[str, Any]],
                device: str = "auto", log: Callable[[str], None] = print, phase: str = "eval") -> list[Cell]:
    """Evaluate every run on every store (``evaluate``: `classify.evaluate.evaluate`), each cell of
    the trials of ``phase`` (:data:`PHASES`); a run that cannot be scored on a store (other codec or
    SSL weights, no labelled split) gives an empty cell with the reason."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    cells = []
    opened = {url: FeatureStore(url, check=True) for url in stores}
    names = _store_names(opened)
    for run in runs:
        for url, store in opened.items():
            corpus = str(store.attrs.get("dataset", {}).get("name"))
            split = _split(store)
            if split is None:
                cells.append(Cell(run, url, corpus, None, f"no split {' / '.join(SPLITS)} in the store"))
                continue
            try:
                result = evaluate(run.path, store, split, out / "cells" / run.name / names[url], device=device,
                                  log=lambda _: None)
            except ValueError as err:  # other codec or SSL weights, unlabelled trials, a missing class
                reason = _reason(str(err), run)
                log(f"{run.name} on {names[url]}: empty cell: {reason}")
                cells.append(Cell(run, url, corpus, None, reason))
                continue
            frame, trials, eer = _cell_scores(store, result, phase)
            cells.append(Cell(run, url, corpus, result, "", frame, trials, eer))
            log(f"{run.name} on {names[url]}: EER {100 * eer:.2f} % ({trials})")
    return cells


def _reason(message: str, run: Run) -> str:
    """An empty cell's reason in one short line, the same for every seed of a setting."""
    text = message.splitlines()[0].replace(str(run.path), "the run")
    if "trained on features of another codec" in text:
        detail = text[text.find("(") + 1 : text.find(")")] if "(" in text else ""
        return f"the store's codec differs from the run's ({detail.split(':')[0]} differs)"
    if "trained on other SSL features" in text:
        return "the store's SSL features differ from the run's: " + text.split(": ", 1)[-1]
    return text[:300]


def _store_names(stores: dict[str, FeatureStore]) -> dict[str, str]:
    """A short unique name per store: its dataset name, or its folder name when two share one."""
    corpus = {url: str(s.attrs.get("dataset", {}).get("name")) for url, s in stores.items()}
    shared = {c for c in corpus.values() if list(corpus.values()).count(c) > 1}
    return {url: (Path(url.rstrip("/")).name.removesuffix(".zarr") if c in shared else c) for url, c in corpus.items()}


def matrix_rows(cells: Sequence[Cell]) -> pd.DataFrame:
    """:data:`COLUMNS` rows of every cell."""
    rows = []
    for cell in cells:
        base = {"setting": cell.run.label, "run": cell.run.name, "seed": cell.run.seed, "store": cell.store,
                "corpus": cell.corpus, "codec_weights": cell.run.codec_weights, "empty": cell.empty}
        if cell.result is None:
            rows.append({**base, "phase": "", "condition": ""})
            continue
        base.update(ssl_weights=cell.result.get("ssl_weights", {}).get("label", ""), trials=cell.trials,
                    n_trials=cell.n_trials)
        conditions = _condition_rows(cell.result)
        if cell.scores is not None and conditions[0][0] == "eval" and cell.n_trials > int(
                (conditions[0][2].get("n_bonafide") or 0) + (conditions[0][2].get("n_spoof") or 0)):
            bona = int(cell.scores["is_bonafide"].sum())  # --phase all on a phased store: the cell's own row
            conditions.insert(0, ("all", POOLED, {"eer": cell.eer, "n_bonafide": bona,
                                                  "n_spoof": cell.n_trials - bona}))
        rows += [{**base, "phase": phase, "condition": condition, **metrics}
                 for phase, condition, metrics in conditions]
    frame = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame[list(COLUMNS)]


def _bootstrap(parts: list[pd.DataFrame], n_boot: int, seed: int) -> tuple[float, float]:
    """95 % interval of the seeds' mean EER, resampling speakers and attacks (the same draws for
    every seed: the seeds score the same trials)."""
    common = parts[0]["utt_id"]
    for part in parts[1:]:
        common = common[common.isin(part["utt_id"])]
    if common.empty:
        return float("nan"), float("nan")
    aligned = [p.set_index("utt_id").loc[common.to_numpy()] for p in parts]
    first = aligned[0]
    n_boot = max(20, min(n_boot, MAX_BOOT_CELLS // max(1, len(first))))
    counts = cluster_counts(first["speaker"].tolist(), first["attack"].tolist(), first["is_bonafide"].to_numpy(),
                            n_boot, np.random.default_rng(seed))
    replicates = np.mean([replicate_eers(a["score"].to_numpy(), a["is_bonafide"].to_numpy(), counts)
                          for a in aligned], axis=0)
    return percentile_interval(replicates)


def summary(cells: Sequence[Cell], n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """One row per setting x test store (plus ``pooled`` and ``average``): mean, sd, interval,
    seeds, and why it is empty."""
    names = {c.store: c.corpus for c in cells}
    shared = {c for c in names.values() if list(names.values()).count(c) > 1}
    column_of = {s: (Path(s.rstrip("/")).name.removesuffix(".zarr") if c in shared else c) for s, c in names.items()}
    out = []
    for setting in dict.fromkeys(c.run.label for c in cells):
        mine = [c for c in cells if c.run.label == setting]
        means = []
        for store in dict.fromkeys(c.store for c in mine):
            group = [c for c in mine if c.store == store]
            full = [c for c in group if c.result is not None]
            row = {"setting": setting, "test": column_of[store], "seeds": len(full),
                   "empty": "; ".join(dict.fromkeys(c.empty for c in group if c.empty)),
                   "trials": "; ".join(dict.fromkeys(c.trials for c in full)),
                   "n_trials": max((c.n_trials for c in full), default=0)}
            if full:
                eers = np.array([c.eer for c in full], dtype=float)
                low, high = _bootstrap([c.scores for c in full], n_boot, seed)
                row.update(mean=float(eers.mean()), sd=float(eers.std(ddof=1)) if len(eers) > 1 else 0.0, low=low,
                           high=high)
                means.append(row["mean"])
            out.append(row)
        pooled, n_pooled = [], 0
        for run_seed in dict.fromkeys(c.run.name for c in mine):
            parts = [c.scores for c in mine if c.run.name == run_seed and c.scores is not None]
            if parts:
                joined = pd.concat(parts)
                n_pooled = max(n_pooled, len(joined))
                pooled.append(compute_eer(joined.loc[joined["is_bonafide"], "score"],
                                          joined.loc[~joined["is_bonafide"], "score"])[0])
        out.append({"setting": setting, "test": POOLED, "seeds": len(pooled), "empty": "" if pooled else "no cell",
                    "trials": f"{n_pooled} trials of every test store together" if pooled else "",
                    "n_trials": n_pooled,
                    **({"mean": float(np.mean(pooled)), "sd": float(np.std(pooled, ddof=1)) if len(pooled) > 1 else 0.0}
                       if pooled else {})})
        out.append({"setting": setting, "test": "average", "seeds": len(pooled), "empty": "" if means else "no cell",
                    "trials": "the mean over test stores" if means else "", "n_trials": 0,
                    **({"mean": float(np.mean(means))} if means else {})})
    frame = pd.DataFrame(out)
    for column in ("mean", "sd", "low", "high"):
        if column not in frame:
            frame[column] = np.nan
    return frame


def _cell_text(row: pd.Series) -> str:
    if pd.isna(row["mean"]):
        return f"empty: {row['empty']}" if row["empty"] else "-"
    text = f"{100 * row['mean']:.2f}" + (f" ± {100 * row['sd']:.2f}" if pd.notna(row["sd"]) else "")
    if pd.notna(row.get("low")) and pd.notna(row.get("high")):
        text += f" [{100 * row['low']:.2f}, {100 * row['high']:.2f}]"
    return text + (f" ({row['trials']})" if row.get("trials") else "")


def write_markdown(table: pd.DataFrame, cells: Sequence[Cell], path: Path, phase: str = "eval") -> Path:
    """matrix.md: the settings x test corpora table (EER %), and what made it."""
    columns = list(dict.fromkeys(table["test"]))
    which = ("the eval phase (all trials for corpora without phases)" if phase == "eval" else
             "every scored trial, all phases together")
    lines = ["# Train x test matrix", "",
             f"EER (%) of {which} (`--phase {phase}`; each cell says which trials and how many), pooled: "
             "mean ± standard deviation "
             "over the setting's seeds [95 % bootstrap interval over speakers and attacks, of the mean]. "
             "`pooled`: every test corpus's trials together; `average`: the mean over test corpora.", "",
             "| setting | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for setting, group in table.groupby("setting", sort=False):
        by_test = {row["test"]: row for _, row in group.iterrows()}
        lines.append(f"| {setting} | " + " | ".join(_cell_text(by_test[c]) if c in by_test else "-" for c in columns)
                     + " |")
    lines += ["", "Runs (codec and SSL weights: every number above was made with these):", ""]
    for run in dict.fromkeys(c.run.name for c in cells):
        one = next(c for c in cells if c.run.name == run)
        ssl = next((c.result.get("ssl_weights", {}).get("label") for c in cells
                    if c.run.name == run and c.result and c.result.get("ssl_weights")), None)
        lines.append(f"- `{run}` (seed {one.run.seed}): {one.run.label}; codec weights: {one.run.codec_weights}"
                     + (f"; SSL weights: {ssl}" if ssl else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


def run_matrix(runs: Sequence[str | Path], stores: Sequence[str], out: str | Path, device: str = "auto",
               n_boot: int = 200, log: Callable[[str], None] = print, phase: str = "eval") -> pd.DataFrame:
    """Score every run on every store into ``out`` and write matrix.parquet, matrix.md and matrix.png
    (module docstring); returns the summary table."""
    from classify.evaluate import evaluate  # noqa: PLC0415  (torch and the models: only when scoring)
    from classify.plots import plot_matrix  # noqa: PLC0415

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    read = [read_run(r) for r in runs]
    names = [r.name for r in read]
    for run in read:  # two runs of one name would share a cells/ folder
        if names.count(run.name) > 1:
            run.name = f"{run.name}-{hashlib.sha256(str(run.path).encode()).hexdigest()[:6]}"
    cells = score_cells(read, stores, out, evaluate, device=device, log=log, phase=phase)
    matrix_rows(cells).to_parquet(out / "matrix.parquet", index=False)
    table = summary(cells, n_boot=n_boot)
    write_markdown(table, cells, out / "matrix.md", phase)
    weights = "; ".join(dict.fromkeys(f"codec weights: {r.codec_weights}" for r in read))
    plot_matrix(table, out / "matrix.png", note=weights)
    return table


def dev_selected_runs(results: pd.DataFrame) -> tuple[str, list[str]]:
    """The sweep's dev-selected setting: its finished trials grouped by config without the seed,
    the group of the lowest mean dev EER; (its config as JSON, its trial folders)."""
    ok = results[results["status"] == "ok"].copy()
    if ok.empty:
        raise ValueError("no finished trial to test: every trial of the sweep failed")
    ok["setting"] = [json.dumps({k: v for k, v in json.loads(c).items() if k not in NOT_SETTING}, sort_keys=True)
                     for c in ok["config_json"]]
    best = ok.groupby("setting", sort=False)["dev_eer"].mean().idxmin()
    return best, ok.loc[ok["setting"] == best, "trial_dir"].tolist()
