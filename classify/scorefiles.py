"""Score and key files in the official ASVspoof formats.

Score files (higher score = more bona fide), one registry (:data:`SCORE_FORMAT_REGISTRY`) that
`pipeline evaluate`, `pipeline score` and the sweeps write through, keyed by dataset
(:data:`DATASET_SCORE_FORMATS`):

* ``asvspoof2019``: one ``UTT_ID SCORE`` per line, space separated, no header.
* ``asvspoof2021``: the same lines (``TRIAL SCORE``), as the ASVspoof 2021 evaluation package reads
  them; also the score file of In-the-Wild, MLAAD and Codecfake.
* ``asvspoof5``: tab-separated with a header; the columns ``filename`` (or ``trial_anon``) and
  ``cm-score`` are used, others (e.g. ``spk``, ``asv-score`` of SASV files) are ignored.

Key files, detected from their content:

* ``asvspoof2019-la``: the LA CM protocol, 5 space-separated columns
  ``SPEAKER UTT - SYSTEM KEY`` (SYSTEM A01..A19 or '-', KEY bonafide/spoof).
* ``asvspoof5-protocol``: 10 space-separated columns
  ``SPEAKER FLAC GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP``.
* ``asvspoof5-key``: a table with a header row (tab, comma or space separated) holding
  ``filename`` (or ``trial_anon``) and ``cm-label`` (or ``cm_label``), optionally an attack
  column (``attack``, ``attack_label`` or ``attack_anon``) and a ``codec`` column.

ASV score files of ASVspoof 2019 (for the t-DCF): ``SOURCE KEY SCORE`` per line, KEY one of
target / nontarget / spoof.

Every problem raises :class:`ScoreFileError` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ScoreFormat:
    """One official score file format: file suffix, field separator, header line (None: none)."""

    name: str
    suffix: str
    separator: str
    header: str | None
    description: str

    def lines(self, utt_ids: Sequence[str], values: Sequence[float]) -> list[str]:
        """The file's lines (header first), scores written with ``repr`` (read back bit-exact)."""
        head = [f"{self.header}\n"] if self.header else []
        return head + [f"{utt}{self.separator}{value!r}\n" for utt, value in zip(utt_ids, values, strict=True)]


SCORE_FORMAT_REGISTRY: dict[str, ScoreFormat] = {f.name: f for f in (
    ScoreFormat("asvspoof2019", ".txt", " ", None, "ASVspoof 2019: UTT_ID SCORE"),
    ScoreFormat("asvspoof2021", ".txt", " ", None, "ASVspoof 2021 evaluation package: TRIAL SCORE, every trial, "
                "all phases"),
    ScoreFormat("asvspoof5", ".tsv", "\t", "filename\tcm-score", "ASVspoof 5: filename<TAB>cm-score, with header"),
)}
SCORE_FORMATS = tuple(SCORE_FORMAT_REGISTRY)
DATASET_SCORE_FORMATS: dict[str, str] = {
    "asv19": "asvspoof2019", "demo": "asvspoof2019", "asv5": "asvspoof5", "manifest": "asvspoof5",
    "asv21la": "asvspoof2021", "asv21df": "asvspoof2021", "itw": "asvspoof2021", "mlaad": "asvspoof2021",
    "codecfake": "asvspoof2021",
}
"""The official score format of each dataset's results (a store records its own at extraction; this
serves stores that did not, and datasets registered without one get ASVspoof 5's)."""
DEFAULT_SCORE_FORMAT = "asvspoof5"


def score_format_of(dataset: str | None, recorded: str | None = None) -> ScoreFormat:
    """The score format of results on ``dataset``: the one the store ``recorded``, else the
    dataset's entry in :data:`DATASET_SCORE_FORMATS`, else ASVspoof 5's."""
    name = recorded or DATASET_SCORE_FORMATS.get(dataset or "", DEFAULT_SCORE_FORMAT)
    if name not in SCORE_FORMAT_REGISTRY:
        raise ValueError(f"unknown score format {name!r}; known: {', '.join(SCORE_FORMAT_REGISTRY)}")
    return SCORE_FORMAT_REGISTRY[name]

_ID_COLUMNS = ("filename", "trial_anon")
_SCORE_COLUMN = "cm-score"
_LABEL_COLUMNS = ("cm-label", "cm_label")
_ATTACK_COLUMNS = ("attack", "attack_label", "attack_anon")
_CODEC_COLUMN = "codec"
_CM_KEYS = {"bonafide": True, "spoof": False}
_ASV_KEYS = ("target", "nontarget", "spoof")
_N_EXAMPLES = 5


@dataclass(frozen=True)
class ProtocolKeys:
    """Where a protocol file without header keeps, per line, the utterance id, the attack (system),
    the codec condition (None: none) and the bona fide / spoof key; 0-based columns."""

    fields: int
    utt: int
    attack: int
    codec: int | None
    key: int


PROTOCOL_KEYS = {
    "asvspoof2019-la": ProtocolKeys(fields=5, utt=1, attack=3, codec=None, key=4),  # SPEAKER UTT - SYSTEM KEY
    # SPEAKER FLAC GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP
    "asvspoof5-protocol": ProtocolKeys(fields=10, utt=1, attack=7, codec=3, key=8),
}
"""Key file formats without header, told apart by their number of fields."""


class ScoreFileError(ValueError):
    """A score or key file is unreadable, malformed, or does not match its partner file."""


@dataclass(frozen=True)
class ScoreFile:
    """CM scores read from one file: ``scores[i]`` belongs to ``utt_ids[i]`` ([N] float64)."""

    path: Path
    format: str
    utt_ids: list[str]
    scores: np.ndarray


@dataclass(frozen=True)
class KeyFile:
    """Ground truth read from one protocol or key file, one entry per trial.

    ``is_bonafide`` is [N] bool. ``attacks`` holds the attack label of each trial ('-' or
    'bonafide' on bona fide trials, as the file writes it) and ``codecs`` the codec condition;
    either is None when the format has no such column.
    """

    path: Path
    format: str
    utt_ids: list[str]
    is_bonafide: np.ndarray
    attacks: list[str] | None
    codecs: list[str] | None


@dataclass(frozen=True)
class Trials:
    """Scores joined to keys, in key-file order; arrays are [N]."""

    utt_ids: list[str]
    scores: np.ndarray
    is_bonafide: np.ndarray
    attacks: list[str] | None
    codecs: list[str] | None


@dataclass(frozen=True)
class AsvScores:
    """ASV scores of an ASVspoof 2019 ASV score file, split by trial type ([N_type] float64)."""

    target: np.ndarray
    nontarget: np.ndarray
    spoof: np.ndarray


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its end-of-line) for every non-blank line."""
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for lineno, line in enumerate(handle, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield lineno, line
    except OSError as err:
        raise ScoreFileError(f"{path}: cannot read: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ScoreFileError(f"{path}: not a UTF-8 text file") from err


def _first_line(path: Path) -> tuple[int, str]:
    """The first non-blank line; ScoreFileError if the file has none."""
    for lineno, line in _lines(path):
        return lineno, line
    raise ScoreFileError(f"{path}: file is empty")


def _delimiter(header: str) -> str | None:
    """Field separator of a header row: tab, comma, or None for runs of whitespace."""
    if "\t" in header:
        return "\t"
    if "," in header:
        return ","
    return None


def _split(line: str, delimiter: str | None) -> list[str]:
    """Fields of one line, stripped of surrounding spaces."""
    if delimiter is None:
        return line.split()
    return [field.strip() for field in line.split(delimiter)]


def _parse_score(text: str, path: Path, lineno: int) -> float:
    """A finite float, or ScoreFileError naming the file and line."""
    try:
        value = float(text)
    except ValueError:
        raise ScoreFileError(f"{path}:{lineno}: score {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ScoreFileError(f"{path}:{lineno}: score {text!r} is not finite")
    return value


def _check_new_id(utt: str, seen: dict[str, int], path: Path, lineno: int) -> None:
    """Record ``utt`` as seen on ``lineno``; ScoreFileError if it was seen before."""
    first = seen.setdefault(utt, lineno)
    if first != lineno:
        raise ScoreFileError(f"{path}:{lineno}: duplicate utterance id {utt!r} (first on line {first})")


def _column(names: list[str], choices: Sequence[str]) -> int | None:
    """Index of the first of ``choices`` present in the lower-cased header ``names``."""
    for choice in choices:
        if choice in names:
            return names.index(choice)
    return None


def _examples(ids: Sequence[str]) -> str:
    """A few ids for an error message."""
    shown = ", ".join(ids[:_N_EXAMPLES])
    return shown + (", ..." if len(ids) > _N_EXAMPLES else "")


def read_scores(path: str | Path) -> ScoreFile:
    """Read a CM score file, ASVspoof 2019 or ASVspoof5 format (detected from its first line).

    A first line holding a ``cm-score`` column name marks the ASVspoof5 format; otherwise every
    line must be ``UTT_ID SCORE``. Scores must be finite numbers and ids unique.
    """
    path = Path(path)
    header_no, header = _first_line(path)
    delimiter = _delimiter(header)
    names = [name.lower() for name in _split(header, delimiter)]
    utt_ids: list[str] = []
    scores: list[float] = []
    seen: dict[str, int] = {}
    if _SCORE_COLUMN in names:
        fmt = "asvspoof5"
        id_col = _column(names, _ID_COLUMNS)
        if id_col is None:
            raise ScoreFileError(
                f"{path}:{header_no}: header has {_SCORE_COLUMN!r} but no 'filename' column"
            )
        score_col = names.index(_SCORE_COLUMN)
        for lineno, line in _lines(path):
            if lineno == header_no:
                continue
            fields = _split(line, delimiter)
            if len(fields) != len(names):
                raise ScoreFileError(
                    f"{path}:{lineno}: expected {len(names)} fields like the header, got {len(fields)}"
                )
            _check_new_id(fields[id_col], seen, path, lineno)
            utt_ids.append(fields[id_col])
            scores.append(_parse_score(fields[score_col], path, lineno))
    else:
        fmt = "asvspoof2019"
        for lineno, line in _lines(path):
            fields = line.split()
            if len(fields) != 2:
                raise ScoreFileError(
                    f"{path}:{lineno}: expected 'UTT_ID SCORE' (2 fields) or an ASVspoof5 header "
                    f"with 'filename' and 'cm-score', got {len(fields)} field(s)"
                )
            _check_new_id(fields[0], seen, path, lineno)
            utt_ids.append(fields[0])
            scores.append(_parse_score(fields[1], path, lineno))
    if not utt_ids:
        raise ScoreFileError(f"{path}: no scores after the header")
    return ScoreFile(path, fmt, utt_ids, np.asarray(scores, dtype=np.float64))


def write_scores(
    path: str | Path, utt_ids: Sequence[str], scores: Sequence[float] | np.ndarray, fmt: str = "asvspoof5"
) -> Path:
    """Write a CM score file in an official format (``asvspoof5`` or ``asvspoof2019``).

    Scores are written with ``repr`` so that reading them back gives the same floats.
    Raises ValueError for unequal lengths, duplicate or whitespace-containing ids, or
    non-finite scores.
    """
    if fmt not in SCORE_FORMAT_REGISTRY:
        raise ValueError(f"unknown score format {fmt!r}; choose one of {', '.join(SCORE_FORMATS)}")
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(utt_ids) != values.size:
        raise ValueError(f"{len(utt_ids)} utterance ids but {values.size} scores")
    if not np.isfinite(values).all():
        raise ValueError("scores contain NaN or infinite values")
    if len(set(utt_ids)) != len(utt_ids):
        raise ValueError("utterance ids are not unique")
    bad = [utt for utt in utt_ids if not utt or utt != "".join(utt.split())]
    if bad:
        raise ValueError(f"utterance ids must be non-empty without whitespace: {_examples(bad)}")
    path = Path(path)
    with path.open("w", encoding="utf-8") as handle:
        handle.writelines(SCORE_FORMAT_REGISTRY[fmt].lines(list(utt_ids), values.tolist()))
    return path


def _parse_label(text: str, path: Path, lineno: int) -> bool:
    """True for bona fide, False for spoof; ScoreFileError otherwise."""
    try:
        return _CM_KEYS[text.lower()]
    except KeyError:
        raise ScoreFileError(f"{path}:{lineno}: key {text!r} is neither 'bonafide' nor 'spoof'") from None


def read_keys(path: str | Path) -> KeyFile:
    """Read CM ground truth from an ASVspoof 2019 LA protocol, an ASVspoof5 protocol, or an
    ASVspoof5-style key table with header; the format is detected from the first line."""
    path = Path(path)
    header_no, header = _first_line(path)
    delimiter = _delimiter(header)
    names = [name.lower() for name in _split(header, delimiter)]
    label_col = _column(names, _LABEL_COLUMNS)
    if label_col is not None:
        id_col = _column(names, _ID_COLUMNS)
        if id_col is None:
            raise ScoreFileError(f"{path}:{header_no}: key header has a label column but no 'filename' column")
        attack_col = _column(names, _ATTACK_COLUMNS)
        codec_col = _column(names, (_CODEC_COLUMN,))
        fmt, n_fields, skip = "asvspoof5-key", len(names), header_no
    else:
        n_fields = len(header.split())
        fmt = next((name for name, layout in PROTOCOL_KEYS.items() if layout.fields == n_fields), None)
        if fmt is None:
            raise ScoreFileError(
                f"{path}:{header_no}: not a known key format: {n_fields} field(s); expected an "
                "ASVspoof 2019 LA protocol (5), an ASVspoof5 protocol (10), or a header with "
                "'filename' and 'cm-label'"
            )
        layout = PROTOCOL_KEYS[fmt]
        id_col, attack_col, codec_col, label_col = layout.utt, layout.attack, layout.codec, layout.key
        delimiter, skip = None, None
    utt_ids: list[str] = []
    labels: list[bool] = []
    attacks: list[str] = []
    codecs: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in _lines(path):
        if lineno == skip:
            continue
        fields = _split(line, delimiter)
        if len(fields) != n_fields:
            raise ScoreFileError(f"{path}:{lineno}: expected {n_fields} fields ({fmt}), got {len(fields)}")
        _check_new_id(fields[id_col], seen, path, lineno)
        utt_ids.append(fields[id_col])
        labels.append(_parse_label(fields[label_col], path, lineno))
        if attack_col is not None:
            attacks.append(fields[attack_col])
        if codec_col is not None:
            codecs.append(fields[codec_col])
    if not utt_ids:
        raise ScoreFileError(f"{path}: no trials after the header")
    return KeyFile(
        path=path,
        format=fmt,
        utt_ids=utt_ids,
        is_bonafide=np.asarray(labels, dtype=bool),
        attacks=attacks if attack_col is not None else None,
        codecs=codecs if codec_col is not None else None,
    )


def join_scores_keys(scores: ScoreFile, keys: KeyFile) -> Trials:
    """Match scores to keys by utterance id (key-file order).

    As the official ASVspoof5 loader, the two id sets must be equal: ScoreFileError reports how
    many keyed utterances have no score (and how many scores have no key), with a few ids.
    """
    score_of = dict(zip(scores.utt_ids, scores.scores.tolist()))
    missing = [utt for utt in keys.utt_ids if utt not in score_of]
    if missing:
        raise ScoreFileError(
            f"{scores.path}: no score for {len(missing)} of {len(keys.utt_ids)} utterances keyed in "
            f"{keys.path} (e.g. {_examples(missing)})"
        )
    keyed = set(keys.utt_ids)
    extra = [utt for utt in scores.utt_ids if utt not in keyed]
    if extra:
        raise ScoreFileError(
            f"{scores.path}: {len(extra)} scored utterances are not in {keys.path} "
            f"(e.g. {_examples(extra)})"
        )
    return Trials(
        utt_ids=list(keys.utt_ids),
        scores=np.asarray([score_of[utt] for utt in keys.utt_ids], dtype=np.float64),
        is_bonafide=keys.is_bonafide.copy(),
        attacks=keys.attacks,
        codecs=keys.codecs,
    )


def load_trials(scores_path: str | Path, keys_path: str | Path) -> Trials:
    """:func:`read_scores` + :func:`read_keys` + :func:`join_scores_keys`."""
    return join_scores_keys(read_scores(scores_path), read_keys(keys_path))


def read_asv_scores(path: str | Path) -> AsvScores:
    """Read an ASVspoof 2019 ASV score file: ``SOURCE KEY SCORE`` per line, KEY in
    target / nontarget / spoof. Each type must occur at least once."""
    path = Path(path)
    by_key: dict[str, list[float]] = {key: [] for key in _ASV_KEYS}
    for lineno, line in _lines(path):
        fields = line.split()
        if len(fields) != 3:
            raise ScoreFileError(f"{path}:{lineno}: expected 'SOURCE KEY SCORE' (3 fields), got {len(fields)}")
        key = fields[1].lower()
        if key not in by_key:
            raise ScoreFileError(
                f"{path}:{lineno}: ASV key {fields[1]!r} is not one of {', '.join(_ASV_KEYS)}"
            )
        by_key[key].append(_parse_score(fields[2], path, lineno))
    absent = [key for key, values in by_key.items() if not values]
    if absent:
        raise ScoreFileError(f"{path}: no ASV trials of type {', '.join(absent)}")
    return AsvScores(**{key: np.asarray(values, dtype=np.float64) for key, values in by_key.items()})
