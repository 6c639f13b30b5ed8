"""ASVspoof 2019 LA (``asv19``), in the layout of the official release.

::

    ROOT/LA/ASVspoof2019_LA_{train,dev,eval}/flac/UTT.flac
    ROOT/LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt

``ROOT`` may be the folder that contains ``LA/`` or ``LA/`` itself. Protocol lines are
``SPEAKER UTT - SYSTEM KEY``; SYSTEM is the attack id (``A01`` ... ``A19``) or ``-`` for bona fide,
which becomes system ``bonafide``. There is no codec condition: codec is ``-``.
"""

from __future__ import annotations

import os
from pathlib import Path

from extract.datasets.base import UNKNOWN, ProtocolDataset, register_dataset

PROTOCOL_DIR = "ASVspoof2019_LA_cm_protocols"
PROTOCOL_FILES: dict[str, str] = {
    "train": "ASVspoof2019.LA.cm.train.trn.txt",
    "dev": "ASVspoof2019.LA.cm.dev.trl.txt",
    "eval": "ASVspoof2019.LA.cm.eval.trl.txt",
}
FORMAT = "SPEAKER UTT - SYSTEM KEY"


def audio_dir(split: str) -> str:
    """The audio folder of ``split``, relative to the ``LA`` folder."""
    return f"ASVspoof2019_LA_{split}/flac"


def la_folder(root: Path) -> Path:
    """The ``LA`` folder: ``root/LA`` when it exists, else ``root`` itself."""
    return root / "LA" if (root / "LA").is_dir() else root


@register_dataset
class ASVspoof2019LA(ProtocolDataset):
    """ASVspoof 2019 logical access (LA), countermeasure protocols."""

    name = "asv19"
    title = "ASVspoof 2019 LA"
    splits = ("train", "dev", "eval")
    official = True
    score_format = "asvspoof2019"
    line_format = FORMAT
    root_hint = "ROOT must be the folder that contains LA/, or LA/ itself"

    def base(self, root: Path) -> Path:
        return la_folder(root)

    def protocol(self, base: Path, split: str) -> Path:
        return base / PROTOCOL_DIR / PROTOCOL_FILES[split]

    def audio_path(self, root: Path, base: Path, split: str, utt_id: str) -> str:
        return os.path.join(base.relative_to(root), audio_dir(split), f"{utt_id}.flac")

    def row(self, fields: list[str]) -> dict[str, str]:
        speaker, utt_id, _, system, key = fields
        return dict(utt_id=utt_id, speaker=speaker, system=system, codec=UNKNOWN, label=key)
