"""Batched EnCodec encoding that gives every utterance the codes it would get alone.

EnCodec 24 kHz is causal: each convolution pads on the left, and the LSTM runs forward in time, so
zeros appended after an utterance never reach its frames. With one exception: a strided
convolution whose input length is not a multiple of its stride pads that input on the RIGHT with a
reflection of its last samples (`SConv1d`'s "extra padding"). In a padded batch that reflection
would be replaced by whatever follows the utterance. So before each strided convolution a
pre-forward hook writes, for each utterance, the reflection EnCodec would have written at its own
end, and tracks each utterance's valid length through the layer. The batch is padded to a multiple
of the hop (320), so the batch itself needs no extra padding anywhere.

What remains is float rounding: convolutions and matmuls may round differently for other tensor
shapes, and a code whose two nearest codewords are almost equidistant can then flip.
`tests/extract/test_encoder.py` measures that share; it is 0 on the tests' data.

Utterances shorter than ``min_batch_seconds`` are encoded alone (the left reflection of a layer
needs a few valid samples); files longer than ``window_seconds`` are cut into windows encoded as
separate items (bounded memory; frames near a window boundary then differ from a whole-file pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from encodec import EncodecModel
from encodec.modules.conv import SConv1d, get_extra_padding_for_conv1d

from .codec import FRAME_RATE, HOP_LENGTH


@dataclass
class Encoded:
    """One utterance: codes [frames, n_q] uint16 and, if requested, latent [frames, dim] float16."""

    codes: np.ndarray
    latent: np.ndarray | None
    n_windows: int


class BatchEncoder:
    """Encodes lists of waveforms ([1, T] float32 at 24 kHz) in padded batches, exactly per item."""

    def __init__(
        self,
        model: EncodecModel,
        bandwidth: float,
        device: str = "cpu",
        latent: bool = True,
        window_seconds: float = 60.0,
        min_batch_seconds: float = 0.5,
    ):
        self.model = model.eval().to(device)
        self.model.set_target_bandwidth(bandwidth)
        self.bandwidth = bandwidth
        self.device = device
        self.latent = latent
        self.window = int(window_seconds * model.sample_rate) // HOP_LENGTH * HOP_LENGTH
        self.min_batch = int(min_batch_seconds * model.sample_rate)
        if self.window <= 0:
            raise ValueError("window_seconds must be at least one frame (1/75 s)")
        self._lengths: list[int] | None = None  # valid lengths at the current layer, None = not batched
        for module in self.model.encoder.modules():
            if isinstance(module, SConv1d) and module.conv.conv.stride[0] > 1:
                module.register_forward_pre_hook(self._reflect_each_end)

    def _reflect_each_end(self, module: SConv1d, args: tuple[torch.Tensor]):
        if self._lengths is None:
            return None
        (x,) = args
        conv = module.conv.conv
        stride = conv.stride[0]
        kernel = (conv.kernel_size[0] - 1) * conv.dilation[0] + 1
        x = x.clone()
        lengths = []
        for i, length in enumerate(self._lengths):
            extra = get_extra_padding_for_conv1d(x[i : i + 1, :, :length], kernel, stride, kernel - stride)
            if extra:  # what pad1d(..., mode="reflect") appends: x[L-2], x[L-3], ...
                x[i, :, length : length + extra] = x[i, :, length - 1 - extra : length - 1].flip(-1)
            lengths.append((length + extra) // stride)
        self._lengths = lengths
        return (x,)

    @torch.no_grad()
    def _encode_items(self, items: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Codes [n_q, frames] and latent [dim, frames] per item, batched when that is exact."""
        batched = [i for i, w in enumerate(items) if w.shape[-1] >= self.min_batch]
        out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for i in (i for i in range(len(items)) if i not in set(batched)):
            out[i] = self._forward(items[i][None], None)[0]
        if len(batched) == 1:
            out[batched[0]] = self._forward(items[batched[0]][None], None)[0]
        elif batched:
            lengths = [items[i].shape[-1] for i in batched]
            width = -(-max(lengths) // HOP_LENGTH) * HOP_LENGTH
            batch = torch.zeros(len(batched), 1, width)
            for row, i in enumerate(batched):
                batch[row, :, : lengths[row]] = items[i]
            for row, result in zip(batched, self._forward(batch, lengths)):
                out[row] = result
        return [out[i] for i in range(len(items))]

    def _forward(self, batch: torch.Tensor, lengths: list[int] | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        self._lengths = list(lengths) if lengths is not None else None
        try:
            emb = self.model.encoder(batch.to(self.device))  # [B, dim, frames]
        finally:
            self._lengths = None
        codes = self.model.quantizer.encode(emb, FRAME_RATE, self.bandwidth).transpose(0, 1)  # [B, n_q, frames]
        frames = [-(-n // HOP_LENGTH) for n in lengths] if lengths is not None else [emb.shape[-1]]
        return [(codes[b, :, :n].cpu(), emb[b, :, :n].cpu()) for b, n in enumerate(frames)]

    def encode(self, wavs: list[torch.Tensor]) -> list[Encoded]:
        """Encode utterances; each ``wav`` is [1, T] at the codec's sample rate, T >= 1."""
        items, owner = [], []
        for u, wav in enumerate(wavs):
            for start in range(0, wav.shape[-1], self.window):
                items.append(wav[:, start : start + self.window])
                owner.append(u)
        results = self._encode_items(items)
        encoded = []
        for u in range(len(wavs)):
            parts = [r for r, o in zip(results, owner) if o == u]
            codes = torch.cat([c for c, _ in parts], dim=1).t().numpy().astype(np.uint16)
            latent = torch.cat([e for _, e in parts], dim=1).t().numpy().astype(np.float16) if self.latent else None
            encoded.append(Encoded(codes=np.ascontiguousarray(codes), latent=latent, n_windows=len(parts)))
        return encoded
