"""Layer selections as written in settings and shown in reports: ``"1-12"``, ``"1,3,5-8"`` <-> (1, 3, 5, 6, 7, 8).

One reading for every place that takes a selection of 1-based layers (the SSL stream's ``--ssl-layers``,
`extract.ssl`; a model's ``ssl_kwargs.layers``) and one way of writing it back.
"""

from __future__ import annotations

import re


def parse_layers(text: str | list[int] | tuple[int, ...], num_layers: int | None = None) -> tuple[int, ...]:
    """``"1-12"``, ``"1,3,5-8"`` or a list of 1-based layers -> sorted distinct layers; ValueError
    for a malformed selection, or a layer outside 1..``num_layers`` (None: no upper bound)."""
    if isinstance(text, (list, tuple)):
        layers = [int(v) for v in text]
    else:
        layers = []
        for part in str(text).replace(" ", "").split(","):
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not match:
                raise ValueError(f"SSL layers {text!r}: write them as 1-12 or 1,3,5-8")
            first, last = int(match[1]), int(match[2] or match[1])
            layers.extend(range(first, last + 1))
    layers = sorted(set(layers))
    if not layers or layers[0] < 1 or (num_layers is not None and layers[-1] > num_layers):
        raise ValueError(f"SSL layers {text!r}: each must be in 1..{num_layers if num_layers is not None else 'N'}")
    return tuple(layers)


def format_layers(layers: tuple[int, ...] | list[int]) -> str:
    """(1, 2, 3, 5) -> "1-3,5"."""
    runs, start = [], layers[0]
    for prev, cur in zip(layers, [*layers[1:], None]):
        if cur != prev + 1:
            runs.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = cur
    return ",".join(runs)
