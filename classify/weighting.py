"""Learnable weighting of the RVQ hierarchy, fused into one table lookup.

Shapes: codes LongTensor [B, T, Q] with values in [0, K); codebooks FloatTensor [Q, K, D];
latent FloatTensor [B, T, D]; output FloatTensor [B, T, D].

Every code-based variant is h[t, d] = sum_q alpha[q, d] * C_q[code_q[t], d], with alpha of shape
[Q] (one weight per level) or [Q, D] (QAF-Static, one per level and dimension). That sum equals a
lookup into the scaled tables alpha[q] * C_q, flattened to [Q * K, D], at rows q * K + code_q[t],
summed over the Q rows of each frame: one `embedding_bag(mode="sum")`. Memory stays at [B * T, D]
plus the table; [B, T, Q, D] is never built, and gradients reach alpha through the scaled table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from classify.variants import VariantSpec, parse_variant


def _fixed_alpha(spec: VariantSpec, n_q: int) -> Tensor:
    """The constant alpha [Q] of the variants without trainable weights."""
    alpha = torch.zeros(n_q)
    if spec.kind == "single":
        alpha[spec.k - 1] = 1.0
    elif spec.kind == "first":
        alpha[: spec.k] = 1.0 / spec.k
    else:  # mean
        alpha[:] = 1.0 / n_q
    return alpha


class HierarchyWeighting(nn.Module):
    """Combine the per-level embeddings of RVQ codes into one feature per frame.

    Variants (see `classify.variants`); w are trainable logits, initialised to zero so that every
    softmax starts uniform:

    - `mean`: alpha_q = 1 / Q.
    - `scalar`: alpha = softmax(w / tau) over levels, w [Q].
    - `qaf-static`: alpha = softmax(W / tau) over levels for each dimension, W [Q, D].
    - `single:k`: alpha = one-hot at level k. `first:k`: alpha_q = 1 / k for q <= k, else 0.
    - `cumulative`: h = sum_k beta_k S_k over the partial reconstructions S_k = sum_{q<=k} e_q,
      beta = softmax(w / tau), w [Q]; equivalently alpha_q = sum_{k>=q} beta_k.
    - `trainable-tables`: the tables [Q * K, D] are parameters initialised from the codebooks,
      combined as in `scalar`.
    - `latent`: returns the given continuous latent [B, T, D] as float32; codes are ignored.

    The codebooks are a frozen buffer `table` [Q * K, D], except in `trainable-tables`.

    ``level_norm``: standardise each level's codebook, C_q -> (C_q - mean_q) / rms_q (mean_q [D] the
    mean codeword, rms_q one scalar), so that every level enters at the same scale and alpha
    compares the levels' information rather than their norms (RVQ residual levels shrink by orders
    of magnitude). The `latent` variant is standardised with level 1's statistics.
    """

    def __init__(self, codebooks: Tensor, variant: str | VariantSpec, tau: float = 1.0, level_norm: bool = False) -> None:
        super().__init__()
        if codebooks.dim() != 3:
            raise ValueError(f"codebooks must be [Q, K, D], got shape {tuple(codebooks.shape)}")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        n_q, n_codes, dim = codebooks.shape
        name = variant.name if isinstance(variant, VariantSpec) else variant
        self.spec = parse_variant(name, n_q)
        self.n_q, self.n_codes, self.dim, self.tau = n_q, n_codes, dim, tau

        books = codebooks.detach().to(torch.float32)
        shift, scale = torch.zeros(n_q, 1, dim), torch.ones(n_q, 1, 1)
        if level_norm:
            shift = books.mean(dim=1, keepdim=True)
            scale = (books - shift).pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-12)
        self.level_norm = level_norm
        self.register_buffer("latent_shift", shift[0, 0].clone())
        self.register_buffer("latent_scale", scale[0, 0, 0].clone())
        table = ((books - shift) / scale).reshape(n_q * n_codes, dim).clone()
        if self.spec.kind == "trainable-tables":
            self.table = nn.Parameter(table)
        else:
            self.register_buffer("table", table)
        self.register_buffer("offsets", torch.arange(n_q) * n_codes, persistent=False)

        kind = self.spec.kind
        if kind == "qaf-static":
            self.weights = nn.Parameter(torch.zeros(n_q, dim))
        elif kind in ("scalar", "cumulative", "trainable-tables"):
            self.weights = nn.Parameter(torch.zeros(n_q))
        else:
            self.register_parameter("weights", None)
        if kind in ("mean", "single", "first"):
            self.register_buffer("fixed_alpha", _fixed_alpha(self.spec, n_q))

    @property
    def out_dim(self) -> int:
        """D, the size of the output feature."""
        return self.dim

    @property
    def n_streams(self) -> int:
        """Levels that `level_moments` returns: Q, or 1 for `latent` (one continuous stream)."""
        return 1 if self.spec.kind == "latent" else self.n_q

    def alpha(self) -> Tensor:
        """The effective level weights, [Q] or [Q, D] (QAF-Static), differentiable."""
        if self.weights is None:
            return self.fixed_alpha
        soft = torch.softmax(self.weights / self.tau, dim=0)
        if self.spec.kind == "cumulative":
            return soft.flip(0).cumsum(0).flip(0)
        return soft

    def level_weights(self) -> Tensor | None:
        """alpha [Q] or [Q, D], detached on the CPU, for reports; None for `latent`."""
        if self.spec.kind == "latent":
            return None
        return self.alpha().detach().cpu()

    def n_trainable(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, codes: Tensor, latent: Tensor | None = None) -> Tensor:
        """codes [B, T, Q] (and latent [B, T, D] for `latent`) -> features [B, T, D]."""
        if self.spec.kind == "latent":
            if latent is None:
                raise ValueError("variant 'latent' needs the continuous latent, but this store has "
                                 "no latent; re-extract with --latent")
            return (latent.to(torch.float32) - self.latent_shift) / self.latent_scale
        if codes.dim() != 3 or codes.shape[-1] != self.n_q:
            raise ValueError(f"codes must be [B, T, {self.n_q}], got shape {tuple(codes.shape)}")
        batch, frames, _ = codes.shape
        rows = (codes.long() + self.offsets).view(batch * frames, self.n_q)
        return F.embedding_bag(rows, self.scaled_table(), mode="sum").view(batch, frames, self.dim)

    def scaled_table(self) -> Tensor:
        """The level-scaled tables alpha[q] * C_q, flattened to [Q * K, D] (differentiable)."""
        alpha = self.alpha().reshape(self.n_q, 1, -1)  # [Q, 1, 1] or [Q, 1, D]
        return (self.table.view(self.n_q, self.n_codes, self.dim) * alpha).view(-1, self.dim)

    def level_moments(self, codes: Tensor, lengths: Tensor, latent: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and mean of squares over each row's valid frames of every level's weighted
        embedding alpha_q * e_q: codes [B, T, Q], lengths [B] -> two [B, Q, D] tensors.

        One `embedding_bag` per moment with a bag per (row, level) and weights 1 / length on the
        valid frames (0 on padding), so [B, T, Q, D] is never built. `latent`: the moments of the
        standardised latent [B, T, D], as one level ([B, 1, D])."""
        if self.spec.kind == "latent":
            x = self.forward(codes, latent)
            weights = (torch.arange(x.shape[1], device=x.device) < lengths.to(x.device).unsqueeze(1)).to(x.dtype)
            weights = (weights / lengths.to(x.device, x.dtype).unsqueeze(1)).unsqueeze(2)  # [B, T, 1]
            return (x * weights).sum(1, keepdim=True), (x.square() * weights).sum(1, keepdim=True)
        if codes.dim() != 3 or codes.shape[-1] != self.n_q:
            raise ValueError(f"codes must be [B, T, {self.n_q}], got shape {tuple(codes.shape)}")
        batch, frames, _ = codes.shape
        table = self.scaled_table()
        bags = (codes.long() + self.offsets).permute(0, 2, 1).reshape(batch * self.n_q, frames)  # (row, level)
        valid = torch.arange(frames, device=codes.device) < lengths.to(codes.device).unsqueeze(1)  # [B, T]
        weights = valid.to(table.dtype) / lengths.to(codes.device, table.dtype).unsqueeze(1)
        weights = weights.unsqueeze(1).expand(batch, self.n_q, frames).reshape(batch * self.n_q, frames)
        mean = F.embedding_bag(bags, table, per_sample_weights=weights, mode="sum")
        square = F.embedding_bag(bags, table.square(), per_sample_weights=weights, mode="sum")
        return mean.view(batch, self.n_q, self.dim), square.view(batch, self.n_q, self.dim)
