"""ASVspoof 2021 logical access (``asv21la``), in the layout of the official release and keys.

::

    ROOT/ASVspoof2021_LA_eval/flac/LA_E_nnnnnnn.flac
    ROOT/ASVspoof2021_LA_eval/ASVspoof2021.LA.cm.eval.trl.txt       one trial id a line
    ROOT/keys/LA/CM/trial_metadata.txt                              optional (the keys package)
    ROOT/keys/LA/ASV/trial_metadata.txt, keys/LA/ASV/ASVTorch_Kaldi/score.txt   optional: the t-DCF

Keys lines have 8 space-separated columns ``SPEAKER TRIAL CODEC TRANSMISSION ATTACK KEY TRIM
PHASE`` (``LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval``). system is ATTACK
(``bonafide`` on bona fide lines), codec is CODEC (none, alaw, pstn, g722, ulaw, gsm, opus), and the
extra columns are ``condition`` (C1..C7, the official names of the CODEC values), ``transmission``,
``trim`` (kept as given) and ``phase`` (progress, eval, hidden). Shared logic: `extract.datasets.asv21`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from extract.datasets.asv21 import PHASES, Layout, check_value, load_2021, spoof_system
from extract.datasets.base import LABELS, Dataset, DatasetTable, register_dataset

CONDITIONS: dict[str, str] = {"none": "C1", "alaw": "C2", "pstn": "C3", "g722": "C4", "ulaw": "C5", "gsm": "C6",
                              "opus": "C7"}
"""CODEC value -> the official condition name."""
ATTACKS: tuple[str, ...] = tuple(f"A{n:02d}" for n in range(7, 20))
ASV_KEYS = "keys/LA/ASV/trial_metadata.txt"
ASV_SCORES = "keys/LA/ASV/ASVTorch_Kaldi/score.txt"


def parse(fields: list[str]) -> tuple[dict, str | None]:
    speaker, _, codec, transmission, attack, key, trim, phase = fields
    error = (check_value("codec", codec, tuple(CONDITIONS)) or check_value("key", key, LABELS)
             or check_value("phase", phase, PHASES)
             or check_value("attack", attack, ("bonafide", "-") if key == "bonafide" else ATTACKS))
    extra = {"condition": CONDITIONS.get(codec, codec), "transmission": transmission, "trim": trim, "phase": phase}
    return {"speaker": speaker, "system": spoof_system(attack, key), "codec": codec, "label": key,
            "extra": extra}, error


LAYOUT = Layout("LA", "SPEAKER TRIAL CODEC TRANSMISSION ATTACK KEY TRIM PHASE",
                ("condition", "transmission", "trim", "phase"), parse)


@register_dataset
class ASVspoof2021LA(Dataset):
    """ASVspoof 2021 LA evaluation data (progress, eval and hidden phases in one split ``eval``)."""

    name = "asv21la"
    splits = ("eval",)
    score_format = "asvspoof2021"
    official = True

    def load(self, root: Path, splits: Sequence[str] | None = None) -> DatasetTable:
        self.select_splits(splits)
        loaded = load_2021(LAYOUT, root, "ASVspoof 2021 LA")
        asv = {"asv_keys": str(Path(root).absolute() / ASV_KEYS), "asv_scores": str(Path(root).absolute() / ASV_SCORES)}
        loaded.attrs.update({"track": "LA", "conditions": CONDITIONS, **asv})
        return loaded
