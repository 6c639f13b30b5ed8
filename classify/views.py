"""Augmented views in training and scoring: the per-utterance draw, and robustness evaluation.

**Training** (``views`` = "all" or "a,b", `pipeline train --views`; a sweep grid may vary it): for
each utterance of an epoch the batch takes, independently, the clean frames with probability
``view_clean_share`` and otherwise one of the utterance's views (those of the chosen views that
apply to the training split and hold frames for it), each equally likely; an utterance that no view
holds is always clean. The crop is then cut from the chosen copy's frames with the usual crop rule
(`classify.data.crop_index`, the same crop position drawn for it). The draws come from the run's
``torch.Generator``, after the epoch order and crop positions: a run is reproducible from its seed
and resumes bit for bit; without views nothing is drawn and a run is what it was before views
existed. Dev selection, early stopping and calibration read the clean dev split unless ``dev_view``
names a view that applies to it (`pipeline train --dev-view NAME`): then they read that view's copy
of the dev split (:func:`dev_source`), and the run says so (config.json, each history row,
calibration.json and best.pt's calibration carry ``dev_view``).

**Scoring** (`pipeline evaluate --view NAME|a,b|all`): the view's copy of the split is scored by
the same code as the clean one (`classify.evaluate.evaluate` with ``view``: metrics.json names the
view and its recipe; the checkpoint's calibration, fitted on clean dev, is applied). With several
views, :func:`evaluate_views` scores clean and each view into ``OUT/clean``, ``OUT/NAME`` and writes
``OUT/views.json`` and ``OUT/views.md``: EER and minDCF per view beside clean.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classify.data import Batch, FrameSource, SplitData, crop_index, epoch_order
from classify.frames import DataError
from store.reader import FeatureStore, StoreReadError
from store.views import unfinished_views

CLEAN = "clean"


def view_names(store: FeatureStore, views: str, split: str, log: Callable[[str], None] | None = None) -> list[str]:
    """The views ``views`` ("" none, "all", "a,b") names that apply to ``split``; DataError (one line)
    for an unknown view, one that does not apply to ``split``, or "all" when no finished one does.
    "all" is every finished view that applies to ``split``: those still being extracted are left
    out, and ``log`` gets one line naming them (a view named explicitly is refused when it is
    unfinished, by :func:`open_view`)."""
    if not views or not views.strip():
        return []
    recipes = store.views
    if views.strip() == "all":
        applying = [n for n, r in recipes.items() if split in r.get("splits", [])]
        unfinished = {n: s for n, s in unfinished_views(store.files).items() if n in applying}
        names = [n for n in applying if n not in unfinished]
        left_out = "; ".join(f"{n} ({', '.join(s)} still being extracted)" for n, s in unfinished.items())
        if not names:
            have = ", ".join(f"{n} ({'/'.join(r.get('splits', []))})" for n, r in recipes.items()) or "none"
            raise DataError(f"{store.url}: no {'finished ' if left_out else ''}augmented view applies to split "
                            f"{split!r}; views: {have}" + (f"; unfinished: {left_out}" if left_out else ""))
        if left_out and log is not None:
            log(f"{store.url}: views all leaves out the unfinished view(s) {left_out}; run the same "
                "`pipeline extract --views ...` again to finish them")
        return names
    names = [n.strip() for n in views.split(",") if n.strip()]
    for name in names:
        if name not in recipes:
            raise DataError(f"{store.url}: no view {name!r}; this store has: {', '.join(recipes) or 'none'} "
                            "(`pipeline extract --views FILE` adds views)")
        if split not in recipes[name].get("splits", []):
            raise DataError(f"{store.url}: view {name!r} applies to split(s) {', '.join(recipes[name].get('splits', []))}, "
                            f"not {split!r}")
    return names


def open_view(store: FeatureStore, name: str) -> FeatureStore:
    """The store seen through view ``name`` (`store.views.ViewStore`); DataError when it cannot be read."""
    try:
        return store.view(name)
    except StoreReadError as err:
        raise DataError(str(err)) from None


def draw_copies(available: np.ndarray, clean_share: float, generator: torch.Generator) -> np.ndarray:
    """For each of N utterances, 0 (clean) or k >= 1 (view k - 1): ``available`` bool [K, N] says which
    of the K views hold each; clean with probability ``clean_share`` (always where none holds it),
    else one of its views, each equally likely. Draws 2 N uniforms from ``generator``."""
    n = available.shape[1]
    u = torch.rand(n, generator=generator, dtype=torch.float64).numpy()
    w = torch.rand(n, generator=generator, dtype=torch.float64).numpy()
    count = available.sum(0)
    use_view = (u >= clean_share) & (count > 0)
    rank = np.minimum(np.floor(w * np.maximum(count, 1)).astype(np.int64), np.maximum(count - 1, 0))  # which available one
    position = np.cumsum(available, axis=0) - 1  # [K, N]: rank of each view among the available ones
    chosen = np.argmax(available & (position == rank[None, :]), axis=0) + 1
    return np.where(use_view, chosen, 0)


class ViewMix:
    """Training batches that draw, per utterance and epoch, the clean copy or one of its views (see
    the module docstring). ``clean``: the clean source (whose split data the run holds); ``views``:
    each view's source, by name, in the same rows. ``counts``: how often each copy was drawn in the
    last epoch (clean first)."""

    def __init__(self, clean: FrameSource, views: dict[str, FrameSource], clean_share: float) -> None:
        self.sources = [clean, *views.values()]
        self.names = [CLEAN, *views]
        self.clean_share = clean_share
        self.counts: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:  # everything but the training batches is the clean source's
        return getattr(self.sources[0], name)

    def train_batches(self, split: SplitData, batch_size: int, crop: int, pad: str, balance: str,
                      generator: torch.Generator) -> Iterator[tuple[Batch, np.ndarray]]:
        """As `FrameSource.train_batches`, each row from its drawn copy (drawn before the first batch)."""
        clean = self.sources[0]
        crop_units = max(1, round(crop / clean.codec_per_unit))
        order = epoch_order(split.is_bonafide, balance, generator)
        positions = torch.rand(order.size, generator=generator, dtype=torch.float64).numpy()
        rows = split.rows[order]
        available = np.stack([s.units[rows] > 0 for s in self.sources[1:]])
        copy = draw_copies(available, self.clean_share, generator)
        self.counts = {name: int(np.count_nonzero(copy == k)) for k, name in enumerate(self.names)}
        for first in range(0, order.size, batch_size):
            picked = slice(first, first + batch_size)
            parts: list[tuple[np.ndarray, Batch]] = []
            for k in np.unique(copy[picked]):
                at = np.flatnonzero(copy[picked] == k)
                source, chosen = self.sources[k], rows[picked][at]
                unit, valid, n_units = crop_index(np.zeros(at.size, dtype=np.int64), source.units[chosen], crop_units,
                                                  pad, positions[picked][at])
                parts.append((at, source.gather(chosen, unit, valid, n_units)))
            yield merge(parts, order[picked].size), split.is_bonafide[order[picked]]


def merge(parts: list[tuple[np.ndarray, Batch]], size: int) -> Batch:
    """One batch of ``size`` rows from parts (row positions, batch) of equal frame counts."""
    back = torch.from_numpy(np.argsort(np.concatenate([at for at, _ in parts]), kind="stable"))

    def join(field: str) -> torch.Tensor | None:
        values = [getattr(b, field) for _, b in parts]
        return None if values[0] is None else torch.cat(values)[back]

    return Batch(join("codes"), join("lengths"), join("latent"), join("ssl"))


def train_source(store: FeatureStore, model, config: dict[str, Any], clean: FrameSource, split: str,
                 log: Callable[[str], None]) -> FrameSource | ViewMix:
    """The training batches' source: ``clean`` itself without views, else a :class:`ViewMix` of the
    views ``config["views"]`` names that apply to ``split``."""
    from classify.sources import make_source  # noqa: PLC0415 - sources imports the model's modules

    names = view_names(store, config.get("views", ""), split, log)
    if not names:
        return clean
    _cached_ssl(config)
    views = {name: make_source(open_view(store, name), model, config) for name in names}
    log(f"views: each {split} utterance is drawn clean with probability {config.get('view_clean_share', 0.5):g}, "
        f"else from one of its views among {', '.join(names)}, each epoch")
    return ViewMix(clean, views, float(config.get("view_clean_share", 0.5)))


def _cached_ssl(config: dict[str, Any]) -> None:
    if (config.get("ssl_kwargs") or {}).get("online"):
        raise DataError("augmented views need the SSL stream cached in each view (`extract --views` with a view "
                        "that lists 'ssl'), not computed online from the clean audio (ssl_kwargs.online)")


def dev_source(store: FeatureStore, model, config: dict[str, Any], clean: FrameSource, split: str,
               log: Callable[[str], None]) -> tuple[FrameSource, SplitData]:
    """The source and split data that dev selection and calibration read: ``clean``'s copy of
    ``split`` without ``config["dev_view"]``, else that view's copy (one view that applies to
    ``split`` and is finished; DataError naming the store and the view otherwise)."""
    from classify.sources import make_source  # noqa: PLC0415 - sources imports the model's modules

    name = (config.get("dev_view") or "").strip()
    if not name:
        return clean, clean.split(store, split)
    if name == "all" or "," in name:
        raise DataError(f"{store.url}: dev_view {name!r} must name one view (dev selection reads one copy of "
                        f"split {split!r})")
    view_names(store, name, split)  # unknown, or not applying to the dev split: one line
    _cached_ssl(config)
    scored = open_view(store, name)  # unfinished: one line
    source = make_source(scored, model, config)
    log(f"dev: selection and calibration on view {name} of split {split} (not the clean {split})")
    return source, source.split(scored, split)


# -- robustness: one evaluation per view -------------------------------------------------------------


def evaluate_views(checkpoint: str | Path, store: FeatureStore, split: str, out_dir: str | Path, views: str,
                   log: Callable[[str], None] = print, **kwargs: Any) -> dict[str, Any]:
    """Score ``split`` clean and through each view ``views`` names ("all", "a,b", or one name): one
    name writes ``out_dir`` as a clean evaluation does (metrics.json says which view); several write
    ``out_dir/clean`` and ``out_dir/NAME`` and the table ``views.json`` / ``views.md`` of EER and
    minDCF per view beside clean. Returns {copy: metrics}."""
    from classify.evaluate import evaluate  # noqa: PLC0415

    names = view_names(store, views, split, log)
    out_dir = Path(out_dir)
    if len(names) == 1 and views.strip() != "all":
        return {names[0]: evaluate(checkpoint, store, split, out_dir, log=log, view=names[0], **kwargs)}
    results = {CLEAN: evaluate(checkpoint, store, split, out_dir / CLEAN, log=log, **kwargs)}
    for name in names:
        results[name] = evaluate(checkpoint, store, split, out_dir / name, log=log, view=name, **kwargs)
    table = robustness_table(results, split)
    (out_dir / "views.json").write_text(json.dumps(table, indent=2) + "\n")
    (out_dir / "views.md").write_text(format_table(table) + "\n")
    log(format_table(table))
    return results


def robustness_table(results: dict[str, dict[str, Any]], split: str) -> dict[str, Any]:
    """EER and minDCF per copy (clean first), each view's change of EER from clean, and the weights."""
    clean = results[CLEAN]
    rows = [{"copy": name, "eer": r["eer"], "min_dcf": r["min_dcf"], "n_scored": r["n_scored"],
             "eer_change": r["eer"] - clean["eer"], "description": (r.get("view_recipe") or {}).get("description", ""),
             "metrics": str(Path(r["det_plot"]).parent / "metrics.json")} for name, r in results.items()]
    return {"split": split, "checkpoint": clean["checkpoint"], "codec_weights": clean["codec_weights"],
            "rows": rows}


def format_table(table: dict[str, Any]) -> str:
    lines = [f"EER per view, split {table['split']} ({table['codec_weights']['label']})", "",
             "| copy | EER % | change | minDCF | utterances | what |", "|---|---|---|---|---|---|"]
    for r in table["rows"]:
        change = "" if r["copy"] == CLEAN else f"{100 * r['eer_change']:+.2f}"
        lines.append(f"| {r['copy']} | {100 * r['eer']:.2f} | {change} | {r['min_dcf']:.4f} | {r['n_scored']} | "
                     f"{r['description']} |")
    return "\n".join(lines)
