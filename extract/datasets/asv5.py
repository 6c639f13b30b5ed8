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

from pathlib import Path

from extract.datasets.base import ProtocolDataset, register_dataset

PROTOCOL_FILES: dict[str, str] = {
    "train": "ASVspoof5.train.tsv",
    "dev": "ASVspoof5.dev.track_1.tsv",
    "eval": "ASVspoof5.eval.track_1.tsv",
}
AUDIO_DIRS: dict[str, str] = {"train": "flac_T", "dev": "flac_D", "eval": "flac_E_eval"}
FORMAT = "SPEAKER FLAC GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP"
EXTRA_COLUMNS: tuple[str, ...] = ("gender", "codec_q", "attack_tag")


@register_dataset
class ASVspoof5(ProtocolDataset):
    """ASVspoof 5 track 1 (countermeasure) protocols."""

    name = "asv5"
    title = "ASVspoof 5 (track 1)"
    splits = ("train", "dev", "eval")
    line_format = FORMAT
    extra_columns = EXTRA_COLUMNS
    root_hint = "ROOT must be the folder that holds the .tsv protocols and the flac_* folders"
    official = True

    def protocol(self, base: Path, split: str) -> Path:
        return base / PROTOCOL_FILES[split]

    def audio_path(self, root: Path, base: Path, split: str, utt_id: str) -> str:
        return f"{AUDIO_DIRS[split]}/{utt_id}.flac"

    def row(self, fields: list[str]) -> dict[str, str]:
        speaker, utt_id, gender, codec, codec_q, _, attack_tag, system, key, _ = fields
        return dict(utt_id=utt_id, speaker=speaker, system=system, codec=codec, label=key, gender=gender,
                    codec_q=codec_q, attack_tag=attack_tag)
