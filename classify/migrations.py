"""Format versions of checkpoints and detector bundles, and the migrations that read older ones.

A checkpoint (`classify.checkpoint`) and a bundle (`classify.bundle`) carry ``format_version``. Every
reader brings what it loads to :data:`FORMAT_VERSION` through :func:`migrate`, a chain of small
registered steps (version N -> N + 1), each a function whose docstring says what changed; nothing
after the readers knows that older files exist. A step that changed how sweep trial ids are
formed also registers an ``id_form``: the inverse for ids (a current config -> the fields the
older version hashed), so that :func:`id_fields` keeps the ids, and the finished results, of trials
run under an older version.

Versions:

- 1: written up to commit 7e33d6e. Over its life it took several shapes: before the SSL variants
  there was no ``config.ssl_kwargs`` and no ``ssl`` entry; SSL models from before AttM's output norm
  have no ``attm.norm`` parameters and no ``ssl_kwargs.norm``.
- 2: every entry is present (``ssl_kwargs``, ``ssl``, ``views``, ``view_clean_share``), and an SSL
  model without the norm says ``ssl_kwargs.norm = false``; a missing ``norm`` means the default (true).
- 3: ``config.dev_view`` is present (the augmented view dev selection and calibration read; "" clean).

A new version: raise :data:`FORMAT_VERSION`, register a ``@migration(old)`` step, add a fixture made
by the old code to ``tests/classify/fixtures``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FORMAT_VERSION = 3
"""The version checkpoints and bundles are written in."""
FIRST_VERSION = 1
"""The oldest version there is (a file without ``format_version`` is read as this one)."""


class FormatError(ValueError):
    """A checkpoint or bundle of a version this tool cannot read (newer, or with no migration)."""


State = dict[str, Any]


@dataclass(frozen=True)
class Migration:
    """One step: ``upgrade`` turns a state of version ``source`` into version ``source + 1``;
    ``id_form`` (optional) turns the config fields a trial id of version ``source + 1`` hashes into
    those version ``source`` hashed."""

    source: int
    upgrade: Callable[[State], State]
    id_form: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    @property
    def about(self) -> str:
        """What changed (the step's docstring)."""
        return inspect.getdoc(self.upgrade) or ""


MIGRATIONS: dict[int, Migration] = {}
"""Registered steps by the version they read."""


def migration(source: int, id_form: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
    """Register the decorated function as the step from version ``source`` to ``source + 1``."""

    def register(upgrade: Callable[[State], State]) -> Callable[[State], State]:
        if source in MIGRATIONS:
            raise RuntimeError(f"two migrations from format version {source}")
        if not inspect.getdoc(upgrade):
            raise RuntimeError(f"migration {upgrade.__name__} must say what changed (a docstring)")
        MIGRATIONS[source] = Migration(source, upgrade, id_form)
        return upgrade

    return register


def version_of(state: State) -> int:
    return int(state.get("format_version", FIRST_VERSION))


def migrate(state: State, where: str = "checkpoint") -> State:
    """``state`` (a checkpoint's or bundle's dict, or one with just a ``config``) brought to
    :data:`FORMAT_VERSION` by the registered steps; a new dict, ``state`` is not changed. FormatError
    naming ``where`` for a newer version or one no step reads."""
    version = version_of(state)
    if version > FORMAT_VERSION:
        raise FormatError(f"{where}: format version {version} is newer than this tool's {FORMAT_VERSION}; "
                          "upgrade rvq-antispoof to read it")
    state = dict(state)
    while version < FORMAT_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise FormatError(f"{where}: format version {version} cannot be read (no migration to {version + 1})")
        state = step.upgrade(state)
        version += 1
        state["format_version"] = version
    return state


def migrate_config(config: dict[str, Any], version: int = FIRST_VERSION) -> dict[str, Any]:
    """A bare training config of ``version`` (a sweep results table's row) at the current version.
    Steps that need the model's parameters to decide leave such a config as it is."""
    return migrate({"format_version": version, "config": config}, "config")["config"]


def id_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The config fields a trial id hashes: a current config brought down, newest step first, to the
    form the first version hashed (see the module docstring)."""
    for source in sorted(MIGRATIONS, reverse=True):
        if MIGRATIONS[source].id_form is not None:
            fields = MIGRATIONS[source].id_form(fields)
    return fields


def _is_ssl(config: dict[str, Any]) -> bool:
    from classify.variants import split_ssl  # noqa: PLC0415 - keeps this module free of torch at import

    return split_ssl(str(config.get("variant", "")))[0]


def _v2_id_form(fields: dict[str, Any]) -> dict[str, Any]:
    """Version 1's trial ids: ``ssl_kwargs``, ``views`` and ``view_clean_share`` left out while they
    have the value every config had before they existed (``{}``, ``""``, 0.5), and SSL trials with AttM's output norm marked ``ssl_attm_norm`` (trials
    finished before the norm existed had none, and must not be taken for them)."""
    out = {k: v for k, v in fields.items() if (k, v) not in (("views", ""), ("view_clean_share", 0.5))
           and not (k == "ssl_kwargs" and v == {})}
    if _is_ssl(fields) and (fields.get("ssl_kwargs") or {}).get("norm", True):
        out["ssl_attm_norm"] = True
    return out


@migration(1, id_form=_v2_id_form)
def _explicit_ssl_entries(state: State) -> State:
    """1 -> 2: entries added during version 1 become explicit.

    - ``config.ssl_kwargs``: absent in checkpoints from before the SSL variants, which ran as ``{}``.
    - ``config.views`` and ``config.view_clean_share``: absent before augmented views; such runs
      trained on the clean audio alone (``""``; the share is then unused, 0.5 by default).
    - ``ssl`` (the SSL stream's record): absent then too; None, a codec variant's value.
    - AttM's output norm: an SSL model whose ``ssl_kwargs`` names no ``norm`` was trained with the
      norm only when its parameters hold ``attm.norm.weight``; without them ``norm = false`` is
      written (version 2 reads a missing ``norm`` as true, the default). A bare config (no
      ``model`` entry: a sweep's results table) has nothing to tell, and keeps its ``ssl_kwargs``.
    """
    config = dict(state.get("config") or {})
    kwargs = dict(config.get("ssl_kwargs") or {})
    model = state.get("model")
    if _is_ssl(config) and "norm" not in kwargs and model is not None and "attm.norm.weight" not in model:
        kwargs["norm"] = False
    config["ssl_kwargs"] = kwargs
    config.setdefault("views", "")  # trained on the clean audio alone: augmented views came later
    config.setdefault("view_clean_share", 0.5)
    out = {**state, "config": config}
    if "model" in state:
        out.setdefault("ssl", None)
    return out


def _v3_id_form(fields: dict[str, Any]) -> dict[str, Any]:
    """Version 2's trial ids: ``dev_view`` left out while it is ``""`` (every run before it existed)."""
    return {k: v for k, v in fields.items() if (k, v) != ("dev_view", "")}


@migration(2, id_form=_v3_id_form)
def _dev_view(state: State) -> State:
    """2 -> 3: ``config.dev_view`` added; runs before it selected and calibrated on the clean dev
    split (``""``)."""
    config = dict(state.get("config") or {})
    config.setdefault("dev_view", "")
    return {**state, "config": config}
