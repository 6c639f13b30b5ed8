"""The dataset registry and the one utterance table every dataset yields.

A dataset turns a folder on disk (protocol files plus audio) into a :class:`DatasetTable`: a pandas
DataFrame with one row per utterance and the columns :data:`COLUMNS`, in that order, possibly
followed by dataset-specific extra columns (ASVspoof 5, for example, keeps ``gender``, ``codec_q``
and ``attack_tag``), plus a list of :class:`Problem` for protocol lines that could not be used.

Readers never look at the audio: a missing audio file is the extractor's concern. They only make
sure that every path stays inside the dataset root (symlinks included), see :class:`PathGuard`.

Datasets register themselves by name with :func:`register_dataset`; :func:`get_dataset` finds them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
import pandas as pd

COLUMNS: tuple[str, ...] = (
    "utt_id",
    "speaker",
    "system",
    "codec",
    "label",
    "split",
    "path",
    "duration",
)
"""The standard columns, in order. Extra, dataset-specific columns may follow them."""

BONAFIDE = "bonafide"
SPOOF = "spoof"
LABELS: tuple[str, ...] = (BONAFIDE, SPOOF)
UNKNOWN = "-"
UNLABELLED = UNKNOWN
"""Label of a trial whose key is not (yet) known: a trial list without its keys (ASVspoof 2021
before the keys were released). Such rows extract like any other; evaluation refuses them, naming
the keys file (the table's ``attrs["keys"]``)."""
"""Value of ``speaker``, ``codec`` (and ``system`` of a spoof) when the protocol does not say."""

STAGE = "dataset"
"""The ``stage`` of every :class:`Problem` a dataset reader reports."""

_TEXT_COLUMNS = tuple(c for c in COLUMNS if c != "duration")


class DatasetError(ValueError):
    """A dataset cannot be read at all (missing root or protocol file, unknown split or name)."""


class PathEscapeError(DatasetError):
    """A path would leave the dataset root."""


@dataclass(frozen=True)
class Problem:
    """One utterance (or protocol line) that was left out, and why.

    ``path`` is the audio path when one could be formed, else the protocol file; ``reason`` starts
    with ``FILE:LINE`` (1-based) of the protocol line concerned.
    """

    utt_id: str | None
    path: str
    stage: str
    reason: str


@dataclass
class DatasetTable:
    """The utterance table of one dataset load, the problems met, and a one-line description."""

    table: pd.DataFrame
    problems: list[Problem]
    description: str
    attrs: dict = field(default_factory=dict)
    """Extra facts recorded in the store's ``dataset`` attributes: ``metadata`` (the extra columns),
    ``keys`` (the keys file that labels the trials) and ``keys_found``, ``split_note``."""


class Dataset(ABC):
    """A named corpus layout. Subclasses set ``name`` and ``splits`` and implement :meth:`load`."""

    name: ClassVar[str]
    splits: ClassVar[tuple[str, ...]]
    """The splits in their canonical order; empty when the data defines them (manifest)."""
    score_format: ClassVar[str] = "asvspoof5"
    """The official score file format of results on this dataset (`classify.scorefiles`):
    ``asvspoof2019`` (``utt score`` lines) or ``asvspoof5`` (tab-separated, with header). Recorded
    in the store's attributes, so that evaluation writes it without knowing the dataset."""
    options: ClassVar[tuple[str, ...]] = ()
    """Extraction settings (`extract.run.ExtractConfig` fields) this dataset's :meth:`load` takes as
    keyword arguments, e.g. MLAAD's ``bonafide_root``."""
    official: ClassVar[bool] = False
    """An official ASVspoof corpus: results on it compare with the literature's (a sweep report's
    caveats say so, `classify.report`)."""

    @abstractmethod
    def load(self, root: Path, splits: Sequence[str] | None = None) -> DatasetTable:
        """Read the dataset at ``root``; ``splits=None`` means every split."""

    def select_splits(self, splits: Sequence[str] | None) -> tuple[str, ...]:
        """The requested splits in canonical order; raises :class:`DatasetError` on unknown ones."""
        if splits is None:
            return self.splits
        wanted = (splits,) if isinstance(splits, str) else tuple(splits)
        unknown = [s for s in wanted if s not in self.splits]
        if unknown:
            raise DatasetError(
                f"dataset {self.name!r} has no split(s) {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(self.splits)}"
            )
        return tuple(s for s in self.splits if s in wanted)


DATASETS: dict[str, Dataset] = {}
"""Every registered dataset, by name."""

_D = TypeVar("_D", bound=type[Dataset])


def register_dataset(cls: _D) -> _D:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    if cls.name in DATASETS:
        raise ValueError(f"dataset name {cls.name!r} is already registered")
    DATASETS[cls.name] = cls()
    return cls


def get_dataset(name: str) -> Dataset:
    """The dataset registered as ``name``; the :class:`DatasetError` lists the valid names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}"
        ) from None


def existing_root(root: Path | str) -> Path:
    """``root`` as an absolute path; raises :class:`DatasetError` when it does not exist."""
    path = Path(root).absolute()
    if not path.exists():
        raise DatasetError(f"dataset root not found: {path}")
    return path


class PathGuard:
    """Joins relative paths onto a root and refuses any result outside it, symlinks included.

    Results are fully resolved. Resolving every file of a million-file protocol with
    ``realpath`` (a system call per path component) would take minutes, so each directory is
    resolved and listed once: a file name that is not a symlink there resolves to the directory
    plus the name; symlinks, absolute paths and paths with ``..`` take the full ``realpath``.
    Paths are handled as strings (``pathlib`` costs several microseconds per operation).
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self._root = str(self.root)
        self._prefix = os.path.join(self._root, "")
        self._dirs: dict[str, tuple[str, frozenset[str]]] = {}

    def join(self, relative: Path | str) -> Path:
        """The resolved ``root / relative``; raises :class:`PathEscapeError` if outside root."""
        return Path(self.resolve(relative))

    def resolve(self, relative: Path | str) -> str:
        """:meth:`join` as a string."""
        rel = os.fspath(relative)
        head, _, name = rel.rpartition(os.sep)
        if name in ("", ".", "..") or os.path.isabs(rel) or ".." in rel.split(os.sep):
            resolved = os.path.realpath(os.path.join(self._root, rel))
        else:
            directory, links = self._directory(head)
            resolved = directory + name
            if name in links:
                resolved = os.path.realpath(resolved)
        if not resolved.startswith(self._prefix) and resolved != self._root:
            joined = os.path.join(self._root, rel)
            raise PathEscapeError(f"path {joined} resolves to {resolved}, outside {self._root}")
        return resolved

    def _directory(self, head: str) -> tuple[str, frozenset[str]]:
        """The resolved directory ``root/head`` (with a trailing separator), its symlinks' names."""
        if head not in self._dirs:
            resolved = os.path.realpath(os.path.join(self._root, head))
            try:
                with os.scandir(resolved) as entries:
                    links = frozenset(e.name for e in entries if e.is_symlink())
            except OSError:  # missing directory: its files are missing, the extractor says so
                links = frozenset()
            self._dirs[head] = (os.path.join(resolved, ""), links)
        return self._dirs[head]


def safe_join(root: Path | str, relative: Path | str) -> Path:
    """The resolved ``root / relative``; raises :class:`PathEscapeError` if it leaves ``root``."""
    return PathGuard(root).join(relative)


class TableBuilder:
    """Collects a reader's rows and problems, and builds the validated :class:`DatasetTable`.

    This is the one place that enforces the row rules shared by all readers: known label,
    unique utterance id without whitespace, and a system consistent with the label (a bona fide
    row's system is ``bonafide``; a spoof's is its attack id, or ``-`` when unknown).
    """

    def __init__(self, extra_columns: Sequence[str] = (), unlabelled: bool = False) -> None:
        self.columns: tuple[str, ...] = (*_TEXT_COLUMNS, *extra_columns)
        self.labels = (*LABELS, UNLABELLED) if unlabelled else LABELS
        self._data: dict[str, list[str]] = {c: [] for c in self.columns}
        self._seen: dict[str, str] = {}
        self.problems: list[Problem] = []

    def reject(self, where: str, reason: str, *, path: str, utt_id: str | None = None) -> None:
        """Record a :class:`Problem`; ``where`` (``FILE:LINE``) prefixes the reason."""
        self.problems.append(Problem(utt_id, path, STAGE, f"{where}: {reason}"))

    def guarded_path(
        self, guard: PathGuard, relative: Path | str, where: str, utt_id: str
    ) -> str | None:
        """``guard.resolve(relative)``, or ``None`` after recording the escape as a problem."""
        try:
            return guard.resolve(relative)
        except PathEscapeError as err:
            joined = os.path.join(guard.root, relative)
            self.reject(where, str(err), path=joined, utt_id=utt_id)
            return None

    def existing_file(self, guard: PathGuard, relative: Path | str, where: str, utt_id: str,
                      what: str = "audio file") -> str | None:
        """:meth:`guarded_path`, and the file must exist; ``None`` after recording the problem."""
        path = self.guarded_path(guard, relative, where, utt_id)
        if path is not None and not os.path.isfile(path):
            self.reject(where, f"{what} {path} not found", path=path, utt_id=utt_id)
            return None
        return path

    def add(self, where: str, **row: str | Path) -> None:
        """Add one row (every column but ``duration``), or record why it cannot be used."""
        utt_id, label = str(row["utt_id"]), str(row["label"])
        system = str(row["system"]) or UNKNOWN
        if label == BONAFIDE and system == UNKNOWN:
            system = BONAFIDE
        error = self._row_error(utt_id, label, system)
        if error:
            self.reject(where, error, path=str(row["path"]), utt_id=utt_id)
            return
        self._seen[utt_id] = where
        row["system"] = system
        for column, values in self._data.items():
            values.append(str(row[column]) or UNKNOWN)

    def _row_error(self, utt_id: str, label: str, system: str) -> str | None:
        if label not in self.labels:
            return f"unknown key {label!r} (expected bonafide or spoof)"
        if (label == BONAFIDE) != (system == BONAFIDE):
            return f"key {label!r} contradicts system {system!r}"
        if utt_id.split() != [utt_id]:
            return f"utterance id {utt_id!r} is empty or contains whitespace"
        if utt_id in self._seen:
            return f"duplicate utterance id {utt_id!r} (first at {self._seen[utt_id]})"
        return None

    def build(self, description: str, attrs: dict | None = None) -> DatasetTable:
        """The validated table of every accepted row, in the order added."""
        n_rows = len(self._data["utt_id"])
        table = pd.DataFrame(self._data, columns=list(self.columns), dtype=str)
        table.insert(len(COLUMNS) - 1, "duration", np.full(n_rows, np.nan))
        validate_table(table)
        return DatasetTable(table, self.problems, description, dict(attrs or {}))


def validate_table(table: pd.DataFrame) -> None:
    """Check the table contract; raises :class:`DatasetError` naming the first broken rule."""
    if tuple(table.columns[: len(COLUMNS)]) != COLUMNS:
        raise DatasetError(f"table columns {list(table.columns)} do not start with {list(COLUMNS)}")
    for column in _TEXT_COLUMNS:
        values = table[column]
        if values.empty:
            continue
        if not pd.api.types.is_string_dtype(values) or values.isna().any() or (values == "").any():
            raise DatasetError(f"column {column!r} must hold non-empty strings")
    if not pd.api.types.is_float_dtype(table["duration"]):
        raise DatasetError("column 'duration' must be float (NaN when unknown)")
    if not table["utt_id"].is_unique:
        raise DatasetError("utterance ids are not unique")
    if not table["label"].isin((*LABELS, UNLABELLED)).all():
        raise DatasetError(f"labels must be one of {LABELS} (or {UNLABELLED!r}: no key yet)")
    if not ((table["label"] == BONAFIDE) == (table["system"] == BONAFIDE)).all():
        raise DatasetError("system must be 'bonafide' exactly for bona fide rows")
    if not table["path"].map(os.path.isabs).all():
        raise DatasetError("paths must be absolute")


def iter_protocol(
    protocol: Path, builder: TableBuilder, line_format: str, hint: str = ""
) -> Iterator[tuple[str, list[str]]]:
    """Yield ``(FILE:LINE, fields)`` for each non-blank line of a whitespace-separated protocol
    whose columns are ``line_format`` (e.g. ``"SPEAKER UTT - SYSTEM KEY"``).

    Spaces and tabs both separate fields. Lines that are not UTF-8 or have another number of
    columns become problems in ``builder``. A missing protocol file raises :class:`DatasetError`
    naming it (``hint`` is appended).
    """
    n_fields = len(line_format.split())
    try:
        data = protocol.read_bytes()
    except OSError as err:
        suffix = f" ({hint})" if hint else ""
        if isinstance(err, FileNotFoundError):
            raise DatasetError(f"protocol file not found: {protocol}{suffix}") from None
        raise DatasetError(f"cannot read protocol file {protocol}: {err}{suffix}") from None
    for lineno, raw in enumerate(data.splitlines(), start=1):
        where = f"{protocol}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            builder.reject(where, "line is not valid UTF-8", path=str(protocol))
            continue
        fields = line.lstrip("\ufeff").split()
        if not fields:
            continue
        if len(fields) != n_fields:
            builder.reject(where, f"expected {n_fields} columns ({line_format}), found {len(fields)}", path=str(protocol))
            continue
        yield where, fields


class ProtocolDataset(Dataset):
    """A corpus laid out as one whitespace-separated protocol file per split (columns
    ``line_format``) naming audio files under the root: the ASVspoof releases. Subclasses say where
    a split's protocol and an utterance's audio are, and what a protocol line means (:meth:`row`);
    the reading (path guard, bad lines as problems, the table's rules) is this class's."""

    title: ClassVar[str]
    """The corpus's name in the table's description (``TITLE at ROOT``)."""
    line_format: ClassVar[str]
    extra_columns: ClassVar[tuple[str, ...]] = ()
    root_hint: ClassVar[str] = ""
    """Appended to the error for a missing protocol file: what ROOT must be."""

    def base(self, root: Path) -> Path:
        """The folder the protocols and audio folders are in (``root`` itself by default)."""
        return root

    @abstractmethod
    def protocol(self, base: Path, split: str) -> Path:
        """The protocol file of ``split``."""

    @abstractmethod
    def audio_path(self, root: Path, base: Path, split: str, utt_id: str) -> str:
        """The audio file of utterance ``utt_id`` of ``split``, relative to ``root``."""

    @abstractmethod
    def row(self, fields: list[str]) -> dict[str, str]:
        """A protocol line's columns -> utt_id, speaker, system, codec, label and the extra columns."""

    def load(self, root: Path, splits: Sequence[str] | None = None) -> DatasetTable:
        """Read the protocols of the selected splits under ``root``."""
        root = existing_root(root)
        base = self.base(root)
        guard = PathGuard(root)
        builder = TableBuilder(self.extra_columns)
        for split in self.select_splits(splits):
            for where, fields in iter_protocol(self.protocol(base, split), builder, self.line_format, self.root_hint):
                row = self.row(fields)
                path = builder.guarded_path(guard, self.audio_path(root, base, split, row["utt_id"]), where, row["utt_id"])
                if path is not None:
                    builder.add(where, **row, split=split, path=path)
        return builder.build(f"{self.title} at {root}")
