"""Any corpus described by a manifest table (``manifest``).

``ROOT`` is a CSV or Parquet file, or a folder holding ``manifest.csv`` or ``manifest.parquet``.
Required columns: ``path`` and ``label``. Optional: ``utt_id`` (default: the file's stem, made
unique with ``_2``, ``_3`` ...; whitespace becomes ``_``), ``speaker``, ``system``, ``codec``
(default ``-``) and ``split`` (default ``all``). Other columns are ignored.

Labels: ``bonafide``, ``bona-fide``, ``genuine`` or ``1`` mean bona fide; ``spoof``, ``fake`` or
``0`` mean spoof (case-insensitive). Any other value makes the row a problem.

Paths: a relative path is relative to the manifest's folder and must stay inside it (symlinks
included), else the row is a problem. An absolute path is taken as given: it is the user's own
choice and is not checked against the manifest's folder.

Problems name the CSV line (the header is line 1; cells with line breaks would shift the count)
or the Parquet row (1-based).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from extract.datasets.base import (
    BONAFIDE,
    SPOOF,
    Dataset,
    DatasetError,
    DatasetTable,
    PathGuard,
    TableBuilder,
    existing_root,
    register_dataset,
)

MANIFEST_NAMES = ("manifest.csv", "manifest.parquet")
REQUIRED = ("path", "label")
OPTIONAL = ("utt_id", "speaker", "system", "codec", "split")
DEFAULT_SPLIT = "all"
LABEL_ALIASES: dict[str, str] = {
    "bonafide": BONAFIDE,
    "bona-fide": BONAFIDE,
    "genuine": BONAFIDE,
    "1": BONAFIDE,
    "spoof": SPOOF,
    "fake": SPOOF,
    "0": SPOOF,
}


def find_manifest(root: Path) -> Path:
    """The manifest file: ``root`` itself, or the one ``manifest.*`` file in folder ``root``."""
    if root.is_dir():
        found = [root / name for name in MANIFEST_NAMES if (root / name).is_file()]
        if len(found) != 1:
            what = "both" if found else "neither"
            names = " and ".join(MANIFEST_NAMES)
            raise DatasetError(f"folder {root} holds {what} of {names}; name the file instead")
        return found[0]
    if root.suffix.lower() not in (".csv", ".parquet"):
        raise DatasetError(f"manifest {root} must be a .csv or .parquet file")
    return root


def read_manifest(manifest: Path) -> pd.DataFrame:
    """The known columns of the manifest, every cell a stripped string ('' when empty).

    Rows are numbered from 0 in file order; raises :class:`DatasetError` if a required column lacks.
    """
    try:
        if manifest.suffix.lower() == ".csv":
            frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        else:
            frame = pd.read_parquet(manifest)
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read manifest {manifest}: {err}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"manifest {manifest} lacks column(s) {', '.join(missing)}; "
            f"it has: {', '.join(frame.columns)}"
        )
    empty = [""] * len(frame)
    return pd.DataFrame(
        {
            column: [_cell(v) for v in frame[column]] if column in frame.columns else empty
            for column in (*REQUIRED, *OPTIONAL)
        }
    )


def _cell(value: object) -> str:
    """A manifest cell as a stripped string; missing values (None, NaN, NA) become ''."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value).strip()


def default_ids(paths: Sequence[str], explicit: Sequence[str]) -> list[str]:
    """Each explicit id, or else the path's stem, made unique against all ids."""
    taken = {i for i in explicit if i}
    ids = []
    for path, given in zip(paths, explicit, strict=True):
        if given:
            ids.append(given)
            continue
        stem = re.sub(r"\s+", "_", Path(path).stem) or "utt"
        candidate, n = stem, 1
        while candidate in taken:
            n += 1
            candidate = f"{stem}_{n}"
        taken.add(candidate)
        ids.append(candidate)
    return ids


@register_dataset
class Manifest(Dataset):
    """A user's own corpus, listed in a CSV or Parquet manifest."""

    name = "manifest"
    splits = ()

    def load(self, root: Path, splits: Sequence[str] | None = None) -> DatasetTable:
        """Read the manifest; ``splits`` selects values of its ``split`` column."""
        manifest = find_manifest(existing_root(root))
        frame = read_manifest(manifest)
        frame["split"] = frame["split"].replace("", DEFAULT_SPLIT)
        if splits is not None:
            wanted = (splits,) if isinstance(splits, str) else tuple(splits)
            present = list(dict.fromkeys(frame["split"]))
            unknown = [s for s in wanted if s not in present]
            if unknown:
                raise DatasetError(
                    f"manifest {manifest} has no split(s) {', '.join(map(repr, unknown))}; "
                    f"it has: {', '.join(present)}"
                )
            frame = frame[frame["split"].isin(wanted)]
        csv = manifest.suffix.lower() == ".csv"
        guard = PathGuard(manifest.parent)
        builder = TableBuilder()
        ids = default_ids(list(frame["path"]), list(frame["utt_id"]))
        for index, utt_id, row in zip(frame.index, ids, frame.itertuples(index=False), strict=True):
            where = f"{manifest}:{index + 2}" if csv else f"{manifest}: row {index + 1}"
            if not row.path:
                builder.reject(where, "empty path", path=str(manifest), utt_id=utt_id)
                continue
            if os.path.isabs(row.path):
                path: str | None = os.path.normpath(row.path)
            else:
                path = builder.guarded_path(guard, row.path, where, utt_id)
            if path is None:
                continue
            label = LABEL_ALIASES.get(row.label.lower())
            if label is None:
                accepted = ", ".join(LABEL_ALIASES)
                reason = f"unknown label {row.label!r} (accepted: {accepted})"
                builder.reject(where, reason, path=str(path), utt_id=utt_id)
                continue
            builder.add(
                where,
                utt_id=utt_id,
                speaker=row.speaker,
                system=row.system,
                codec=row.codec,
                label=label,
                split=row.split,
                path=path,
            )
        return builder.build(f"manifest {manifest}")
