"""What the scoring service may tell a client about its model, and its errors without server paths.

`classify.detector.Detector.describe` is written for a results file on the scorer's own disk: it names
the model file, the store that calibrated it and where the codec weights were found, by absolute path.
A service answers strangers, so :func:`public_model` keeps the model's identity (file name, kind,
variant, head, codec and SSL weights' labels with their sha256 — UNTRAINED stays in the label —,
calibration, thresholds, provenance's project, version, commit and lock hash) and drops every server
path: keys that hold a location become the base name (``model``, ``store``) or go (``found_in``,
``file``, the provenance's ``command`` and ``host``), and :func:`scrub` then reduces any absolute
path or storage URL left in any string to its base name. Error texts go through :func:`scrub` too.
"""

from __future__ import annotations

import re
from typing import Any

BASENAME_KEYS = frozenset({"model", "store", "path", "run", "bundle", "checkpoint"})
"""Keys whose string value is a location: the answer keeps its base name (the model's name is its identity)."""
DROPPED_KEYS = frozenset({"found_in", "file", "command", "argv", "cwd", "host", "platform", "root", "out"})
"""Keys that say where things lie on the server, or how it was invoked: left out of the answer."""

_URL = re.compile(r"\b(?:s3|gs|gcs|az|abfs|hdfs|file|memory)://[^\s'\"()<>,;]*")
_POSIX = re.compile(r"(?<![\w.~:/-])(?:~|\.{1,2})?/(?:[^\s/'\"()<>,;:]+/)*([^\s/'\"()<>,;:]+)")
_WINDOWS = re.compile(r"\b[A-Za-z]:[\\/](?:[^\s\\/'\"()<>,;:]+[\\/])*([^\s\\/'\"()<>,;:]+)")


def _base(match: re.Match[str]) -> str:
    text = match.group(0).rstrip("/\\")
    return re.split(r"[\\/]", text)[-1] if re.search(r"[\\/]", text) else text


def scrub(text: str) -> str:
    """``text`` with every absolute path (POSIX, ``~/``, Windows drive) and storage URL (``s3://``,
    ``file://``, ...) replaced by its base name: ``/srv/runs/qaf/best.pt`` -> ``best.pt``."""
    text = _URL.sub(lambda m: _base(m) or "<url>", text)
    text = _WINDOWS.sub(lambda m: m.group(1), text)
    return _POSIX.sub(lambda m: m.group(1), text)


def public(value: Any, key: str = "") -> Any:
    """``value`` (JSON-like) without server paths: the rules of the module docstring, recursively."""
    if isinstance(value, dict):
        return {k: public(v, k) for k, v in value.items() if k not in DROPPED_KEYS}
    if isinstance(value, (list, tuple)):
        return [public(v, key) for v in value]
    if isinstance(value, str):
        if key in BASENAME_KEYS and value:
            return re.split(r"[\\/]", value.rstrip("/\\"))[-1] or value
        return scrub(value)
    return value


def public_model(detector: Any) -> dict[str, Any]:
    """`Detector.describe` as the service answers it: the model's identity, no server paths."""
    return public(detector.describe())
