"""Parsing and validation of weighting variant names."""

import pytest

from classify.config import TrainConfig
from classify.variants import VARIANT_NAMES, VariantSpec, check_variant, parse_variant


@pytest.mark.parametrize("name", ["mean", "scalar", "qaf-static", "cumulative", "latent", "energy",
                                  "trainable-tables"])
def test_plain_variants(name: str) -> None:
    spec = parse_variant(name, 8)
    assert spec == VariantSpec(name)
    assert spec.name == name
    assert spec.needs_latent == (name in ("latent", "energy"))
    assert (spec.stream.name if spec.stream else None) == {"latent": "latent", "energy": "energy"}.get(name)


@pytest.mark.parametrize("name, codec", [("ssl", None), ("ssl+mean", "mean"), ("SSL+single:2", "single:2"),
                                         ("qaf-static", "qaf-static")])
def test_one_parser_for_codec_and_ssl_variants(name: str, codec: str | None) -> None:
    """TrainConfig validates with the registry's parser: the same names, the same errors."""
    spec = check_variant(name)
    assert (spec.name if spec else None) == codec
    assert TrainConfig(variant=name).variant == name
    for bad in ("ssl+bogus", "single", "first:x"):
        with pytest.raises(ValueError) as direct:
            check_variant(bad)
        with pytest.raises(ValueError) as config:
            TrainConfig(variant=bad)
        assert str(direct.value) == str(config.value)


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


@pytest.mark.parametrize("name,streams,encoder,codebooks,tables", [
    ("qaf-static", ("codes",), True, True, False),
    ("single:2", ("codes",), True, True, False),
    ("latent", ("latent",), True, False, False),
    ("energy", ("energy",), False, False, False),
    ("trainable-tables", ("codes",), True, True, True),
    ("ssl", ("ssl",), False, False, False),
    ("ssl+mean", ("ssl", "codes"), True, True, False),
    ("ssl+latent", ("ssl", "latent"), True, False, False),
    ("ssl+trainable-tables", ("ssl", "codes"), True, True, True),
])
def test_the_records_say_what_a_variant_needs(name, streams, encoder, codebooks, tables):
    from classify.variants import needs

    uses = needs(name)
    assert (uses.streams, uses.encoder, uses.codebooks, uses.tables) == (streams, encoder, codebooks, tables)
    assert uses.ssl == name.startswith("ssl") and uses.codec == (name != "ssl")
    assert uses.reads(streams[-1]) and not uses.reads("nothing")
    with pytest.raises(ValueError, match="unknown weighting variant"):
        needs("ssl+meen")
