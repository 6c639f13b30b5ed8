"""Where a frozen model's weights come from: one reading of ``pretrained`` | ``untrained`` | FILE,
shared by the codec (`extract.codec`, ``--weights``), the SSL model (`extract.ssl`, ``--ssl-weights``)
and what reads their records later (`classify.bundle`: where a model's codec weights may be found).

A back-end parses the setting once (:meth:`WeightSource.parse`) and asks the source what to do:
build seeded random weights (:attr:`WeightSource.untrained`), or read a file (:meth:`WeightSource.locate`:
the back-end's published checkpoint, found or downloaded by the back-end's own function, or the
user's file, which must exist). What the weights then are (trained or not, published or not) is the
back-end's provenance record (`extract.codec.WeightsInfo`, `extract.ssl.SSLWeights`), which names
the source in every output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PRETRAINED = "pretrained"
UNTRAINED = "untrained"
FILE = "file"


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class WeightSource:
    """A weights setting: ``kind`` pretrained | untrained | file, and the file's ``path`` (file only)."""

    kind: str
    path: Path | None = None

    @classmethod
    def parse(cls, text: str | Path) -> WeightSource:
        """``"pretrained"``, ``"untrained"`` or the path of a file (not checked here: see :meth:`locate`)."""
        value = str(text)
        if value in (PRETRAINED, UNTRAINED):
            return cls(value)
        return cls(FILE, Path(value))

    @property
    def untrained(self) -> bool:
        return self.kind == UNTRAINED

    @property
    def pretrained(self) -> bool:
        return self.kind == PRETRAINED

    @property
    def file(self) -> bool:
        return self.kind == FILE

    def __str__(self) -> str:
        return str(self.path) if self.file else self.kind

    def locate(self, pretrained: Callable[[bool], Path], download: bool, error: type[Exception],
               what: str) -> tuple[Path, str]:
        """(the weights file, the ``source`` to record: pretrained | file) of a source that is not
        untrained. ``pretrained(download)``: the back-end's published checkpoint (it raises when it
        cannot find or fetch it); ``error`` (naming ``what``, e.g. "codec weights") when a file
        named by the user is missing."""
        if self.untrained:
            raise ValueError("untrained weights are built, not located")
        if self.pretrained:
            return Path(pretrained(download)), PRETRAINED
        if not self.path.is_file():
            raise error(f"{self.path}: {what} file not found")
        return self.path, FILE
