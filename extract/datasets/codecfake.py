"""Codecfake (``codecfake``; Xie et al. 2024): speech re-synthesised by neural audio codecs.

::

    ROOT/label/*.txt                     ``FILENAME LABEL METHOD`` a line (label real|fake, method 0..7)
    ROOT/train/*.wav  ROOT/dev/*.wav
    ROOT/test/C1 ... test/C7/*.wav       seen codecs           ROOT/test/A1 ... test/A3/*.wav  unseen

Splits ``train``, ``dev`` and ``test`` as released; ``condition`` (an extra column, also the codec
column) is the test folder (C1..C7, A1..A3), ``-`` in train and dev. system is ``M<METHOD>`` on fake
files, ``bonafide`` on real ones; ``method`` keeps METHOD.

Labels: a folder's file is looked up first in the label files named after its folder (``train.txt``,
``dev.txt``, ``C1.txt``, ... or names ending ``_train.txt``, ``_C1.txt``), else in the union of all
label files when the name is labelled there once. The trial id is the file name without extension
when it is unique in the corpus, else ``<folder>/<name>``. Problems (naming file and line): a label
line of another shape, an unknown label or method, a label file that names a file twice, an audio
file without label, a labelled file without audio.
"""

from __future__ import annotations

import os
from collections import Counter
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
    iter_protocol,
    register_dataset,
)

LABELS = {"real": BONAFIDE, "fake": SPOOF}
METHODS = tuple(str(n) for n in range(8))
TEST_CONDITIONS = (*(f"C{n}" for n in range(1, 8)), *(f"A{n}" for n in range(1, 4)))
AUDIO = (".wav", ".flac")
FORMAT = "FILENAME LABEL METHOD"


def _folders(root: Path) -> list[tuple[str, str, str]]:
    """(split, condition, folder relative to root) of every audio folder present."""
    found = [(s, UNKNOWN, s) for s in ("train", "dev") if (root / s).is_dir()]
    found += [("test", c, f"test/{c}") for c in TEST_CONDITIONS if (root / "test" / c).is_dir()]
    return found


def _label_files(root: Path, builder: TableBuilder) -> dict[str, dict[str, tuple[str, str, str]]]:
    """Per label file stem: filename -> (label, method, FILE:LINE)."""
    files = sorted((root / "label").glob("*.txt"))
    if not files:
        raise DatasetError(f"no label/*.txt under {root} (ROOT must hold label/, train/, dev/, test/)")
    out: dict[str, dict[str, tuple[str, str, str]]] = {}
    for path in files:
        entries = out.setdefault(path.stem, {})
        for where, (name, label, method) in iter_protocol(path, builder, FORMAT):
            if label not in LABELS or method not in METHODS:
                what = f"label {label!r} (real or fake)" if label not in LABELS else f"method {method!r} (0..7)"
                builder.reject(where, f"unknown {what}", path=str(path), utt_id=name)
            elif name in entries:
                builder.reject(where, f"duplicate file name {name!r} (first at {entries[name][2]})", path=str(path),
                               utt_id=name)
            else:
                entries[name] = (LABELS[label], method, where)
    return out


def _matches(stem: str, folder: str) -> bool:
    stem, folder = stem.lower(), folder.lower()
    return stem == folder or stem.endswith(f"_{folder}") or stem.endswith(f"-{folder}")


@register_dataset
class Codecfake(Dataset):
    """Codecfake: codec re-synthesis (fake) and real speech; seen (C1..C7) and unseen (A1..A3) test codecs."""

    name = "codecfake"
    splits = ("train", "dev", "test")
    score_format = "asvspoof2021"

    def load(self, root: Path, splits: Sequence[str] | None = None) -> DatasetTable:
        wanted = self.select_splits(splits)
        root = existing_root(root)
        guard = PathGuard(root)
        builder = TableBuilder(("condition", "method"))
        labels = _label_files(root, builder)
        union: dict[str, list[tuple[str, str, str]]] = {}
        for entries in labels.values():
            for name, value in entries.items():
                union.setdefault(name, []).append(value)
        audio = []
        for split, condition, folder in _folders(root):
            with os.scandir(root / folder) as entries:
                names = sorted(e.name for e in entries if e.name.lower().endswith(AUDIO))
            audio += [(split, condition, folder, name) for name in names]
        stems = Counter(os.path.splitext(name)[0] for *_, name in audio)
        used: set[tuple[str, str]] = set()
        for split, condition, folder, name in audio:
            own = [stem for stem in labels if _matches(stem, folder.rsplit("/", 1)[-1])]
            found = next(((stem, labels[stem][name]) for stem in own if name in labels[stem]), None)
            if found is None and len(union.get(name, ())) == 1:
                found = next((stem, e[name]) for stem, e in labels.items() if name in e)
            relative = f"{folder}/{name}"
            stem = os.path.splitext(name)[0]
            utt_id = stem if stems[stem] == 1 else f"{folder}/{stem}"
            if found is None:
                why = "labelled in several label files, none named after its folder" if union.get(name) else "no label"
                builder.reject(str(root / relative), f"audio file has {why}", path=str(root / relative), utt_id=utt_id)
                continue
            label_stem, (label, method, where) = found
            used.add((label_stem, name))
            if split not in wanted:
                continue
            path = builder.guarded_path(guard, relative, where, utt_id)
            if path is not None:
                builder.add(where, utt_id=utt_id, speaker=UNKNOWN, system=BONAFIDE if label == BONAFIDE else f"M{method}",
                            codec=condition, label=label, split=split, path=path, condition=condition, method=method)
        if set(wanted) == set(self.splits):
            for label_stem, entries in labels.items():
                for name, (_, _, where) in entries.items():
                    if (label_stem, name) not in used:
                        builder.reject(where, f"labelled file {name!r} not found in any audio folder",
                                       path=str(root / "label" / f"{label_stem}.txt"), utt_id=name)
        return builder.build(f"Codecfake at {root}", {"metadata": ["condition", "method"], "keys_found": True})
