"""The weighting variants' registry: every kind once, with what it reads, what it trains and its alpha.

A variant says how the per-level RVQ embeddings e_q (q = 1..n_q) are combined into one frame
feature; `classify.weighting.HierarchyWeighting` implements them from the :data:`KINDS` entries
below, `classify.config.TrainConfig` validates names with :func:`check_variant`, and
`classify.fusion` builds the SSL variants (`ssl`, `ssl+V`: the SSL stream alone, or fused with the
codec under kind V, see :func:`split_ssl`). Levels are 1-based in names (`single:1` is the coarsest
level), as in the paper. A new variant is one entry of :data:`KINDS`.

Each :class:`Kind` gives:

- ``weights``: the shape of its trainable logits w from (Q, D) (None: nothing to learn);
- ``alpha``: the level weights [Q] or [Q, D] from (logits or None, variant, Q, tau);
- ``stream``: for the kinds that read a continuous frame stream of the store instead of the codes
  (`latent`: the encoder output before quantization; `energy`: the log energy of each codec frame,
  which sees no codec at all: the control for what the codec adds), its name, frame size and how it
  is standardised (``codebook``: with level 1's codebook statistics; ``train``: with the mean and
  standard deviation of the training split's frames, fitted once when training starts);
- ``tables``: the codebook tables themselves train (initialised from the codebooks);
- ``control``: the variant sees no codec: sweep reports show it beside the trained heads and never
  select it as a head's best.

:func:`needs` answers, from these records, what any variant (the SSL ones included) reads and runs:
its store streams, whether the codec's encoder and codebooks are used and whether tables train.
Training, the Detector and the rebuild ask it instead of comparing names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

#: The paper's full system: `ssl` (the SSL stream alone, AttM + LSTM) and `ssl+V` (fused with the
#: codec hierarchy under weighting variant V); see `classify.fusion`.
SSL_PREFIX = "ssl"


def _softmax(w: Tensor | None, spec: VariantSpec, n_q: int, tau: float) -> Tensor:
    return torch.softmax(w / tau, dim=0)


def _cumulative(w: Tensor | None, spec: VariantSpec, n_q: int, tau: float) -> Tensor:
    """alpha_q = sum_{k >= q} beta_k, beta = softmax(w / tau): h = sum_k beta_k S_k over the partial
    reconstructions S_k = sum_{q <= k} e_q."""
    return torch.softmax(w / tau, dim=0).flip(0).cumsum(0).flip(0)


def _mean(w: Tensor | None, spec: VariantSpec, n_q: int, tau: float) -> Tensor:
    return torch.full((n_q,), 1.0 / n_q)


def _single(w: Tensor | None, spec: VariantSpec, n_q: int, tau: float) -> Tensor:
    alpha = torch.zeros(n_q)
    alpha[spec.k - 1] = 1.0
    return alpha


def _first(w: Tensor | None, spec: VariantSpec, n_q: int, tau: float) -> Tensor:
    alpha = torch.zeros(n_q)
    alpha[: spec.k] = 1.0 / spec.k
    return alpha


def _per_level(n_q: int, dim: int) -> tuple[int, ...]:
    return (n_q,)


def _per_level_and_dim(n_q: int, dim: int) -> tuple[int, ...]:
    return (n_q, dim)


@dataclass(frozen=True)
class StreamUse:
    """A continuous frame stream a kind reads instead of the codes: its store name, its frame size
    (None: the codec's dim D), its standardisation (``codebook`` or ``train``, see the module) and
    whether the codec's encoder makes it (``energy`` is computed from the audio alone)."""

    name: str
    dim: int | None
    norm: str
    encoder: bool = True


@dataclass(frozen=True)
class Kind:
    """One weighting kind (see the module docstring)."""

    name: str
    about: str
    alpha: Callable[[Tensor | None, VariantSpec, int, float], Tensor] | None = None
    weights: Callable[[int, int], tuple[int, ...]] | None = None
    takes_level: bool = False
    stream: StreamUse | None = None
    tables: bool = False
    control: bool = False

    @property
    def written(self) -> str:
        return f"{self.name}:k" if self.takes_level else self.name


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("mean", "alpha_q = 1 / Q", _mean),
    Kind("scalar", "alpha = softmax(w / tau) over levels, w [Q]", _softmax, _per_level),
    Kind("qaf-static", "alpha = softmax(W / tau) over levels for each dimension, W [Q, D] (the paper's)",
         _softmax, _per_level_and_dim),
    Kind("single", "alpha = one-hot at level k", _single, takes_level=True),
    Kind("first", "alpha_q = 1 / k for q <= k, else 0", _first, takes_level=True),
    Kind("cumulative", "h = sum_k beta_k S_k over the partial reconstructions S_k = sum_{q<=k} e_q, "
         "beta = softmax(w / tau), w [Q]", _cumulative, _per_level),
    Kind("latent", "the continuous encoder output before quantization [T, D]; no levels",
         stream=StreamUse("latent", None, "codebook")),
    Kind("energy", "the log energy of each codec frame [T, 1] (dB): sees no codec; a control",
         stream=StreamUse("energy", 1, "train", encoder=False), control=True),
    Kind("trainable-tables", "the tables [Q * K, D] train (from the codebooks), combined as in `scalar`",
         _softmax, _per_level, tables=True),
)}
#: Kinds whose level weights are fixed, not learned.
FIXED_KINDS = tuple(k.name for k in KINDS.values() if k.alpha is not None and k.weights is None)
#: Kinds that see no codec (controls).
CONTROL_KINDS = tuple(k.name for k in KINDS.values() if k.control)
#: Every variant as written on the command line, for help texts.
VARIANT_NAMES = (*(k.written for k in KINDS.values()), SSL_PREFIX, f"{SSL_PREFIX}+V")


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
    """A validated codec weighting variant: ``kind`` a key of :data:`KINDS`; ``k`` the 1-based level
    of the kinds that take one, else None."""

    kind: str
    k: int | None = None

    @property
    def name(self) -> str:
        """The canonical name, e.g. `qaf-static` or `single:3`."""
        return self.kind if self.k is None else f"{self.kind}:{self.k}"

    @property
    def info(self) -> Kind:
        return KINDS[self.kind]

    @property
    def stream(self) -> StreamUse | None:
        """The continuous stream the variant reads instead of the codes, or None."""
        return self.info.stream

    @property
    def needs_latent(self) -> bool:
        """True when the variant reads a continuous stream (`latent`, `energy`) instead of the codes."""
        return self.info.stream is not None


CODES = "codes"
"""The store stream of the RVQ codes (what a kind without a ``stream`` reads)."""
SSL_STREAM = "ssl"
"""The default store stream of the SSL layers (``ssl_kwargs.stream`` may name another)."""


@dataclass(frozen=True)
class Needs:
    """What a variant reads and runs, from its records: ``ssl`` the SSL stream; ``codec`` the codec
    hierarchy at all (False for `ssl` alone); ``stream`` the continuous codec stream read instead of
    the codes (`latent`, `energy`), or None; ``encoder`` the codec's encoder runs; ``codebooks`` the
    frozen codebooks are read (the codes); ``tables`` the codebook tables train."""

    ssl: bool
    codec: bool
    stream: str | None
    encoder: bool
    codebooks: bool
    tables: bool

    @property
    def streams(self) -> tuple[str, ...]:
        """The store streams read (the SSL one by its default name)."""
        codec = (self.stream or CODES,) if self.codec else ()
        return ((SSL_STREAM,) if self.ssl else ()) + codec

    def reads(self, stream: str) -> bool:
        """True when the variant reads the store stream ``stream`` (its default name)."""
        return stream in self.streams


def needs(variant: str) -> Needs:
    """What ``variant`` (any name :func:`check_variant` accepts) reads and runs; ValueError as there."""
    uses_ssl = split_ssl(variant)[0]
    spec = check_variant(variant)
    if spec is None:
        return Needs(ssl=uses_ssl, codec=False, stream=None, encoder=False, codebooks=False, tables=False)
    stream = spec.info.stream
    return Needs(ssl=uses_ssl, codec=True, stream=stream.name if stream else None,
                 encoder=stream is None or stream.encoder, codebooks=stream is None, tables=spec.info.tables)


def _choices(n_q: int | None) -> str:
    return f"valid choices: {', '.join(VARIANT_NAMES)}" + (f" (k in 1..{n_q})" if n_q else "")


def parse_variant(name: str, n_q: int | None) -> VariantSpec:
    """Parse a codec variant name such as `qaf-static` or `first:4`; ``n_q`` the codec's levels (None:
    the range of k is not checked, as before a store is known).

    Raises ValueError, listing the valid choices and the k range, for an unknown name, a missing
    or non-integer k, or k outside 1..n_q.
    """
    if n_q is not None and n_q < 1:
        raise ValueError(f"n_q must be >= 1, got {n_q}")
    kind, sep, arg = name.strip().lower().partition(":")
    info = KINDS.get(kind)
    if info is None or bool(sep) != info.takes_level:
        raise ValueError(f"unknown weighting variant {name!r}; {_choices(n_q)}")
    if not sep:
        return VariantSpec(kind)
    try:
        k = int(arg)
    except ValueError:
        raise ValueError(f"weighting variant {name!r}: k must be an integer; {_choices(n_q)}") from None
    if k < 1 or (n_q is not None and k > n_q):
        raise ValueError(f"weighting variant {name!r}: k={k} is out of range; {_choices(n_q)}")
    return VariantSpec(kind, k)


def check_variant(name: str, n_q: int | None = None) -> VariantSpec | None:
    """Validate any variant name, the SSL ones included: the codec variant's spec, or None for `ssl`.
    ValueError as in :func:`parse_variant`."""
    _, codec = split_ssl(name)
    return None if codec is None else parse_variant(codec, n_q)
