"""In-the-Wild (``itw``; Müller et al. 2022), in the layout of its release.

::

    ROOT/release_in_the_wild/meta.csv      header ``file,speaker,label``
    ROOT/release_in_the_wild/0.wav ...     the files meta.csv names

``ROOT`` may be the folder that holds ``release_in_the_wild/`` or that folder itself. label is
``bona-fide`` or ``spoof``; speaker names contain spaces (kept as given). The trial id is the
``file`` value (``0.wav``), as the field's score files use it. Every file goes into split ``eval``;
there is no attack or codec label (system ``-`` on spoofs, codec ``-``). A meta.csv with other
columns is refused whole; a bad row (unknown label, missing file, duplicate id, a path leaving the
folder) is a problem naming the line.
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
from extract.datasets.csvrows import exact_header, read_csv_rows

FOLDER = "release_in_the_wild"
HEADER = ("file", "speaker", "label")
LABEL_VALUES = {"bona-fide": BONAFIDE, "spoof": SPOOF}


@register_dataset
class InTheWild(Dataset):
    """In-the-Wild: celebrity and politician recordings from the web, bona fide and deepfake."""

    name = "itw"
    splits = ("eval",)
    score_format = "asvspoof2021"

    def load(self, root: Path, splits: Sequence[str] | None = None) -> DatasetTable:
        self.select_splits(splits)
        root = existing_root(root)
        folder = root / FOLDER if (root / FOLDER).is_dir() else root
        meta = folder / "meta.csv"
        if not meta.is_file():
            raise DatasetError(f"meta.csv not found: {meta} (ROOT must be the folder that holds {FOLDER}/, or it)")
        guard = PathGuard(folder)
        with os.scandir(folder) as entries:
            present = {e.name for e in entries}
        builder = TableBuilder()
        for where, row in read_csv_rows(meta, ",", exact_header(HEADER, ",")):
            if row is None:
                builder.reject(where, f"expected {len(HEADER)} cells ({','.join(HEADER)})", path=str(meta))
                continue
            label = LABEL_VALUES.get(row["label"])
            if label is None:
                builder.reject(where, f"unknown label {row['label']!r} (expected bona-fide or spoof)", path=str(meta),
                               utt_id=row["file"])
                continue
            path = builder.guarded_path(guard, row["file"], where, row["file"])
            if path is None:
                continue
            flat = os.path.dirname(row["file"]) == ""
            if (row["file"] not in present) if flat else not os.path.exists(path):
                builder.reject(where, f"audio file {path} not found", path=path, utt_id=row["file"])
                continue
            builder.add(where, utt_id=row["file"], speaker=row["speaker"], system=UNKNOWN, codec=UNKNOWN, label=label,
                        split="eval", path=path)
        return builder.build(f"In-the-Wild at {folder}", {"metadata": [], "keys": str(meta), "keys_found": True})
