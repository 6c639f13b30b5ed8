"""MLAAD (``mlaad``; Müller et al. 2024, the Multi-Language Audio Anti-Spoofing Dataset).

::

    ROOT/fake/<language>/<model>/*.wav
    ROOT/fake/<language>/<model>/meta.csv      pipe-separated, header ``path|original_file|language|...``
                                               with ``model_name`` and ``architecture`` among the columns
    BONAFIDE_ROOT/<original_file>              the M-AILABS recordings (``--set bonafide_root=DIR``)

``ROOT`` may be the folder that holds ``fake/`` or ``fake/`` itself. Each meta.csv row is a spoof:
system and ``model`` are ``model_name``, ``language`` and ``architecture`` are extra columns; its
``path`` is relative to ROOT (``fake/...``, as released) or, failing that, to its meta.csv's folder.
The bona fide trials are the distinct M-AILABS files that ``original_file`` names, under the second
root (speaker from M-AILABS' ``by_book/<gender>/<speaker>/`` when the path has it); without
``bonafide_root`` the table is spoof-only and says so.

MLAAD has **no official split**: every trial goes into split ``all``. ``--set split_by=model`` or
``split_by=language`` makes one: the sorted models (languages) go, in turn, 3 of every 5 to train,
1 to dev, 1 to eval, so that no model (language) is in two splits; a bona fide file follows its
language (split_by=language) or the first model that used it (split_by=model).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from extract.datasets.base import (
    BONAFIDE,
    SPOOF,
    UNKNOWN,
    Dataset,
    DatasetError,
    DatasetTable,
    PathGuard,
    TableBuilder,
    existing_root,
    register_dataset,
)
from extract.datasets.csvrows import read_csv_rows

REQUIRED_START = ("path", "original_file", "language")
REQUIRED = ("model_name", "architecture")
EXTRA_COLUMNS = ("language", "model", "architecture")
SPLIT_BY = ("model", "language")
ROTATION = ("train", "train", "train", "dev", "eval")
NO_SPLIT = "all"


def check_header(names: list[str]) -> str | None:
    if tuple(names[: len(REQUIRED_START)]) != REQUIRED_START:
        return f"expected it to start with {'|'.join(REQUIRED_START)!r}"
    lacking = [c for c in REQUIRED if c not in names]
    return f"lacks the column(s) {', '.join(lacking)}" if lacking else None


def group_splits(groups: Sequence[str]) -> dict[str, str]:
    """Each distinct group (sorted) -> train, train, train, dev, eval, train, ... in turn."""
    return {g: ROTATION[i % len(ROTATION)] for i, g in enumerate(sorted(set(groups)))}


def mailabs_speaker(original: str) -> str:
    """The speaker of an M-AILABS path (``.../by_book/<gender>/<speaker>/...``), else ``-``."""
    parts = original.replace("\\", "/").split("/")
    if "by_book" in parts:
        i = parts.index("by_book")
        if len(parts) > i + 2 and parts[i + 1] in ("male", "female"):
            return parts[i + 2]
    return UNKNOWN


@register_dataset
class MLAAD(Dataset):
    """MLAAD: TTS spoofs in many languages and models; bona fide from M-AILABS (a second root)."""

    name = "mlaad"
    splits = ()
    score_format = "asvspoof2021"
    options = ("bonafide_root", "split_by")

    def load(self, root: Path, splits: Sequence[str] | None = None, bonafide_root: str | None = None,
             split_by: str | None = None) -> DatasetTable:
        if split_by is not None and split_by not in SPLIT_BY:
            raise DatasetError(f"mlaad: split_by {split_by!r} unknown; choose {' or '.join(SPLIT_BY)} (or none)")
        root = existing_root(root)
        base = root if (root / "fake").is_dir() else root.parent
        fake = base / "fake"
        metas = sorted(fake.glob("*/*/meta.csv"))
        if not metas:
            raise DatasetError(f"no fake/<language>/<model>/meta.csv under {base} (ROOT must hold fake/, or be it)")
        guard = PathGuard(base)
        bona_guard = PathGuard(existing_root(bonafide_root)) if bonafide_root else None
        rows, bona = [], {}
        builder = TableBuilder(EXTRA_COLUMNS)
        for meta in metas:
            for where, row in read_csv_rows(meta, "|", check_header):
                if row is None:
                    builder.reject(where, "another number of cells than the header", path=str(meta))
                    continue
                relative = row["path"].removeprefix("./")
                if not relative.startswith("fake/"):
                    relative = os.path.join(os.path.relpath(meta.parent, base), relative)
                path = builder.existing_file(guard, relative, where, relative)
                if path is None:
                    continue
                rows.append((where, relative, path, row))
                if bona_guard is not None and row["original_file"] and row["original_file"] not in bona:
                    bona[row["original_file"]] = (where, row)
        split_of = self._splits(split_by, rows, bona)
        for where, relative, path, row in rows:
            group = row["model_name"] if split_by == "model" else row["language"]
            builder.add(where, utt_id=relative, speaker=UNKNOWN, system=row["model_name"], codec=UNKNOWN, label=SPOOF,
                        split=split_of(group), path=path, language=row["language"], model=row["model_name"],
                        architecture=row["architecture"])
        for original, (where, row) in bona.items():
            path = builder.existing_file(bona_guard, original, where, original, "bona fide file (original_file)")
            if path is None:
                continue
            group = row["model_name"] if split_by == "model" else row["language"]
            builder.add(where, utt_id=f"bonafide/{original}", speaker=mailabs_speaker(original), system=BONAFIDE,
                        codec=UNKNOWN, label=BONAFIDE, split=split_of(group), path=path, language=row["language"],
                        model=UNKNOWN, architecture=UNKNOWN)
        note = (f"split by {split_by} (not official: MLAAD has no official split)" if split_by
                else "no official split: every trial in split 'all' (--set split_by=model|language makes one)")
        spoof_only = "" if bonafide_root else "; spoof only (no bonafide_root: --set bonafide_root=DIR)"
        table = builder.build(f"MLAAD at {base}: {note}{spoof_only}",
                              {"metadata": list(EXTRA_COLUMNS), "split_note": note, "keys_found": True})
        if splits is not None:
            wanted = (splits,) if isinstance(splits, str) else tuple(splits)
            present = sorted(set(table.table["split"]))
            unknown = [s for s in wanted if s not in present]
            if unknown:
                raise DatasetError(f"mlaad: no split(s) {', '.join(unknown)}; it has {', '.join(present)} ({note})")
            table.table = table.table[table.table["split"].isin(wanted)].reset_index(drop=True)
        return table

    @staticmethod
    def _splits(split_by: str | None, rows: list, bona: dict):
        if split_by is None:
            return lambda group: NO_SPLIT
        column = "model_name" if split_by == "model" else "language"
        mapping = group_splits([row[column] for *_, row in rows])
        return mapping.__getitem__
