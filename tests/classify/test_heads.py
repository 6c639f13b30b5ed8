"""Classifier heads and the assembled SpoofDetector: shapes, padding, size, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from classify.heads import HEADS, build_head, frame_mask
from classify.model import build_model

ENCODEC_24KHZ_PARAMS = 14_851_810  # frozen codec; the paper trains 4.4 % of the frozen size
D = 12


def small_head(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {"lstm": {"proj_dim": 10, "hidden_dim": 8},
              "asp": {"proj_dim": 10, "attention_dim": 6, "hidden_dim": 8}}[name]
    return build_head(name, D, **kwargs)


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
    with pytest.raises(ValueError, match="valid choices: lstm, asp"):
        build_head("transformer", D)


def _encodec_codebooks() -> Tensor:
    return torch.randn(8, 1024, 128)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_default_size_near_paper_share(head: str) -> None:
    model = build_model(_encodec_codebooks(), "qaf-static", head)
    share = model.n_trainable() / ENCODEC_24KHZ_PARAMS
    assert 0.035 <= share <= 0.055, f"{head}: {model.n_trainable()} trainable = {share:.2%}"
    assert model.n_trainable() == {"lstm": 663_329, "asp": 658_178}[head]


@pytest.mark.parametrize("variant", ["qaf-static", "trainable-tables", "cumulative"])
@pytest.mark.parametrize("head", sorted(HEADS))
def test_gradients_reach_every_parameter(variant: str, head: str) -> None:
    torch.manual_seed(0)
    codebooks = torch.randn(4, 16, D)
    model = build_model(codebooks, variant, head, tau=0.5,
                        head_kwargs={"proj_dim": 10, "hidden_dim": 8})
    codes = torch.randint(0, 16, (3, 7, 4))
    model(codes, torch.tensor([7, 2, 5])).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert model.weighting.table.requires_grad == (variant == "trainable-tables")


def test_latent_model() -> None:
    model = build_model(torch.randn(4, 16, D), "latent", "lstm",
                        head_kwargs={"proj_dim": 10, "hidden_dim": 8})
    codes = torch.zeros(2, 6, 4, dtype=torch.long)
    logits = model(codes, torch.tensor([6, 4]), latent=torch.randn(2, 6, D).half())
    assert logits.shape == (2,)
