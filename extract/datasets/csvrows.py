"""CSV meta files with a header row (In-the-Wild's ``meta.csv``, MLAAD's pipe-separated ones), read
row by row with ``FILE:LINE`` for every problem."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from extract.datasets.base import DatasetError


def exact_header(columns: Sequence[str], delimiter: str) -> Callable[[list[str]], str | None]:
    """A header check: exactly ``columns``, in that order."""
    def check(names: list[str]) -> str | None:
        return None if tuple(names) == tuple(columns) else f"expected exactly {delimiter.join(columns)!r}"
    return check


def read_csv_rows(path: Path, delimiter: str, check: Callable[[list[str]], str | None]
                  ) -> Iterator[tuple[str, dict[str, str] | None]]:
    """Yield ``(FILE:LINE, {column: stripped value})`` for each non-blank row of a CSV whose first
    row is a header; a row with another number of cells yields ``(where, None)``. DatasetError (one
    line naming the file) when it cannot be read or ``check(header)`` returns a complaint."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err.strerror or err}") from None
    with handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            names = [n.strip() for n in next(reader)]
        except StopIteration:
            raise DatasetError(f"{path}: empty file, no header") from None
        except (csv.Error, UnicodeDecodeError) as err:
            raise DatasetError(f"{path}:1: unreadable header ({err})") from None
        complaint = check(names)
        if complaint:
            raise DatasetError(f"{path}:1: header {delimiter.join(names)!r}: {complaint}")
        try:
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                where = f"{path}:{reader.line_num}"
                yield where, dict(zip(names, (c.strip() for c in row), strict=True)) if len(row) == len(names) else None
        except (csv.Error, UnicodeDecodeError) as err:
            raise DatasetError(f"{path}:{reader.line_num}: unreadable ({err})") from None
