"""The protocol trials a score file has no line for, made explicit.

A trial whose extraction failed (status "failed" in the store's utterance table) has no features, so
evaluation cannot score it, and no score is invented for it: the score files hold only the scored
trials. So that a score file with fewer lines than the protocol is never a silent surprise, the
outputs say so: ``not_scored.tsv`` beside the score files lists each such trial (``utt_id``,
``label``, ``stage``, ``reason``, the reason the store recorded in failures.parquet), and
:func:`summary` is what metrics.json (and a matrix cell) records about them: how many, of how many
protocol trials, why, and where the list is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

NOT_SCORED = "not_scored.tsv"
COLUMNS = ("utt_id", "label", "stage", "reason")
WHY = ("extraction failed (listed as failed in the store): no features, so no score; none was invented, the "
       "score files have no line for them")


def _text(value: Any, default: str) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value) == "":
        return default
    return " ".join(str(value).split())  # one line, no tabs: the TSV stays one row per trial


def not_scored(store: Any, split: str, keep: pd.Series | None = None) -> pd.DataFrame:
    """The trials of ``split`` (those where ``keep``, a boolean Series over the utterance table, is
    true, when given) that failed extraction, with the store's recorded stage and reason."""
    table = store.utterances
    pick = (table["split"] == split) & (table["status"] != "ok")
    if keep is not None:
        pick &= keep.reindex(table.index, fill_value=False).astype(bool)
    failed = table.loc[pick, ["utt_id", "label"]].astype(str)
    try:
        failures = store.failures
    except Exception:  # noqa: BLE001 - a store without its failure table still lists its failed trials
        failures = pd.DataFrame(columns=["utt_id", "stage", "reason"])
    failures = failures.dropna(subset=["utt_id"]).drop_duplicates("utt_id").set_index("utt_id")
    stage = [_text(failures["stage"].get(u) if u in failures.index else None, "-") for u in failed["utt_id"]]
    reason = [_text(failures["reason"].get(u) if u in failures.index else None, "extraction failed (no reason "
                    "recorded)") for u in failed["utt_id"]]
    return pd.DataFrame({"utt_id": failed["utt_id"].tolist(), "label": failed["label"].tolist(), "stage": stage,
                         "reason": reason}, columns=list(COLUMNS))


def write_not_scored(out_dir: str | Path, trials: pd.DataFrame, name: str = NOT_SCORED) -> Path | None:
    """``out_dir/name`` listing ``trials`` (TSV with a header); None, and no file, when there are none."""
    path = Path(out_dir) / name
    if trials.empty:
        path.unlink(missing_ok=True)  # an earlier run's list into the same folder is not this run's
        return None
    trials.to_csv(path, sep="\t", index=False, columns=list(COLUMNS))
    return path


def summary(trials: pd.DataFrame, n_scored: int, path: Path | None) -> dict[str, Any]:
    """metrics.json's record of the trials not scored."""
    return {"n": len(trials), "n_protocol": n_scored + len(trials), "reason": WHY if len(trials) else None,
            "by_stage": {str(k): int(v) for k, v in trials["stage"].value_counts().sort_index().items()},
            "file": str(path) if path else None}
