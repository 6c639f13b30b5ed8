"""Augmented views: named, seeded chains of augmentations, read from a TOML views file.

A views file holds ``[view.NAME]`` tables::

    [view.rawboost_lnl_isd]
    seed = 1                                   # required: the view's seed
    splits = ["train"]                         # required: the splits it applies to
    streams = ["codes", "latent", "energy"]    # optional (this default); "ssl" is a choice
    description = "..."                        # optional
    chain = [{augment = "rawboost", algo = 5}, {augment = "codec", codec = "mp3", bitrate = [16000, 64000]}]

:func:`load_views` parses and checks the whole file (unknown augmentation or parameter, a range
upside down, a missing folder, a codec the installed FFmpeg lacks: :class:`AugmentError`, one line
naming the view and the key) before any audio is read. :func:`apply_view` makes one utterance's
copy. **Reproducibility**: the random stream of utterance ``utt_id`` in a view of seed ``seed`` is

    root = numpy.random.SeedSequence([seed, int.from_bytes(sha256(utt_id.encode("utf-8")).digest()[:16], "little")])
    step k of the chain draws from numpy.random.Generator(PCG64(root.spawn(len(chain))[k]))

(:func:`step_generators`): it depends on nothing but the seed, the utterance id and the step, not on
the order utterances are processed in, the worker, or the other steps' parameters. The view's
:meth:`View.recipe` (a JSON-able dict: name, splits, seed, streams, the chain with every parameter
resolved, the rng rule and the library versions) is what the store records; :func:`view_from_recipe`
makes the same view from it, and :func:`recipe_differences` says what differs from what made it
(library versions: a codec or resampler of another version may not give the same samples; a noise or
RIR folder whose files changed).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from extract.augment.base import AUGMENTS, Augmentation, AugmentError, as_float32, build

STREAMS = ("codes", "latent", "energy", "ssl")
"""Streams a view may extract (as ``pipeline extract`` names them)."""
DEFAULT_STREAMS = ("codes", "latent", "energy")
VIEW_KEYS = ("chain", "seed", "splits", "streams", "description")
RNG_RULE = ("numpy SeedSequence([seed, int.from_bytes(sha256(utt_id utf-8)[:16], 'little')]); "
            "chain step k: Generator(PCG64(spawn(len(chain))[k]))")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class View:
    """One augmented view: its name, seed, splits, streams and chain of augmentations."""

    name: str
    seed: int
    splits: tuple[str, ...]
    chain: tuple[Augmentation, ...]
    streams: tuple[str, ...] = DEFAULT_STREAMS
    description: str = ""

    def applies_to(self, split: str) -> bool:
        return split in self.splits

    def recipe(self) -> dict[str, Any]:
        """The record that re-makes the view (module docstring); JSON-able."""
        return {"name": self.name, "seed": self.seed, "splits": list(self.splits), "streams": list(self.streams),
                "description": self.description, "chain": [step.recipe() for step in self.chain],
                "rng": RNG_RULE, "versions": versions()}


def versions() -> dict[str, str | None]:
    """The versions of what makes a view's samples: numpy, scipy, PyAV and its FFmpeg libraries,
    pyroomacoustics, pydantic (parsing) and this project."""
    import av  # noqa: PLC0415

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    ffmpeg = {lib: ".".join(map(str, v)) for lib, v in av.library_versions.items()
              if lib in ("libavcodec", "libavformat", "libswresample", "libavutil")}
    return {"numpy": np.__version__, "scipy": version("scipy"), "av": av.__version__,
            "ffmpeg": ", ".join(f"{k} {v}" for k, v in sorted(ffmpeg.items())),
            "pyroomacoustics": version("pyroomacoustics"), "pydantic": version("pydantic"),
            "rvq-antispoof": version("rvq-antispoof")}


def version_differences(recipe: dict[str, Any]) -> list[str]:
    """``"scipy 1.18.1 here, 1.17.0 in the recipe"`` for each library that differs."""
    here = versions()
    return [f"{k} {here.get(k)} here, {v} in the recipe" for k, v in sorted(recipe.get("versions", {}).items())
            if k != "rvq-antispoof" and here.get(k) != v]


def recipe_differences(recipe: dict[str, Any]) -> list[str]:
    """What would keep the view a recipe describes from being made again here, bit for bit: the
    libraries that differ (:func:`version_differences`) and the noise or RIR folders whose listing
    changed (other files, or files renamed). Empty: it will be the same."""
    differences = version_differences(recipe)
    here = view_from_recipe(recipe).recipe()["chain"]
    for k, (then, now) in enumerate(zip(recipe["chain"], here, strict=True)):
        if then.get("files") != now.get("files"):
            differences.append(f"chain[{k}] ({then['augment']}): the files under {then.get('folder')!r} are not those "
                               f"the recipe lists ({now.get('files')} here, {then.get('files')} in the recipe)")
    return differences


def utterance_seed(seed: int, utt_id: str) -> np.random.SeedSequence:
    """The root SeedSequence of ``utt_id`` in a view of ``seed`` (module docstring)."""
    digest = hashlib.sha256(str(utt_id).encode("utf-8")).digest()
    return np.random.SeedSequence([int(seed), int.from_bytes(digest[:16], "little")])


def step_generators(view: View, utt_id: str) -> list[np.random.Generator]:
    """One Generator per step of the view's chain, for ``utt_id``."""
    children = utterance_seed(view.seed, utt_id).spawn(len(view.chain))
    return [np.random.Generator(np.random.PCG64(child)) for child in children]


def apply_view(view: View, utt_id: str, wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """The view's copy of one utterance: mono float32 ``wav`` [T] at ``sample_rate`` through the
    chain, each step with its own Generator; float32 [T'] at the same rate (T' = T except after a
    speed step). The same (view, utt_id, wav, rate) gives the same samples, bit for bit."""
    x = as_float32(wav)
    for step, rng in zip(view.chain, step_generators(view, utt_id), strict=True):
        x = as_float32(step(x, sample_rate, rng))
    if not np.all(np.isfinite(x)):
        raise AugmentError(f"view {view.name!r}: utterance {utt_id!r} came out with non-finite samples")
    return x


def _strings(value: Any, where: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise AugmentError(f"{where}: expected a non-empty list of strings, got {value!r}")
    if allowed is not None:
        bad = [v for v in value if v not in allowed]
        if bad:
            raise AugmentError(f"{where}: unknown {bad[0]!r}; allowed: {', '.join(allowed)}")
    if len(set(value)) != len(value):
        raise AugmentError(f"{where}: {value!r} names one twice")
    return tuple(value)


def parse_view(name: str, table: Any, where: str = "views") -> View:
    """One ``[view.NAME]`` table -> View (AugmentError, one line, for anything wrong)."""
    here = f"{where}: view.{name}"
    if not _NAME.match(name) or name == "clean":
        raise AugmentError(f"{here}: a view's name is letters, digits, '_', '-', '.' (up to 64), and not 'clean'")
    if not isinstance(table, dict):
        raise AugmentError(f"{here}: expected a table, got {table!r}")
    unknown = sorted(set(table) - set(VIEW_KEYS))
    if unknown:
        raise AugmentError(f"{here}: unknown key {unknown[0]!r}; allowed: {', '.join(VIEW_KEYS)}")
    for key in ("seed", "splits", "chain"):
        if key not in table:
            raise AugmentError(f"{here}: '{key}' is required")
    seed = table["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise AugmentError(f"{here}: seed: expected an integer >= 0, got {seed!r}")
    splits = _strings(table["splits"], f"{here}: splits")
    streams = _strings(table.get("streams", list(DEFAULT_STREAMS)), f"{here}: streams", STREAMS)
    description = table.get("description", "")
    if not isinstance(description, str):
        raise AugmentError(f"{here}: description: expected a string, got {description!r}")
    chain = table["chain"]
    if not isinstance(chain, list) or not chain:
        raise AugmentError(f"{here}: chain: expected a non-empty list of {{augment = NAME, ...}} tables")
    steps = tuple(build(spec, f"{here}: chain[{k}]") for k, spec in enumerate(chain))
    return View(name, seed, splits, steps, streams, description)


def parse_views(data: dict[str, Any], where: str = "views") -> dict[str, View]:
    """A parsed views file -> {name: View}, every view checked."""
    unknown = sorted(set(data) - {"view"})
    if unknown:
        raise AugmentError(f"{where}: unknown top-level key {unknown[0]!r}; a views file holds [view.NAME] tables")
    views = data.get("view")
    if not isinstance(views, dict) or not views:
        raise AugmentError(f"{where}: no [view.NAME] table")
    return {name: parse_view(name, table, where) for name, table in views.items()}


def load_views(path: str | Path) -> dict[str, View]:
    """Read and check a views file (module docstring); AugmentError (one line) for anything wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AugmentError(f"{path}: views file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise AugmentError(f"{path}: invalid TOML ({err})") from None
    return parse_views(data, str(path))


def view_from_recipe(recipe: dict[str, Any]) -> View:
    """The view a recipe (:meth:`View.recipe`, as a store records it) describes."""
    table = {k: recipe[k] for k in ("seed", "splits", "streams", "description") if k in recipe}
    table["chain"] = [{k: v for k, v in step.items() if k != "files"} for step in recipe["chain"]]
    return parse_view(recipe["name"], table, "recipe")


def select(views: dict[str, View], names: str) -> dict[str, View]:
    """``"all"`` or ``"a,b"`` -> those views (AugmentError naming an unknown one and the known)."""
    if names.strip() == "all":
        return dict(views)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    missing = [n for n in wanted if n not in views]
    if missing or not wanted:
        raise AugmentError(f"view {missing[0] if missing else names!r}: not defined; defined: {', '.join(views)}")
    return {n: views[n] for n in wanted}


__all__ = ["AUGMENTS", "DEFAULT_STREAMS", "STREAMS", "View", "apply_view", "load_views", "parse_view", "parse_views",
           "recipe_differences", "select", "step_generators", "utterance_seed", "version_differences", "versions", "view_from_recipe"]
