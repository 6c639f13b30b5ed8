"""Layer-sequential unit-variance scaling (LSUV) of a random EnCodec encoder.

Why: with EnCodec's random initialisation the signal shrinks layer after layer while the biases do
not, so an untrained encoder's frames are almost a constant vector (on offla19: standard deviation
over time 0.0008 around a mean vector of norm 0.34). Its codes then mostly encode float rounding.
LSUV (Mishkin and Matas, "All you need is a good init", ICLR 2016) rescales each layer, in forward
order, so that its output has unit variance on a batch of real data; the random encoder then passes
its input through to the frames.

What is scaled: every ``Conv1d`` of the SEANet encoder (18 for EnCodec 24 kHz): the first
convolution; in each of the 4 residual blocks the two block convolutions and the 1x1 shortcut; the 4
strided downsampling convolutions; the final convolution that gives the 128-dim frames. Each gets
one scalar factor ``s`` (the layer's random directions are kept, as in LSUV). Not scaled: the
2-layer LSTM. It is residual (``y = x + LSTM(x)``) and tanh-bounded, its input is the unit-variance
output of the last downsampling convolution, and the final convolution after it is normalised.

The variance: per output channel over batch and time (the input-dependent part; the channel means,
which the biases dominate, are left out), averaged over channels, in float64. Only the weight is
scaled, not the bias, so that variance scales by exactly ``s**2`` and one pass per layer is exact.
EnCodec's convolutions are weight-normed (``weight = weight_g * weight_v / |weight_v|``): there the
factor multiplies ``weight_g``, a parameter, so it is in ``state_dict()`` and survives save and load.

One forward pass: a forward hook on each convolution measures its output, rescales its weight and
returns the rescaled output, so every later layer sees what a fresh pass with the new weights would
give it: LSUV's layer-by-layer passes, in one. Deterministic for a given batch and thread count (the
untrained codec is built with one thread; see `extract.codec.build_untrained`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

MIN_VARIANCE = 1e-20
"""A layer whose output varies less than this (silent calibration audio) is left as it is."""


def calibration_batch(audio: Sequence[torch.Tensor], segments: int, segment_samples: int) -> torch.Tensor:
    """A fixed batch of the corpus's audio: clips ([1, T] each) concatenated in the given order and
    cut into ``segments`` rows of ``segment_samples`` (fewer rows, or one shorter row, when there is
    not that much audio). Returns [rows, 1, samples]."""
    if not audio:
        raise ValueError("no audio for the encoder's variance normalisation")
    signal = torch.cat([clip.reshape(-1) for clip in audio])
    rows = min(segments, signal.numel() // segment_samples)
    if rows == 0:
        return signal[None, None]
    return signal[: rows * segment_samples].reshape(rows, 1, segment_samples).clone()


def output_variance(x: torch.Tensor) -> float:
    """x [batch, channels, time] -> mean over channels of the variance over batch and time (float64)."""
    per_channel = x.detach().to(torch.float64).transpose(0, 1).reshape(x.shape[1], -1)
    return float(per_channel.var(dim=1, unbiased=False).mean())


def scale_conv_(conv: nn.Conv1d, factor: float) -> None:
    """Multiply a convolution's weight by ``factor`` in place (its ``weight_g`` when weight-normed)."""
    with torch.no_grad():
        if hasattr(conv, "weight_g"):
            conv.weight_g.mul_(factor)
        else:
            conv.weight.mul_(factor)


@torch.no_grad()
def normalise_encoder(encoder: nn.Module, batch: torch.Tensor) -> list[float]:
    """Scale every Conv1d of ``encoder`` so that its output on ``batch`` ([B, 1, T]) has unit variance.

    Returns the factors, in forward order. The encoder's output on ``batch`` afterwards has unit
    variance per the definition of `output_variance` (to float rounding).
    """
    factors: list[float] = []

    def rescale(conv: nn.Conv1d, _args, out: torch.Tensor) -> torch.Tensor:
        variance = output_variance(out)
        factor = 1.0 if variance < MIN_VARIANCE else variance**-0.5
        scale_conv_(conv, factor)
        factors.append(factor)
        if conv.bias is None:
            return out * factor
        bias = conv.bias[None, :, None]
        return (out - bias) * factor + bias  # = conv1d(x, factor * weight, bias)

    handles = [m.register_forward_hook(rescale) for m in encoder.modules() if isinstance(m, nn.Conv1d)]
    try:
        encoder(batch)
    finally:
        for handle in handles:
            handle.remove()
    return factors
