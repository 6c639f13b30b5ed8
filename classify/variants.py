"""Names of the hierarchy weighting variants, parsed and validated.

A variant says how the per-level RVQ embeddings e_q (q = 1..n_q) are combined into one frame
feature; `classify.weighting.HierarchyWeighting` implements them. Levels are 1-based in names
(`single:1` is the coarsest level), as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Variant kinds that take no level argument.
PLAIN_KINDS = ("mean", "scalar", "qaf-static", "cumulative", "latent", "trainable-tables")
#: Variant kinds written `KIND:k` with a 1-based level k.
LEVEL_KINDS = ("single", "first")
#: Every variant as written on the command line, for help texts.
VARIANT_NAMES = (
    "mean", "scalar", "qaf-static", "single:k", "first:k", "cumulative", "latent", "trainable-tables",
    "ssl", "ssl+V",
)
#: The paper's full system: `ssl` (the SSL stream alone, AttM + LSTM) and `ssl+V` (fused with the
#: codec hierarchy under weighting variant V); see `classify.fusion`.
SSL_PREFIX = "ssl"


def split_ssl(name: str) -> tuple[bool, str | None]:
    """(uses the SSL stream, codec weighting variant or None): `ssl` -> (True, None), `ssl+mean` ->
    (True, "mean"), `mean` -> (False, "mean")."""
    text = name.strip().lower()
    if text == SSL_PREFIX:
        return True, None
    if text.startswith(SSL_PREFIX + "+"):
        return True, text[len(SSL_PREFIX) + 1 :]
    return False, text


@dataclass(frozen=True)
class VariantSpec:
    """A validated weighting variant: `kind` is one of PLAIN_KINDS or LEVEL_KINDS; `k` is the
    1-based level for `single` and `first`, else None."""

    kind: str
    k: int | None = None

    @property
    def name(self) -> str:
        """The canonical name, e.g. `qaf-static` or `single:3`."""
        return self.kind if self.k is None else f"{self.kind}:{self.k}"

    @property
    def needs_latent(self) -> bool:
        """True when the variant reads the store's continuous latent instead of the codes."""
        return self.kind == "latent"


def _choices(n_q: int) -> str:
    return f"valid choices: {', '.join(VARIANT_NAMES)} (k in 1..{n_q})"


def parse_variant(name: str, n_q: int) -> VariantSpec:
    """Parse a variant name such as `qaf-static` or `first:4` for a codec with `n_q` levels.

    Raises ValueError, listing the valid choices and the k range, for an unknown name, a missing
    or non-integer k, or k outside 1..n_q.
    """
    if n_q < 1:
        raise ValueError(f"n_q must be >= 1, got {n_q}")
    kind, sep, arg = name.strip().lower().partition(":")
    if not sep and kind in PLAIN_KINDS:
        return VariantSpec(kind)
    if sep and kind in LEVEL_KINDS:
        try:
            k = int(arg)
        except ValueError:
            raise ValueError(f"weighting variant {name!r}: k must be an integer; {_choices(n_q)}") from None
        if not 1 <= k <= n_q:
            raise ValueError(f"weighting variant {name!r}: k={k} is out of range; {_choices(n_q)}")
        return VariantSpec(kind, k)
    raise ValueError(f"unknown weighting variant {name!r}; {_choices(n_q)}")
