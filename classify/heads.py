"""Utterance-level classifier heads: frame features [B, T, D] and lengths [B] -> logits [B].

A logit is higher for more bona fide speech. Frames at or beyond a row's length are padding and
never influence its logit. With D = 128, `LSTMHead` has 662,305
parameters and `ASPHead` 657,154; QAF-Static adds 1,024: 7.8 % of the 7,425,792 + 8 x 1024 x 128
frozen parameters a codes variant uses (EnCodec 24 kHz's encoder and 8 codebooks; `classify.budget`
says how the trainable share is counted, against the paper's 4.4 %).
`StatsHead`, the linear probe, has 257 (fused) or 2,049 (per level, 8 levels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from common.config import check_arguments


def frame_mask(lengths: Tensor, frames: int) -> Tensor:
    """lengths [B] -> BoolTensor [B, T], True on the valid frames."""
    return torch.arange(frames, device=lengths.device) < lengths.unsqueeze(1)


class LSTMHead(nn.Module):
    """The paper's head: linear D -> P, 1-layer LSTM P -> H, mean of the LSTM outputs over the
    valid frames, linear H -> 1.

    The LSTM runs forward in time over the padded batch: padding follows each row's valid frames,
    so it never reaches their outputs, and the mean masks it out. (Packing the sequences gives the
    same logits, but its backward pass on CPUs grows with the square of the crop length: 17x slower
    at 4 s crops, bench/RESULTS_train.md.)"""

    def __init__(self, in_dim: int, proj_dim: int = 256, hidden_dim: int = 288) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, proj_dim)
        self.lstm = nn.LSTM(proj_dim, hidden_dim, batch_first=True)
        self.out = nn.Linear(hidden_dim, 1)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x [B, T, D], lengths [B] (each >= 1) -> logits [B]."""
        hidden, _ = self.lstm(self.proj(x))  # [B, T, H]
        valid = frame_mask(lengths.to(x.device), x.shape[1]).unsqueeze(2).to(hidden.dtype)
        pooled = (hidden * valid).sum(dim=1) / lengths.to(hidden.device, hidden.dtype).unsqueeze(1)
        return self.out(pooled).squeeze(1)


class ASPHead(nn.Module):
    """Attentive statistics pooling: per-frame linear D -> P and ReLU, one attention score per
    frame (P -> A, tanh, A -> 1) softmaxed over the valid frames, the weighted mean and standard
    deviation [B, 2P], then an MLP 2P -> H -> 1."""

    def __init__(self, in_dim: int, proj_dim: int = 512, attention_dim: int = 128,
                 hidden_dim: int = 512) -> None:
        super().__init__()
        self.frame = nn.Sequential(nn.Linear(in_dim, proj_dim), nn.ReLU())
        self.attention = nn.Sequential(nn.Linear(proj_dim, attention_dim), nn.Tanh(),
                                       nn.Linear(attention_dim, 1))
        self.mlp = nn.Sequential(nn.Linear(2 * proj_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, 1))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x [B, T, D], lengths [B] (each >= 1) -> logits [B]."""
        valid = frame_mask(lengths.to(x.device), x.shape[1]).unsqueeze(2)  # [B, T, 1]
        frames = self.frame(x).masked_fill(~valid, 0.0)  # [B, T, P]
        weights = torch.softmax(self.attention(frames).masked_fill(~valid, float("-inf")), dim=1)
        mean = (weights * frames).sum(dim=1)
        var = (weights * frames.square()).sum(dim=1) - mean.square()
        std = var.clamp(min=1e-5).sqrt()
        return self.mlp(torch.cat([mean, std], dim=1)).squeeze(1)


class StatsHead(nn.Module):
    """Statistics pooling and one linear layer: the linear probe as a head.

    Fused (default): the mean and standard deviation over the valid frames of the weighted feature
    [B, T, D] -> [B, 2D] -> linear -> logit (2D + 1 parameters: 257 at D = 128). Per level
    (``per_level=True``): the mean and standard deviation of each level's own embedding
    [B, L, D] each -> [B, 2LD] -> linear (2LD + 1: 2,049 at 8 levels), which the model computes
    from the codes without the [B, T, L, D] tensor (`HierarchyWeighting.level_moments`), so the
    head weighs every level and dim itself; the hierarchy weights then only rescale what the
    linear layer could rescale anyway. The standard deviation is sqrt(max(E[x^2] - E[x]^2, 1e-5)).
    """

    #: `build_head` passes the number of levels to heads with this flag.
    takes_levels = True

    def __init__(self, in_dim: int, n_levels: int = 1, per_level: bool = False) -> None:
        super().__init__()
        self.per_level = bool(per_level)
        self.n_levels = n_levels if self.per_level else 1
        self.out = nn.Linear(2 * self.n_levels * in_dim, 1)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Fused: x [B, T, D], lengths [B] (each >= 1) -> logits [B]."""
        if self.per_level and self.n_levels > 1:
            raise ValueError("a per-level stats head takes level moments (SpoofDetector passes them), not frames")
        valid = frame_mask(lengths.to(x.device), x.shape[1]).unsqueeze(2).to(x.dtype)  # [B, T, 1]
        count = lengths.to(x.device, x.dtype).view(-1, 1, 1)
        mean = (x * valid).sum(dim=1, keepdim=True) / count  # [B, 1, D]
        square = (x.square() * valid).sum(dim=1, keepdim=True) / count
        return self.from_moments(mean, square)

    def from_moments(self, mean: Tensor, square: Tensor) -> Tensor:
        """mean and mean of squares over the valid frames, [B, L, D] each -> logits [B]."""
        std = (square - mean.square()).clamp(min=1e-5).sqrt()
        return self.out(torch.cat([mean.flatten(1), std.flatten(1)], dim=1)).squeeze(1)


HEADS: dict[str, Callable[..., nn.Module]] = {"lstm": LSTMHead, "asp": ASPHead, "stats": StatsHead}


def check_head_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` (a config's ``head_kwargs``) bound to the constructor of head ``name``: ConfigError
    (a ValueError) naming an unknown key with the valid ones, or a value of the wrong type."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; valid choices: {', '.join(HEADS)}")
    return check_arguments(HEADS[name], kwargs, f"head_kwargs of head {name}", skip=("in_dim", "n_levels"))


def build_head(name: str, in_dim: int, n_levels: int = 1, **kwargs: Any) -> nn.Module:
    """Build the head called `name` (see HEADS) for features of size `in_dim`; heads that pool
    per level (`StatsHead`) also get the number of levels ``n_levels``."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; valid choices: {', '.join(HEADS)}")
    if getattr(HEADS[name], "takes_levels", False):
        kwargs["n_levels"] = n_levels
    return HEADS[name](in_dim, **kwargs)
