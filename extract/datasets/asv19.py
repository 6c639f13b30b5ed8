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
from collections.abc import Sequence
from pathlib import Path

from extract.datasets.base import (
    UNKNOWN,
    Dataset,
    DatasetTable,
    PathGuard,
    TableBuilder,
    existing_root,
    iter_protocol,
    register_dataset,
)

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
class ASVspoof2019LA(Dataset):
    """ASVspoof 2019 logical access (LA), countermeasure protocols."""

    name = "asv19"
    splits = ("train", "dev", "eval")
    official = True
    score_format = "asvspoof2019"

    def load(self, root: Path, splits: Sequence[str] | None = None) -> DatasetTable:
        """Read the CM protocols of the selected splits under ``root``."""
        root = existing_root(root)
        la = la_folder(root)
        guard = PathGuard(root)
        builder = TableBuilder()
        hint = "ROOT must be the folder that contains LA/, or LA/ itself"
        for split in self.select_splits(splits):
            protocol = la / PROTOCOL_DIR / PROTOCOL_FILES[split]
            audio = os.path.join(la.relative_to(root), audio_dir(split), "")
            for where, fields in iter_protocol(protocol, builder, FORMAT, hint):
                speaker, utt_id, _, system, key = fields
                path = builder.guarded_path(guard, f"{audio}{utt_id}.flac", where, utt_id)
                if path is not None:
                    builder.add(
                        where,
                        utt_id=utt_id,
                        speaker=speaker,
                        system=system,
                        codec=UNKNOWN,
                        label=key,
                        split=split,
                        path=path,
                    )
        return builder.build(f"ASVspoof 2019 LA at {root}")
