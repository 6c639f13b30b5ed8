"""common.selection: layer selections read and written back, checked against a naive expansion."""

from __future__ import annotations

import pytest

from common.selection import format_layers, parse_layers


def naive(text: str) -> list[int]:
    out = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return sorted(out)


@pytest.mark.parametrize("text", ["1-12", "3, 1,5-6", "7", "2-4,3-5,9"])
def test_a_selection_is_its_expansion_and_reads_back_from_its_writing(text):
    layers = parse_layers(text)
    assert list(layers) == naive(text)
    assert parse_layers(format_layers(layers)) == layers
    assert parse_layers(list(reversed(layers))) == layers  # a list (a TOML setting) reads the same


def test_layers_outside_the_model_or_malformed_are_refused():
    assert parse_layers("1-30") == tuple(range(1, 31))  # no upper bound unless the model's is given
    for bad, limit in (("1-30", 24), ("0-2", None), ("a", None), ("", None), ("1-", None)):
        with pytest.raises(ValueError, match="SSL layers"):
            parse_layers(bad, limit)
