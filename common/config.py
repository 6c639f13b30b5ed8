"""Typed configuration: dataclasses loaded from TOML, with validated ``--set key=value`` overrides.

A value given with ``--set`` is parsed as a TOML value (``lr=3e-4``, ``variant="scalar"`` or just
``variant=scalar``, ``amp=true``, ``splits=["train","dev"]``) and checked against the field's type;
an unknown key is an error that lists the valid keys. Nothing is ever evaluated as code.
"""

from __future__ import annotations

import dataclasses
import inspect
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


def parse_value(text: str) -> Any:
    """A TOML value; a bare word that is not TOML is taken as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _check_type(name, value, option)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{name}: invalid value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        return [_check_type(f"{name}[]", v, item) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a table (dict), got {value!r}")
        return value
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if annotation in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(f"{name}: expected {annotation.__name__}, got {value!r}")
    return value


def build(cls: type[T], values: dict[str, Any], where: str = "config") -> T:
    """Instantiate dataclass ``cls`` from ``values``, type-checking every field."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}")
    checked = {k: _check_type(k, v, hints[k]) for k, v in values.items()}
    try:
        return cls(**checked)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def check_arguments(target: Any, values: dict[str, Any], where: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """``values`` checked against the keyword parameters of ``target`` (a class or function) that a
    nested setting configures (``head_kwargs`` for a head class): ConfigError naming ``where``, the
    unknown key(s) and the valid ones, or a value of the wrong type for its annotation. Returns the
    values with ints widened to float where the annotation says float. ``skip``: parameters the
    caller fills itself (not settings)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a table such as {{key = value}}, got {values!r}")
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    parameters = [p for p in inspect.signature(target).parameters.values() if p.kind in kinds and p.name not in skip]
    names = [p.name for p in parameters]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(names) or 'none'}")
    hints = typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
    return {k: _check_type(f"{where}.{k}", v, hints[k]) if k in hints else v for k, v in values.items()}


def parse_overrides(pairs: typing.Iterable[str]) -> dict[str, Any]:
    """``["lr=1e-3", "variant=scalar"]`` -> ``{"lr": 0.001, "variant": "scalar"}``."""
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value")
        out[key.strip()] = parse_value(text.strip())
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML ({err})") from None


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None, **explicit: Any) -> T:
    """``cls`` defaults <- TOML file <- ``explicit`` (named command-line flags) <- ``overrides`` (--set)."""
    values: dict[str, Any] = dict(load_toml(path)) if path else {}
    values.update({k: v for k, v in explicit.items() if v is not None})
    values.update(overrides or {})
    return build(cls, values, where=str(path) if path else "config")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
