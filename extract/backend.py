"""Stream back-ends: what the extraction driver (`extract.driver`) asks of each kind of stream.

A back-end is a small frozen dataclass, registered by its ``kind`` (:func:`register_backend`), that
says three things and nothing else:

* **what it writes**: its per-frame arrays (:meth:`StreamBackend.frame_arrays`, each a stream of the
  store whose part arrays bear its name), its per-utterance arrays (:attr:`StreamBackend.utterance_arrays`:
  one int64 value per ok utterance, gathered into a table ``GROUP/NAME`` [n_utts] with -1 where an
  utterance has none, e.g. the SSL stream's ``starts``), the stream spec of a stream it adds to a
  finished store (:meth:`StreamBackend.new_spec`: frame rate, dtype, frame shape, source), and where
  it writes (``group``: "" for the store's own streams, ``streams/NAME`` for an added one);
* **how to compute a unit's frames**, in three steps the driver's pipeline (`extract.unit`) calls on
  worker threads and processes: :meth:`~StreamBackend.span` (from the audio header: which samples at
  the back-end's ``sample_rate`` it reads, or why the utterance fails), :meth:`~StreamBackend.load`
  (decode those samples through the back-end's ``audio`` source and prepare them), and
  :meth:`~StreamBackend.compute` (a batch of loaded utterances -> their arrays, with the model
  :meth:`~StreamBackend.open` built once per process);
* **its settings fingerprint** (:meth:`StreamBackend.fingerprint`): the settings that define its
  content, recorded when it starts and compared on every resume and addition (with the driver's
  ``unit_size``).

The driver owns the rest: the unit planning, the fingerprint check, the run loop (in this process or
through ``submit`` on dask), the commit records (a unit's records written after its data), the
store's lease (every back-end carries its token, ``lease``, and writes nothing once it is lost),
progress, resume, and the re-extraction `verify --repair` runs.

Audio comes from the back-end's ``audio`` field (:class:`AudioSource`: a header ``probe`` and a
``load`` of the mono waveform at a sample rate, for a plan row). The default reads the file
(:class:`FileAudio`). An augmented *view* of a store (the same utterances passed through a seeded
augmentation chain, written beside the original streams) needs no driver code: it is an existing
back-end with another ``audio`` source (one that wraps :class:`FileAudio`, seeded by the view's seed
and the row, so that a row's audio never depends on which unit or worker ran it) and another
``group`` (e.g. ``views/NAME/streams/STREAM``), e.g. ``dataclasses.replace(ssl_backend, audio=Augmented(
FileAudio(), chain, seed), group=...)``, run by the same ``driver.add_stream``. Everything a
back-end holds must pickle (it travels to dask workers with each unit) and is part of its identity:
what is not in the fingerprint must not change its frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import torch

from store.format import StreamSpec

from .audio import AudioInfo, load_audio, probe

Arrays = dict[str, np.ndarray]
"""One utterance's arrays by name: its frame arrays [frames, ...] and its per-utterance arrays [1]."""


@dataclass(frozen=True)
class FileAudio:
    """Audio read from the utterance's file (`extract.audio`): mixed to mono, resampled."""

    where: str = ""

    def fingerprint(self) -> dict[str, Any]:
        """What defines the audio beyond the file (none here; an augmented view's recipe)."""
        return {}

    def probe(self, path: str, row: int) -> AudioInfo:
        return probe(path)

    def load(self, path: str, row: int, sample_rate: int) -> torch.Tensor:
        """[1, T] float32 at ``sample_rate``; AudioError with the reason when the file cannot be used."""
        return load_audio(path, target_rate=sample_rate)


class AudioSource(Protocol):
    """What a back-end reads audio through (an augmented view's source wraps :class:`FileAudio`):
    ``where`` names it in log lines ("" for the files themselves), :meth:`fingerprint` joins the
    back-end's settings fingerprint."""

    where: str

    def fingerprint(self) -> dict[str, Any]: ...

    def probe(self, path: str, row: int) -> AudioInfo: ...

    def load(self, path: str, row: int, sample_rate: int) -> torch.Tensor: ...


@dataclass(frozen=True, kw_only=True)
class StreamBackend:
    """One kind of stream (see the module docstring). Subclasses set ``kind`` and ``sample_rate`` and
    implement the methods below; the fields here are the driver's.

    ``store``: the store's URL; ``group``: where the parts and arrays go; ``lease``: the token of the
    store's lease held by the run (`common.lease`), checked before every write; ``batch_seconds``:
    padded audio seconds per batch (0: one utterance at a time); ``max_seconds``: longer files fail;
    ``torch_threads``: the model's threads (None: the process default); ``decode_threads``: threads
    decoding audio ahead of the model (results do not depend on it); ``label``: the weights that make
    it, for log lines."""

    kind: ClassVar[str]
    sample_rate: ClassVar[int]
    utterance_arrays: ClassVar[tuple[str, ...]] = ()

    store: str
    batch_seconds: float
    max_seconds: float
    group: str = ""
    lease: str | None = None
    torch_threads: int | None = None
    decode_threads: int = 1
    label: str = ""
    audio: AudioSource = field(default_factory=FileAudio)

    # -- what it writes ---------------------------------------------------------------------------

    def frame_arrays(self) -> tuple[str, ...]:
        """Names of the per-frame arrays a unit writes (its streams), in order."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        """The stream a back-end adding one stream writes."""
        (name,) = self.frame_arrays()
        return name

    def new_spec(self, store_attrs: dict) -> StreamSpec:
        """The spec of the stream it adds to a finished store (whose root attributes are ``store_attrs``)."""
        raise NotImplementedError

    def new_specs(self, store_attrs: dict) -> list[StreamSpec]:
        """The specs of every stream it adds (several share the group's offsets); default: :meth:`new_spec`."""
        return [self.new_spec(store_attrs)]

    @property
    def where(self) -> str:
        """Where the audio comes from when not from the files themselves (an augmented view), for log lines."""
        return self.audio.where

    def fingerprint(self) -> dict[str, Any]:
        """The settings that define the stream's content (JSON values)."""
        raise NotImplementedError

    fingerprint_defaults: ClassVar[dict] = {}
    """What a fingerprint key missing from a stream made before that setting existed means."""

    rename_hint: ClassVar[str] = ""
    """How to add the stream under another name, for the message refusing other settings."""

    def note(self) -> str:
        """What a frame holds, in words, for the line that reports the stream's addition ("": none)."""
        return ""

    # -- how a unit's frames are computed ---------------------------------------------------------

    def span(self, info: AudioInfo, split: str) -> tuple[int, int] | tuple[str, str]:
        """From the audio header: (first sample, samples) at ``sample_rate`` to compute, or (stage,
        reason) when the utterance fails here (longer than ``max_seconds`` is checked before)."""
        raise NotImplementedError

    def load(self, path: str, row: int, span: tuple[int, int]) -> Any:
        """Decode and prepare one utterance (on a helper thread); AudioError when it cannot be read."""
        raise NotImplementedError

    def prepare(self, rows: list[tuple[int, str, str]], skip: dict[int, str], log: Any) -> None:
        """Before any unit runs (the stream created or resumed): fit what the units need from the
        corpus (``rows``: (row, path, split) in plan order, ``skip``: failed rows) and write it into
        the stream's group (nothing by default; the SSL stream's PCA basis)."""

    def open(self) -> Any:
        """The model of this back-end (built once per process and settings), or None."""
        return None

    def compute(self, model: Any, items: Sequence[Any], spans: Sequence[tuple[int, int]]) -> list[tuple[Arrays, int]]:
        """A batch of loaded utterances -> (arrays, windows run) each: its frame arrays, all with the
        same frame count, and its per-utterance arrays."""
        raise NotImplementedError


BACKENDS: dict[str, type[StreamBackend]] = {}
"""Every stream back-end, by kind."""

_B = TypeVar("_B", bound=type[StreamBackend])


def register_backend(cls: _B) -> _B:
    """Class decorator: register a stream back-end under its ``kind``."""
    if cls.kind in BACKENDS:
        raise ValueError(f"stream back-end {cls.kind!r} is already registered")
    BACKENDS[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class UnitTask:
    """One work unit: ``rows`` (plan row, audio path, split) to extract with back-end ``settings``;
    ``skipped``: (row, reason) recorded as failed without reading the audio (utterances whose
    extraction already failed in the store)."""

    unit: int
    rows: tuple[tuple[int, str, str], ...]
    settings: StreamBackend
    skipped: tuple[tuple[int, str], ...] = ()
