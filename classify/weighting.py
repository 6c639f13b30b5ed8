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

from classify.heads import frame_mask
from classify.variants import VariantSpec, parse_variant


class HierarchyWeighting(nn.Module):
    """Combine the per-level embeddings of RVQ codes into one feature per frame.

    Variants: the registry `classify.variants.KINDS` gives each kind's trainable logits w (shape from
    Q and D; initialised to zero so that every softmax starts uniform), its alpha function, and the
    continuous stream it reads instead of the codes (`latent` [B, T, D], `energy` [B, T, 1]),
    returned standardised; codes are then ignored.

    The codebooks are a frozen buffer `table` [Q * K, D], except in `trainable-tables`.

    ``level_norm``: standardise each level's codebook, C_q -> (C_q - mean_q) / rms_q (mean_q [D] the
    mean codeword, rms_q one scalar), so that every level enters at the same scale and alpha
    compares the levels' information rather than their norms (RVQ residual levels shrink by orders
    of magnitude). Default on, as in `TrainConfig` and `build_model`. The stream variants' output is
    standardised too: `latent` with level 1's codebook statistics (with ``level_norm``), `energy`
    (always) with the training split's frame mean and standard deviation (:meth:`fit_stream`, called
    when training starts; they are buffers, so checkpoints keep them).
    """

    def __init__(self, codebooks: Tensor, variant: str | VariantSpec, tau: float = 1.0, level_norm: bool = True) -> None:
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
        info, stream = self.spec.info, self.spec.stream
        self.stream_dim = dim if stream is None or stream.dim is None else stream.dim
        stream_shift, stream_scale = shift[0, 0], scale[0, 0, 0]  # `latent`: level 1's statistics
        if stream is not None and stream.norm == "train":  # `energy`: set by fit_stream
            stream_shift, stream_scale = torch.zeros(self.stream_dim), torch.ones(())
        # the stream's standardisation (named before there were other streams: checkpoints use the names)
        self.register_buffer("latent_shift", stream_shift.clone())
        self.register_buffer("latent_scale", stream_scale.clone())
        table = ((books - shift) / scale).reshape(n_q * n_codes, dim).clone()
        if info.tables:
            self.table = nn.Parameter(table)
        else:
            self.register_buffer("table", table)
        self.register_buffer("offsets", torch.arange(n_q) * n_codes, persistent=False)

        if info.weights is not None:
            self.weights = nn.Parameter(torch.zeros(info.weights(n_q, dim)))
        else:
            self.register_parameter("weights", None)
            if info.alpha is not None:
                self.register_buffer("fixed_alpha", info.alpha(None, self.spec, n_q, tau))

    @property
    def out_dim(self) -> int:
        """The size of the output feature: D, or the stream's frame size (1 for `energy`)."""
        return self.stream_dim

    @property
    def n_streams(self) -> int:
        """Levels that `level_moments` returns: Q, or 1 for the stream variants (one continuous stream)."""
        return 1 if self.spec.stream is not None else self.n_q

    def fit_stream(self, mean: Tensor, std: Tensor) -> None:
        """Set the standardisation of a ``train``-normalised stream (`energy`) from the training
        split's frame mean [S] and standard deviation (a scalar)."""
        self.latent_shift.copy_(mean.reshape(self.latent_shift.shape))
        self.latent_scale.copy_(std.reshape(()).clamp_min(1e-6))

    def alpha(self) -> Tensor:
        """The effective level weights, [Q] or [Q, D] (QAF-Static), differentiable."""
        if self.weights is None:
            return self.fixed_alpha
        return self.spec.info.alpha(self.weights, self.spec, self.n_q, self.tau)

    def level_weights(self) -> Tensor | None:
        """alpha [Q] or [Q, D], detached on the CPU, for reports; None for the stream variants."""
        if self.spec.stream is not None:
            return None
        return self.alpha().detach().cpu()

    def n_trainable(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, codes: Tensor, latent: Tensor | None = None) -> Tensor:
        """codes [B, T, Q] (and latent [B, T, D] for `latent`) -> features [B, T, D]."""
        if self.spec.stream is not None:
            if latent is None:
                raise ValueError(f"variant {self.spec.name!r} needs the store's {self.spec.stream.name!r} stream, "
                                 "but the batch has none")
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
        standardised stream [B, T, S] of the stream variants, as one level ([B, 1, S])."""
        if self.spec.stream is not None:
            x = self.forward(codes, latent)
            weights = frame_mask(lengths.to(x.device), x.shape[1]).to(x.dtype)
            weights = (weights / lengths.to(x.device, x.dtype).unsqueeze(1)).unsqueeze(2)  # [B, T, 1]
            return (x * weights).sum(1, keepdim=True), (x.square() * weights).sum(1, keepdim=True)
        if codes.dim() != 3 or codes.shape[-1] != self.n_q:
            raise ValueError(f"codes must be [B, T, {self.n_q}], got shape {tuple(codes.shape)}")
        batch, frames, _ = codes.shape
        table = self.scaled_table()
        bags = (codes.long() + self.offsets).permute(0, 2, 1).reshape(batch * self.n_q, frames)  # (row, level)
        valid = frame_mask(lengths.to(codes.device), frames)  # [B, T]
        weights = valid.to(table.dtype) / lengths.to(codes.device, table.dtype).unsqueeze(1)
        weights = weights.unsqueeze(1).expand(batch, self.n_q, frames).reshape(batch * self.n_q, frames)
        mean = F.embedding_bag(bags, table, per_sample_weights=weights, mode="sum")
        square = F.embedding_bag(bags, table.square(), per_sample_weights=weights, mode="sum")
        return mean.view(batch, self.n_q, self.dim), square.view(batch, self.n_q, self.dim)
