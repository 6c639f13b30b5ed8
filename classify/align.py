"""Time alignment of the 75 Hz codec stream to the 50 Hz SSL stream.

Codec frame t covers seconds [t / 75, (t + 1) / 75) (EnCodec 24 kHz: 320 samples at 24 kHz). SSL
frame u (WavLM: hop 320, receptive field 400 at 16 kHz) covers [u / 50, u / 50 + 0.025); its hop span
[u / 50, (u + 1) / 50) is where it starts and what no other frame's hop covers. The fused model works
at the SSL rate, and SSL frame u receives the codec features of the audio of its hop span: the mean of
the codec frames overlapping that span, weighted by the overlap. Two SSL frames (40 ms) span exactly
three codec frames, so the weights repeat every pair:

    ssl[2k]     = 2/3 codec[3k] + 1/3 codec[3k + 1]
    ssl[2k + 1] = 1/3 codec[3k + 1] + 2/3 codec[3k + 2]

Every codec frame's audio is counted once in total (its weights sum to 2/3: its 13.3 ms in units of
an SSL hop), none is skipped (nearest-frame mapping would drop every third codec frame), and the map is linear, so it
commutes with the level weighting. A pair of SSL frames is the unit of every crop and window: a crop
starts on an even SSL frame and takes 3 codec frames per SSL pair (see `classify.data`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

CODEC_RATE = 75
SSL_RATE = 50
CODEC_PER_PAIR = 3
SSL_PER_PAIR = 2
PAIR_SECONDS = SSL_PER_PAIR / SSL_RATE  # 0.04
PAIR_WEIGHTS = ((2 / 3, 1 / 3, 0.0), (0.0, 1 / 3, 2 / 3))
"""[SSL frame in pair, codec frame in pair]: the overlap of each SSL hop span with each codec frame."""


def align_codec_to_ssl(codec: Tensor) -> Tensor:
    """Codec-rate features [B, 3P, D] -> SSL-rate features [B, 2P, D] (see the module docstring)."""
    batch, frames, dim = codec.shape
    if frames % CODEC_PER_PAIR:
        raise ValueError(f"codec frames must come in threes (one per pair of SSL frames); got {frames}")
    weights = torch.tensor(PAIR_WEIGHTS, dtype=codec.dtype, device=codec.device)  # [2, 3]
    pairs = codec.view(batch, frames // CODEC_PER_PAIR, CODEC_PER_PAIR, dim)
    return torch.einsum("sc,bpcd->bpsd", weights, pairs).reshape(batch, -1, dim)


def overlap_matrix(n_ssl: int, n_codec: int) -> np.ndarray:
    """[n_ssl, n_codec]: the seconds of codec frame t's span inside SSL frame u's hop span, over the
    hop (20 ms); computed from the spans directly (the reference the pair weights are tested against)."""
    u = np.arange(n_ssl)[:, None]
    t = np.arange(n_codec)[None, :]
    start = np.maximum(u / SSL_RATE, t / CODEC_RATE)
    end = np.minimum((u + 1) / SSL_RATE, (t + 1) / CODEC_RATE)
    return np.clip(end - start, 0.0, None) * SSL_RATE
