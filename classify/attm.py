"""Attentive merging (AttM) of the hidden layers of a frozen SSL model.

Definition: Pan et al., "Attentive Merging of Hidden Embeddings from Pre-trained Speech Model for
Anti-spoofing Detection", Interspeech 2024 (Pan, Liu, Sailor, Wang); the authors' release is
github.com/pandarialTJU/AttM_INTERSPEECH24 (``model_file.py``, class ``AttM``). For layers
x [B, T, L, H]:

1. per-layer time average:                       m = mean_t x             [B, L, H]
2. a scalar per layer:                           s = SiLU(m w)            [B, L]     w [H]
3. a two-layer bottleneck over the layers:       g = sigmoid(SiLU(s W1) W2)  [B, L]  W1 [L, L/2], W2 [L/2, L]
4. the weighted layers, concatenated per frame:  z[t] = (g_1 x[t, 1], ..., g_L x[t, L])   [B, T, L H]
5. a projection back to the hidden size:         y = Linear(SiLU(Linear(z)))  [B, T, out]
6. (``norm``, not in the release) a LayerNorm of each frame:  LayerNorm(y)   [B, T, out]

Differences from the release, chosen knowingly:

* The time average is over each row's valid frames (the release averages padded batches whole).
* ``W2`` starts at zero, so every layer weight starts at sigmoid(0) = 1/2: uniform (the release
  draws w, W1, W2 from N(0, 1)); w and W1 start small and random so that gradients reach them.
* The projection's inner size is ``proj_dim`` (default 512). The release uses L H / 4: at 12 x 1024
  inputs that is 12288 -> 3072 -> 1024, 40.9 M parameters, which alone is 25 % of the frozen
  WavLM-Large layers it merges and far above the paper's 4.4 % trainable share; 12288 -> 512 -> 1024
  holds 6.8 M. (The release also fine-tunes all 24 WavLM layers; the paper keeps WavLM frozen and
  merges the first 12.)
* ``norm`` (default on): a LayerNorm (learnable gain and bias) over each output frame. The frozen
  SSL frames carry a large offset common to all utterances (untrained WavLM-Large: a mean vector of
  norm about 17-20 per layer against a standard deviation of about 0.45 per dimension over time);
  the projection passes it on, and without the norm the head's LSTM received inputs of mean size
  234 that varied by 5 between utterances: 98 % of its gate pre-activations beyond +-4, its output
  constant, training stuck at chance on 4 of 9 trials of the paper's sweep on offla19 (BENCHMARKS
  section 5). The norm also puts the merged SSL frames on the scale of the codec's standardised
  levels (``level_norm``, the default) they are concatenated with. ``norm=False`` is the release's AttM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from classify.heads import frame_mask


class AttentiveMerging(nn.Module):
    """x [B, T, L, H] and lengths [B] (valid frames) -> merged frames [B, T, out_dim]."""

    def __init__(self, n_layers: int, hidden: int, proj_dim: int = 512, out_dim: int | None = None,
                 norm: bool = True) -> None:
        super().__init__()
        self.n_layers, self.hidden = n_layers, hidden
        self.out_dim = out_dim or hidden
        bottleneck = max(1, n_layers // 2)
        self.w = nn.Parameter(torch.randn(hidden) / hidden**0.5)
        self.w1 = nn.Parameter(torch.randn(n_layers, bottleneck) / n_layers**0.5)
        self.w2 = nn.Parameter(torch.zeros(bottleneck, n_layers))
        self.proj = nn.Sequential(nn.Linear(n_layers * hidden, proj_dim), nn.SiLU(), nn.Linear(proj_dim, self.out_dim))
        self.norm = nn.LayerNorm(self.out_dim) if norm else nn.Identity()

    def layer_weights(self, x: Tensor, lengths: Tensor) -> Tensor:
        """g [B, L] in (0, 1): each layer's weight for each utterance (steps 1-3)."""
        valid = frame_mask(lengths.to(x.device), x.shape[1]).to(x.dtype)
        mean = (x * valid[:, :, None, None]).sum(1) / lengths.to(x.device, x.dtype).clamp_min(1)[:, None, None]
        scalar = F.silu(mean @ self.w)  # [B, L]
        return torch.sigmoid(F.silu(scalar @ self.w1) @ self.w2)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        batch, frames, layers, hidden = x.shape
        if (layers, hidden) != (self.n_layers, self.hidden):
            raise ValueError(f"AttM expects [B, T, {self.n_layers}, {self.hidden}], got {tuple(x.shape)}")
        g = self.layer_weights(x, lengths)
        merged = (x * g[:, None, :, None]).reshape(batch, frames, layers * hidden)
        return self.norm(self.proj(merged))
