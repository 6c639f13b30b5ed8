"""Parsing and validation of weighting variant names."""

import pytest

from classify.variants import VARIANT_NAMES, VariantSpec, parse_variant


@pytest.mark.parametrize("name", ["mean", "scalar", "qaf-static", "cumulative", "latent",
                                  "trainable-tables"])
def test_plain_variants(name: str) -> None:
    spec = parse_variant(name, 8)
    assert spec == VariantSpec(name)
    assert spec.name == name
    assert spec.needs_latent == (name == "latent")


@pytest.mark.parametrize("name, kind, k", [("single:1", "single", 1), ("single:8", "single", 8),
                                          ("first:3", "first", 3), (" First:2 ", "first", 2)])
def test_level_variants(name: str, kind: str, k: int) -> None:
    spec = parse_variant(name, 8)
    assert (spec.kind, spec.k) == (kind, k)
    assert spec.name == f"{kind}:{k}"


@pytest.mark.parametrize("name", ["bogus", "single", "first", "mean:2", "qaf", "single:x",
                                  "single:0", "single:9", "first:-1", "first:9", ""])
def test_invalid_names_list_choices(name: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_variant(name, 8)
    message = str(err.value)
    assert all(choice in message for choice in VARIANT_NAMES)
    assert "k in 1..8" in message


def test_bad_n_q() -> None:
    with pytest.raises(ValueError, match="n_q"):
        parse_variant("mean", 0)
