"""The augmentation registry: typed parameters, one-line errors, the call every augmentation answers.

An augmentation is a pydantic model (its parameters, validated on construction, frozen) that is
also a seeded function: ``aug(wav, sample_rate, rng) -> wav``, float32 ``[T]`` in and out, every
random draw taken from the numpy ``Generator`` it is given (so a seed makes it again, sample for
sample). :func:`register` puts a class in :data:`AUGMENTS` under its name; :func:`build` makes one
from a views file's table (``{augment = "NAME", ...}``) and turns pydantic's report into one line
naming the key (an unknown key lists the allowed ones; a range upside down says so). Whatever can
be checked without reading audio (a codec the installed FFmpeg lacks, a missing folder) is checked
on construction.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError


class AugmentError(ValueError):
    """A bad augmentation or views file entry; ``str(err)`` is one line naming the key."""


def _ordered(pair: tuple[float, float]) -> tuple[float, float]:
    low, high = pair
    if low > high:
        raise ValueError(f"range [{low}, {high}] is upside down (low > high)")
    return pair


Range = Annotated[tuple[float, float], AfterValidator(_ordered)]
"""``[low, high]``, low <= high: a value drawn uniformly per utterance (low == high: fixed)."""
IntRange = Annotated[tuple[int, int], AfterValidator(_ordered)]
"""``[low, high]`` integers, both included."""


def draw(rng: np.random.Generator, pair: tuple[float, float]) -> float:
    """A value uniform in ``pair`` (one draw from ``rng`` whether or not the range is a point)."""
    return float(rng.uniform(pair[0], pair[1]))


def draw_int(rng: np.random.Generator, pair: tuple[int, int]) -> int:
    return int(rng.integers(pair[0], pair[1], endpoint=True))


class Augmentation(BaseModel):
    """Base of every registered augmentation (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str] = ""
    speed: ClassVar[float] = 100.0
    """Audio seconds per second on one core (bench/results/augment.json, 16 kHz, the median of short
    calls on the shared 2-core VM at load 8.8 to 10.5: such calls mostly run unpreempted, so this is
    about the speed of a core to itself, not the throughput under load), for the estimate
    (:meth:`audio_per_second`; `extract.augment.estimate` scales it by the cores free)."""
    origin: ClassVar[str] = "signal processing"
    """What its material is: "generated", "simulated", "files" (recorded in the recipe)."""
    changes_length: ClassVar[bool] = False
    """Whether its output may be longer or shorter than its input (speed perturbation)."""

    def __call__(self, wav: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def audio_per_second(self) -> float:
        """This instance's measured speed (audio s per s, one core): :attr:`speed` unless its
        parameters change the cost."""
        return self.speed

    def setup_seconds(self, utterances: int | None = None) -> float:
        """Seconds it spends once per process whatever the audio length, over ``utterances``
        utterances (None: as many as it may need), e.g. the simulated rooms they use."""
        return 0.0

    def recipe(self) -> dict[str, Any]:
        """Every parameter, defaults resolved, JSON-able, with the augmentation's name and origin."""
        return {"augment": self.name, **self.model_dump(mode="json"), "origin": self.describe_origin()}

    def describe_origin(self) -> str:
        return self.origin


AUGMENTS: dict[str, type[Augmentation]] = {}


def register(cls: type[Augmentation]) -> type[Augmentation]:
    """Class decorator: ``AUGMENTS[cls.name] = cls``."""
    if not cls.name or cls.name in AUGMENTS:
        raise RuntimeError(f"augmentation {cls.__name__}: name {cls.name!r} empty or taken")
    AUGMENTS[cls.name] = cls
    return cls


def _one_line(err: ValidationError, cls: type[BaseModel]) -> str:
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"] if not isinstance(part, int))
    if first["type"] == "extra_forbidden":
        return f"unknown parameter {key!r}; allowed: {', '.join(cls.model_fields)}"
    message = first["msg"].removeprefix("Value error, ")
    return f"{key}: {message} (got {first.get('input')!r})" if key else message


def build(spec: dict[str, Any], where: str = "augmentation") -> Augmentation:
    """The augmentation a table describes: ``{"augment": NAME, **parameters}``; AugmentError (one
    line starting with ``where``) for an unknown name or parameter, a bad value, or a check that
    fails (codec, folder)."""
    if not isinstance(spec, dict):
        raise AugmentError(f"{where}: expected a table {{augment = NAME, ...}}, got {spec!r}")
    values = dict(spec)
    name = values.pop("augment", None)
    if name is None:
        raise AugmentError(f"{where}: no 'augment' key; known augmentations: {', '.join(sorted(AUGMENTS))}")
    cls = AUGMENTS.get(name)
    if cls is None:
        raise AugmentError(f"{where}: unknown augmentation {name!r}; known: {', '.join(sorted(AUGMENTS))}")
    values.pop("origin", None)  # a recipe's own label, not a parameter
    try:
        return cls(**values)
    except ValidationError as err:
        raise AugmentError(f"{where} ({name}): {_one_line(err, cls)}") from None
    except (ValueError, OSError) as err:
        raise AugmentError(f"{where} ({name}): {str(err).splitlines()[0]}") from None


def as_float32(wav: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(wav, dtype=np.float32).reshape(-1))


def scale_to_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``noise`` scaled so that 10 log10(mean(signal^2) / mean(noise^2)) == ``snr_db`` (silent
    signal or noise: zeros)."""
    p_signal = float(np.mean(np.square(signal, dtype=np.float64)))
    p_noise = float(np.mean(np.square(noise, dtype=np.float64)))
    if p_signal == 0.0 or p_noise == 0.0:
        return np.zeros_like(noise)
    return noise * np.sqrt(p_signal / (p_noise * 10.0 ** (snr_db / 10.0)))


def match_peak(out: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``out`` scaled to ``reference``'s peak amplitude (a level-keeping normalisation)."""
    peak_out = float(np.max(np.abs(out))) if out.size else 0.0
    peak_ref = float(np.max(np.abs(reference))) if reference.size else 0.0
    if peak_out == 0.0:
        return out
    return out * (peak_ref / peak_out)
