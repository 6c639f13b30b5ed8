"""ASVspoof 5, track 1 (``asv5``), in the layout of the official release.

::

    ROOT/flac_T/T_nnnnnnnnnn.flac        ROOT/ASVspoof5.train.tsv
    ROOT/flac_D/D_nnnnnnnnnn.flac        ROOT/ASVspoof5.dev.track_1.tsv
    ROOT/flac_E_eval/E_nnnnnnnnnn.flac   ROOT/ASVspoof5.eval.track_1.tsv

Protocol lines have 10 columns, separated by spaces (tabs are tolerated), no header::

    SPEAKER FLAC GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP

system is ATTACK_LABEL (``bonafide`` for bona fide), codec is CODEC (``-`` or ``C01`` ...).
GENDER, CODEC_Q and ATTACK_TAG follow the standard columns as extra columns ``gender``,
``codec_q`` and ``attack_tag``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from extract.datasets.base import (
    Dataset,
    DatasetTable,
    PathGuard,
    TableBuilder,
    existing_root,
    iter_protocol,
    register_dataset,
)

PROTOCOL_FILES: dict[str, str] = {
    "train": "ASVspoof5.train.tsv",
    "dev": "ASVspoof5.dev.track_1.tsv",
    "eval": "ASVspoof5.eval.track_1.tsv",
}
AUDIO_DIRS: dict[str, str] = {"train": "flac_T", "dev": "flac_D", "eval": "flac_E_eval"}
FORMAT = "SPEAKER FLAC GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP"
EXTRA_COLUMNS: tuple[str, ...] = ("gender", "codec_q", "attack_tag")


@register_dataset
class ASVspoof5(Dataset):
    """ASVspoof 5 track 1 (countermeasure) protocols."""

    name = "asv5"
    splits = ("train", "dev", "eval")
    official = True

    def load(self, root: Path, splits: Sequence[str] | None = None) -> DatasetTable:
        """Read the track 1 protocols of the selected splits under ``root``."""
        root = existing_root(root)
        guard = PathGuard(root)
        builder = TableBuilder(EXTRA_COLUMNS)
        hint = "ROOT must be the folder that holds the .tsv protocols and the flac_* folders"
        for split in self.select_splits(splits):
            protocol = root / PROTOCOL_FILES[split]
            for where, fields in iter_protocol(protocol, builder, FORMAT, hint):
                speaker, utt_id, gender, codec, codec_q, _, attack_tag, system, key, _ = fields
                relative = f"{AUDIO_DIRS[split]}/{utt_id}.flac"
                path = builder.guarded_path(guard, relative, where, utt_id)
                if path is not None:
                    builder.add(
                        where,
                        utt_id=utt_id,
                        speaker=speaker,
                        system=system,
                        codec=codec,
                        label=key,
                        split=split,
                        path=path,
                        gender=gender,
                        codec_q=codec_q,
                        attack_tag=attack_tag,
                    )
        return builder.build(f"ASVspoof 5 (track 1) at {root}")
