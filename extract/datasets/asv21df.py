"""ASVspoof 2021 speech deepfake (``asv21df``), in the layout of the official release and keys.

::

    ROOT/ASVspoof2021_DF_eval/flac/DF_E_nnnnnnn.flac            (the four released parts unpack here)
    ROOT/ASVspoof2021_DF_eval/ASVspoof2021.DF.cm.eval.trl.txt   one trial id a line
    ROOT/keys/DF/CM/trial_metadata.txt                          optional (the keys package)

Keys lines have 13 space-separated columns ``SPEAKER TRIAL COMPRESSION SOURCE ATTACK KEY TRIM PHASE
VOCODER TASK TEAM GENDER_PAIR LANGUAGE``; ``-`` where empty. system is ATTACK (``bonafide`` on bona
fide lines), codec is COMPRESSION (nocodec, low_mp3, high_mp3, low_m4a, high_m4a, low_ogg, high_ogg,
mp3m4a, oggm4a), and the extra columns are ``condition`` (C1..C9), ``source`` (asvspoof, vcc2018,
vcc2020), ``trim``, ``phase``, ``vocoder`` (bonafide, traditional_vocoder, waveform_concatenation,
neural_vocoder_autoregressive, neural_vocoder_nonautoregressive, unknown), ``task``, ``team``,
``gender_pair`` and ``language``. Shared logic: `extract.datasets.asv21`. DF has no ASV scores: EER only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from extract.datasets.asv21 import PHASES, Layout, check_value, load_2021, spoof_system
from extract.datasets.base import LABELS, Dataset, DatasetTable, register_dataset

CONDITIONS: dict[str, str] = {"nocodec": "C1", "low_mp3": "C2", "high_mp3": "C3", "low_m4a": "C4", "high_m4a": "C5",
                              "low_ogg": "C6", "high_ogg": "C7", "mp3m4a": "C8", "oggm4a": "C9"}
SOURCES: tuple[str, ...] = ("asvspoof", "vcc2018", "vcc2020")
VOCODERS: tuple[str, ...] = ("bonafide", "traditional_vocoder", "waveform_concatenation",
                             "neural_vocoder_autoregressive", "neural_vocoder_nonautoregressive", "unknown")


def parse(fields: list[str]) -> tuple[dict, str | None]:
    speaker, _, compression, source, attack, key, trim, phase, vocoder, task, team, gender_pair, language = fields
    error = (check_value("compression", compression, tuple(CONDITIONS)) or check_value("key", key, LABELS)
             or check_value("phase", phase, PHASES) or check_value("source", source, SOURCES)
             or check_value("vocoder", vocoder, VOCODERS))
    if not error and (key == "bonafide") != (vocoder == "bonafide"):
        error = f"vocoder {vocoder!r} contradicts key {key!r}"
    extra = {"condition": CONDITIONS.get(compression, compression), "source": source, "trim": trim, "phase": phase,
             "vocoder": vocoder, "task": task, "team": team, "gender_pair": gender_pair, "language": language}
    return {"speaker": speaker, "system": spoof_system(attack, key), "codec": compression, "label": key,
            "extra": extra}, error


LAYOUT = Layout("DF", "SPEAKER TRIAL COMPRESSION SOURCE ATTACK KEY TRIM PHASE VOCODER TASK TEAM GENDER_PAIR LANGUAGE",
                ("condition", "source", "trim", "phase", "vocoder", "task", "team", "gender_pair", "language"), parse)


@register_dataset
class ASVspoof2021DF(Dataset):
    """ASVspoof 2021 DF evaluation data (progress, eval and hidden phases in one split ``eval``)."""

    name = "asv21df"
    splits = ("eval",)
    score_format = "asvspoof2021"
    official = True

    def load(self, root: Path, splits: Sequence[str] | None = None) -> DatasetTable:
        self.select_splits(splits)
        loaded = load_2021(LAYOUT, root, "ASVspoof 2021 DF")
        loaded.attrs.update({"track": "DF", "conditions": CONDITIONS})
        return loaded
