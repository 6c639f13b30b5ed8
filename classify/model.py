"""The trainable spoof detector: hierarchy weighting followed by a classifier head."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from classify.heads import build_head
from classify.variants import VariantSpec
from classify.weighting import HierarchyWeighting


class SpoofDetector(nn.Module):
    """codes [B, T, Q], lengths [B] (and latent [B, T, D]) -> logits [B], higher = bona fide."""

    def __init__(self, weighting: HierarchyWeighting, head: nn.Module) -> None:
        super().__init__()
        self.weighting = weighting
        self.head = head

    def forward(self, codes: Tensor, lengths: Tensor, latent: Tensor | None = None) -> Tensor:
        """codes [B, T, Q], lengths [B], latent [B, T, D] or None -> logits [B]. A head that pools
        per level (``head.per_level``) gets each level's moments instead of the fused frames."""
        if getattr(self.head, "per_level", False):
            return self.head.from_moments(*self.weighting.level_moments(codes, lengths, latent))
        return self.head(self.weighting(codes, latent), lengths)

    def n_trainable(self) -> int:
        """Number of trainable parameters (weighting and head)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def build_model(codebooks: Tensor, variant: str | VariantSpec, head: str = "lstm", tau: float = 1.0,
                head_kwargs: dict[str, Any] | None = None, level_norm: bool = True) -> SpoofDetector:
    """A SpoofDetector over codebooks [Q, K, D] with the named weighting variant and head
    (``level_norm``: see `HierarchyWeighting`)."""
    weighting = HierarchyWeighting(codebooks, variant, tau, level_norm)
    return SpoofDetector(weighting, build_head(head, weighting.out_dim, weighting.n_streams, **(head_kwargs or {})))
