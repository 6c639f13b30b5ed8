"""The fused hierarchy weighting against a naive [B, T, Q, D] reference, at init and in memory."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from classify.variants import parse_variant
from classify.weighting import HierarchyWeighting

Q, K, D = 4, 16, 6
TAU = 0.7
CODE_VARIANTS = ["mean", "scalar", "qaf-static", "single:1", "single:3", "first:1", "first:3",
                 "first:4", "cumulative", "trainable-tables"]


@pytest.fixture
def codebooks() -> Tensor:
    return torch.randn(Q, K, D, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def codes() -> Tensor:
    return torch.randint(0, K, (3, 5, Q), generator=torch.Generator().manual_seed(1))


def gather_levels(tables: Tensor, codes: Tensor) -> Tensor:
    """Naive per-level embeddings e [B, T, Q, D] from tables [Q, K, D] and codes [B, T, Q]."""
    return torch.stack([tables[q][codes[..., q]] for q in range(tables.shape[0])], dim=2)


def softmax0(w: Tensor, tau: float) -> Tensor:
    """Softmax over the first axis, written out."""
    e = torch.exp(w / tau - (w / tau).max(dim=0).values)
    return e / e.sum(dim=0)


def naive(variant: str, tables: Tensor, codes: Tensor, weights: Tensor | None, tau: float) -> Tensor:
    """The reference h [B, T, D], materialising e [B, T, Q, D]."""
    e = gather_levels(tables, codes)
    n_q = tables.shape[0]
    kind, _, k = variant.partition(":")
    if kind == "cumulative":
        partial = e.cumsum(dim=2)  # S_k, [B, T, Q, D]
        return (softmax0(weights, tau)[:, None] * partial).sum(dim=2)
    if kind == "mean":
        alpha = torch.full((n_q, 1), 1.0 / n_q)
    elif kind == "single":
        alpha = torch.zeros(n_q, 1)
        alpha[int(k) - 1] = 1.0
    elif kind == "first":
        alpha = torch.zeros(n_q, 1)
        alpha[: int(k)] = 1.0 / int(k)
    elif kind == "qaf-static":
        alpha = softmax0(weights, tau)
    else:  # scalar, trainable-tables
        alpha = softmax0(weights, tau)[:, None]
    return (alpha * e).sum(dim=2)


@pytest.mark.parametrize("variant", CODE_VARIANTS)
def test_fused_matches_naive_values_and_gradients(variant: str, codebooks: Tensor,
                                                  codes: Tensor) -> None:
    gen = torch.Generator().manual_seed(2)
    module = HierarchyWeighting(codebooks, variant, tau=TAU)
    with torch.no_grad():
        if module.weights is not None:
            module.weights.copy_(torch.randn(module.weights.shape, generator=gen))
        if variant == "trainable-tables":
            module.table.add_(0.3 * torch.randn(module.table.shape, generator=gen))

    weights = None if module.weights is None else module.weights.detach().clone().requires_grad_()
    tables = module.table.detach().clone().view(Q, K, D).requires_grad_(variant == "trainable-tables")
    out = module(codes)
    ref = naive(variant, tables, codes, weights, TAU)
    assert out.shape == (3, 5, D)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)

    params = [p for p in (module.weights, module.table) if isinstance(p, torch.nn.Parameter)]
    ref_params = [t for t in (weights, tables) if t is not None and t.requires_grad]
    assert len(params) == len(ref_params) == {"mean": 0, "single": 0, "first": 0,
                                              "trainable-tables": 2}.get(variant.split(":")[0], 1)
    if not params:
        return
    projection = torch.randn(out.shape, generator=gen)
    grads = torch.autograd.grad((out * projection).sum(), params)
    ref_grads = torch.autograd.grad((ref * projection).sum(), ref_params)
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad.view(ref_grad.shape), ref_grad, rtol=1e-5, atol=1e-5)


def test_zero_init_is_uniform(codebooks: Tensor, codes: Tensor) -> None:
    mean = HierarchyWeighting(codebooks, "mean")(codes)
    for variant in ("scalar", "qaf-static", "trainable-tables"):
        module = HierarchyWeighting(codebooks, variant, tau=TAU)
        assert torch.count_nonzero(module.weights) == 0
        torch.testing.assert_close(module.level_weights(),
                                   torch.full(module.weights.shape, 1.0 / Q))
        torch.testing.assert_close(module(codes), mean)


def test_cumulative_init_is_reverse_cumsum(codebooks: Tensor, codes: Tensor) -> None:
    module = HierarchyWeighting(codebooks, "cumulative", level_norm=False)
    expected = torch.tensor([(Q - q + 1) / Q for q in range(1, Q + 1)])  # 1, 3/4, 1/2, 1/4
    torch.testing.assert_close(module.level_weights(), expected)
    torch.testing.assert_close(module(codes), gather_levels(codebooks, codes).cumsum(dim=2).mean(dim=2))


@pytest.mark.parametrize("k", range(1, Q + 1))
def test_single_picks_level_k(k: int, codebooks: Tensor, codes: Tensor) -> None:
    module = HierarchyWeighting(codebooks, f"single:{k}", level_norm=False)
    assert torch.equal(module(codes), codebooks[k - 1][codes[..., k - 1]])
    assert torch.equal(module.level_weights(), torch.eye(Q)[k - 1])


@pytest.mark.parametrize("k", range(1, Q + 1))
def test_first_k_is_mean_of_first_levels(k: int, codebooks: Tensor, codes: Tensor) -> None:
    module = HierarchyWeighting(codebooks, f"first:{k}", level_norm=False)
    torch.testing.assert_close(module(codes), gather_levels(codebooks, codes)[:, :, :k].mean(dim=2))


@pytest.mark.parametrize("variant, n", [("mean", 0), ("single:2", 0), ("first:2", 0), ("latent", 0), ("energy", 0),
                                        ("scalar", Q), ("cumulative", Q), ("qaf-static", Q * D),
                                        ("trainable-tables", Q * K * D + Q)])
def test_trainable_counts_and_frozen_codebooks(variant: str, n: int, codebooks: Tensor) -> None:
    module = HierarchyWeighting(codebooks, parse_variant(variant, Q))
    assert module.n_trainable() == n
    assert ("table" in dict(module.named_buffers())) == (variant != "trainable-tables")
    assert module.out_dim == (1 if variant == "energy" else D)


def test_latent_passthrough(codebooks: Tensor, codes: Tensor) -> None:
    module = HierarchyWeighting(codebooks, "latent", level_norm=False)
    latent = torch.randn(3, 5, D).half()
    out = module(codes, latent)
    assert out.dtype == torch.float32
    assert torch.equal(out, latent.float())
    assert module.level_weights() is None
    with pytest.raises(ValueError, match="'latent' stream"):
        module(codes)
    normed = HierarchyWeighting(codebooks, "latent")  # level_norm: level 1's codebook statistics
    level1 = codebooks[0] - codebooks[0].mean(dim=0)
    torch.testing.assert_close(normed(codes, latent), (latent.float() - codebooks[0].mean(dim=0)) /
                               level1.square().mean().sqrt())


def test_energy_reads_one_standardised_stream(codebooks: Tensor, codes: Tensor) -> None:
    """`energy` ignores the codes and the codebooks: its output is the energy stream [B, T, 1],
    standardised with the statistics given to fit_stream (which the state dict keeps)."""
    module = HierarchyWeighting(codebooks, "energy")
    assert (module.out_dim, module.n_streams, module.n_trainable(), module.level_weights()) == (1, 1, 0, None)
    energy = (torch.randn(3, 5, 1) * 7 - 45).half()
    torch.testing.assert_close(module(codes, energy), energy.float())  # before fitting: identity
    module.fit_stream(torch.tensor([-45.0]), torch.tensor(7.0))
    expected = (energy.float() + 45) / 7
    torch.testing.assert_close(module(codes, energy), expected)
    torch.testing.assert_close(module(torch.zeros_like(codes), energy), expected)
    again = HierarchyWeighting(torch.zeros_like(codebooks), "energy")
    again.load_state_dict(module.state_dict())
    torch.testing.assert_close(again(codes, energy), expected)


def test_level_norm_defaults_agree() -> None:
    """TrainConfig, HierarchyWeighting and build_model standardise the levels by default alike."""
    import inspect

    from classify.config import TrainConfig
    from classify.model import build_model

    default = TrainConfig().level_norm
    assert inspect.signature(HierarchyWeighting).parameters["level_norm"].default is default
    assert inspect.signature(build_model).parameters["level_norm"].default is default
    books = torch.randn(Q, K, D) * 5 + 3
    assert build_model(books, "mean", "stats").weighting.level_norm is default


def test_bad_inputs(codebooks: Tensor, codes: Tensor) -> None:
    with pytest.raises(ValueError, match="tau"):
        HierarchyWeighting(codebooks, "scalar", tau=0.0)
    with pytest.raises(ValueError, match="k in 1..4"):
        HierarchyWeighting(codebooks, "single:5")
    with pytest.raises(ValueError, match=r"\[B, T, 4\]"):
        HierarchyWeighting(codebooks, "mean")(codes[..., :3])


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op returns (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _memory_profile(step: Callable[[], Tensor]) -> tuple[int, int]:
    """(largest op output, largest tensor saved for backward) over step() and its backward."""
    saved: list[int] = []

    def pack(t: Tensor) -> Tensor:
        saved.append(t.numel())
        return t

    with _LargestTensor() as mode:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = step()
        out.square().sum().backward()
    return mode.largest, max(saved)


def test_qaf_static_never_materialises_levels_by_dims() -> None:
    n_q, n_codes, dim, batch, frames = 5, 16, 7, 2, 40
    full = batch * frames * n_q * dim  # 2800, above the table (560) and [B*T, D] (560)
    codebooks = torch.randn(n_q, n_codes, dim)
    codes = torch.randint(0, n_codes, (batch, frames, n_q))
    module = HierarchyWeighting(codebooks, "qaf-static")

    largest, largest_saved = _memory_profile(lambda: module(codes))
    assert largest < full and largest_saved < full

    # The probe sees a naive implementation.
    def naive_step() -> Tensor:
        alpha = torch.softmax(module.weights, dim=0)
        return (alpha * gather_levels(module.table.view(n_q, n_codes, dim), codes)).sum(dim=2)

    largest, largest_saved = _memory_profile(naive_step)
    assert largest >= full and largest_saved >= full


def test_level_norm_equals_naive_sum_over_standardised_codebooks():
    torch.manual_seed(3)
    books = torch.randn(4, 16, 6) * torch.tensor([1.0, 0.1, 0.01, 0.001])[:, None, None] + 0.5
    codes = torch.randint(0, 16, (2, 5, 4))
    module = HierarchyWeighting(books, "scalar", level_norm=True)
    with torch.no_grad():
        module.weights.copy_(torch.randn(4))
    alpha = torch.softmax(module.weights.detach(), 0)
    expected = torch.zeros(2, 5, 6)
    for q in range(4):
        centred = books[q] - books[q].mean(0)
        normalised = centred / centred.pow(2).mean().sqrt()
        assert abs(float(normalised.pow(2).mean()) - 1.0) < 1e-5
        expected += alpha[q] * normalised[codes[..., q]]
    assert torch.allclose(module(codes), expected, atol=1e-5)
    latent = torch.randn(2, 5, 6)
    lat = HierarchyWeighting(books, "latent", level_norm=True)(codes, latent)
    level1 = books[0] - books[0].mean(0)
    assert torch.allclose(lat, (latent - books[0].mean(0)) / level1.pow(2).mean().sqrt(), atol=1e-5)
