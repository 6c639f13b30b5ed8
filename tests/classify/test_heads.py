"""Classifier heads and the assembled SpoofDetector: shapes, padding, size, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from classify.heads import HEADS, build_head, frame_mask
from classify.model import build_model

ENCODEC_24KHZ_PARAMS = 14_851_810  # frozen codec; the paper trains 4.4 % of the frozen size
D = 12


SMALL = {"lstm": {"proj_dim": 10, "hidden_dim": 8}, "asp": {"proj_dim": 10, "attention_dim": 6, "hidden_dim": 8},
         "stats": {}}


def small_head(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_head(name, D, **SMALL[name])


def test_frame_mask() -> None:
    assert frame_mask(torch.tensor([2, 0, 3]), 3).tolist() == [[True, True, False],
                                                               [False, False, False],
                                                               [True, True, True]]


@pytest.mark.parametrize("name", sorted(HEADS))
def test_output_shape(name: str) -> None:
    logits = small_head(name)(torch.randn(4, 9, D), torch.tensor([9, 3, 1, 6]))
    assert logits.shape == (4,)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(HEADS))
def test_padding_is_ignored(name: str) -> None:
    head = small_head(name)
    short, long = torch.randn(1, 5, D), torch.randn(1, 11, D)
    garbage = 100 * torch.randn(1, 6, D)  # padding frames must not matter, whatever they hold
    batch = torch.cat([torch.cat([short, garbage], dim=1), long])  # short row first: unsorted
    logits = head(batch, torch.tensor([5, 11]))
    torch.testing.assert_close(logits[0], head(short, torch.tensor([5]))[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits[1], head(long, torch.tensor([11]))[0], rtol=1e-5, atol=1e-5)


def test_unknown_head_lists_choices() -> None:
    with pytest.raises(ValueError, match="valid choices: lstm, asp, stats"):
        build_head("transformer", D)


def test_stats_head_is_a_linear_function_of_mean_and_std() -> None:
    head = small_head("stats")
    x, lengths = torch.randn(3, 9, D), torch.tensor([9, 4, 1])
    expected = []
    for row, n in zip(x, lengths):
        frames = row[:n].double()
        std = frames.var(dim=0, unbiased=False).clamp(min=1e-5).sqrt()
        features = torch.cat([frames.mean(dim=0), std])
        expected.append(features @ head.out.weight[0].double() + head.out.bias.double())
    torch.testing.assert_close(head(x, lengths).double(), torch.stack(expected).squeeze(-1), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in head.parameters()) == 2 * D + 1


def test_per_level_stats_head_reads_every_level_without_the_dense_tensor() -> None:
    """Per level: each level's own (weighted) embedding statistics, from the codes; equal to the
    statistics of the dense [B, T, Q, D] embeddings."""
    torch.manual_seed(0)
    codebooks = torch.randn(4, 16, D) * torch.tensor([1.0, 0.5, 0.25, 0.1]).view(4, 1, 1)
    model = build_model(codebooks, "qaf-static", "stats", head_kwargs={"per_level": True}, level_norm=True)
    with torch.no_grad():
        model.weighting.weights.normal_()
    codes, lengths = torch.randint(0, 16, (3, 7, 4)), torch.tensor([7, 2, 1])
    table = model.weighting.scaled_table().view(4, 16, D)
    dense = table[torch.arange(4)[None, None, :], codes]  # [B, T, Q, D]
    expected = []
    for row, n in zip(dense, lengths):
        std = row[:n].var(dim=0, unbiased=False).clamp(min=1e-5).sqrt()  # [Q, D]
        expected.append(model.head.out(torch.cat([row[:n].mean(dim=0).flatten(), std.flatten()])))
    torch.testing.assert_close(model(codes, lengths), torch.cat(expected), rtol=1e-5, atol=1e-5)
    assert model.head.out.in_features == 2 * 4 * D
    garbage = codes.clone()
    garbage[1, 2:] = 15 - garbage[1, 2:]  # padding frames of row 1 hold other codes
    torch.testing.assert_close(model(garbage, lengths), model(codes, lengths))


def test_stats_head_on_the_latent_is_one_stream() -> None:
    books = torch.randn(4, 16, D)  # the latent is standardised with level 1's statistics (level_norm)
    model = build_model(books, "latent", "stats", head_kwargs={"per_level": True})
    latent = torch.randn(2, 6, D)
    assert model.head.out.in_features == 2 * D
    fused = build_model(books, "latent", "stats")
    fused.head.load_state_dict(model.head.state_dict())
    codes = torch.zeros(2, 6, 4, dtype=torch.long)
    torch.testing.assert_close(model(codes, torch.tensor([6, 3]), latent), fused(codes, torch.tensor([6, 3]), latent))


def _encodec_codebooks() -> Tensor:
    return torch.randn(8, 1024, 128)


@pytest.mark.parametrize("head", ["lstm", "asp"])
def test_default_size_near_paper_share(head: str) -> None:
    model = build_model(_encodec_codebooks(), "qaf-static", head)
    share = model.n_trainable() / ENCODEC_24KHZ_PARAMS
    assert 0.035 <= share <= 0.055, f"{head}: {model.n_trainable()} trainable = {share:.2%}"
    assert model.n_trainable() == {"lstm": 663_329, "asp": 658_178}[head]


def test_stats_head_size() -> None:
    assert build_model(_encodec_codebooks(), "mean", "stats").n_trainable() == 257
    assert build_model(_encodec_codebooks(), "qaf-static", "stats", head_kwargs={"per_level": True}).n_trainable() \
        == 2 * 8 * 128 + 1 + 8 * 128


@pytest.mark.parametrize("variant", ["qaf-static", "trainable-tables", "cumulative"])
@pytest.mark.parametrize("head", sorted(HEADS))
def test_gradients_reach_every_parameter(variant: str, head: str) -> None:
    torch.manual_seed(0)
    codebooks = torch.randn(4, 16, D)
    model = build_model(codebooks, variant, head, tau=0.5, head_kwargs=SMALL[head])
    codes = torch.randint(0, 16, (3, 7, 4))
    model(codes, torch.tensor([7, 2, 5])).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name == "head.attention.2.bias":  # ASP's last attention bias: softmax over time ignores a shift,
            continue                         # so its gradient is zero by construction (rounding aside)
        assert p.grad.abs().sum() > 0, name
    assert model.weighting.table.requires_grad == (variant == "trainable-tables")


def test_latent_model() -> None:
    model = build_model(torch.randn(4, 16, D), "latent", "lstm",
                        head_kwargs={"proj_dim": 10, "hidden_dim": 8})
    codes = torch.zeros(2, 6, 4, dtype=torch.long)
    logits = model(codes, torch.tensor([6, 4]), latent=torch.randn(2, 6, D).half())
    assert logits.shape == (2,)
