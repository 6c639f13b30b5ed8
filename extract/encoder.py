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
Items are packed, longest first, into forward passes of at most ``batch_seconds`` of padded audio,
so that one long file's windows never make one huge batch.

The encoder is a copy of the model's with its weight norms folded into plain weights (computed
once, not at every forward; the same values). On a GPU the padded batch is assembled in pinned host memory and copied without blocking, the
quantizer runs on the device, and each batch's codes and latent come back in one copy each. TF32
is switched off: the encoder runs in true float32 everywhere, as on the CPU.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from encodec import EncodecModel
from encodec.modules.conv import SConv1d, get_extra_padding_for_conv1d
from torch.nn.utils import remove_weight_norm
from torch.nn.utils.weight_norm import WeightNorm

from common.malloc import keep_large_blocks

from .codec import FRAME_RATE, HOP_LENGTH


@dataclass
class Encoded:
    """One utterance: codes [frames, n_q] uint16 and, if requested, latent [frames, dim] float16."""

    codes: np.ndarray
    latent: np.ndarray | None
    n_windows: int


def _frozen_copy(encoder: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``encoder`` with its weight norms folded into plain weights: EnCodec recomputes
    every convolution's weight g * v / |v| at every forward; folding computes the same weights once
    (same function, same values: the outputs are bit for bit the same). The copy is ours, so our
    hooks and the folding leave the caller's model as it was."""
    memo: dict[int, torch.Tensor] = {}
    for module in encoder.modules():  # the weights last computed by a hook may carry autograd history
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm) and isinstance(weight := getattr(module, hook.name, None), torch.Tensor):
                memo[id(weight)] = weight.detach().clone()
    encoder = copy.deepcopy(encoder, memo)
    for module in encoder.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, WeightNorm):
                remove_weight_norm(module, hook.name)
    return encoder


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
        batch_seconds: float | None = None,
    ):
        keep_large_blocks()  # windows of long files: no mmap/munmap of each layer's activations (common.malloc)
        self.model = model.eval().to(device)
        self.model.set_target_bandwidth(bandwidth)
        self.encoder = _frozen_copy(self.model.encoder)
        self.bandwidth = bandwidth
        self.device = torch.device(device)
        self.latent = latent
        self.window = int(window_seconds * model.sample_rate) // HOP_LENGTH * HOP_LENGTH
        self.min_batch = int(min_batch_seconds * model.sample_rate)
        self.budget = None if batch_seconds is None else max(1, int(batch_seconds * model.sample_rate))
        if self.window <= 0:
            raise ValueError("window_seconds must be at least one frame (1/75 s)")
        if self.device.type == "cuda":  # float32 as on the CPU, not TF32 (which would flip near-tie codes)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self._lengths: list[int] | None = None  # valid lengths at the current layer, None = not batched
        for module in self.encoder.modules():
            if isinstance(module, SConv1d) and module.conv.conv.stride[0] > 1:
                module.register_forward_pre_hook(self._reflect_each_end)

    def _reflect_each_end(self, module: SConv1d, args: tuple[torch.Tensor]) -> None:
        """Write, in place, each item's right reflection padding after its valid end (x [B, C, T]).

        In place is safe: a strided conv's input is the fresh output of the ELU before it, read by
        nothing else, and the samples written lie beyond the item's valid length. One gather and one
        scatter for the whole batch (a few kernel launches per layer on a GPU, not a few per item)."""
        if self._lengths is None:
            return None
        (x,) = args
        conv = module.conv.conv
        stride = conv.stride[0]
        kernel = (conv.kernel_size[0] - 1) * conv.dilation[0] + 1
        rows: list[int] = []
        src: list[int] = []
        dst: list[int] = []
        lengths = []
        for i, length in enumerate(self._lengths):
            extra = get_extra_padding_for_conv1d(x[i : i + 1, :1, :length], kernel, stride, kernel - stride)
            # what pad1d(..., mode="reflect") appends after x[L-1]: x[L-2], x[L-3], ..., x[L-1-extra]
            rows += [i] * extra
            src += range(length - 2, length - 2 - extra, -1)
            dst += range(length, length + extra)
            lengths.append((length + extra) // stride)
        if rows:
            index = torch.tensor([rows, src, dst], dtype=torch.long).to(x.device, non_blocking=True)
            x[index[0], :, index[2]] = x[index[0], :, index[1]]
        self._lengths = lengths
        return None

    def _stage(self, batch: torch.Tensor) -> torch.Tensor:
        """``batch`` on the device; on a GPU through pinned memory, without blocking the host."""
        if self.device.type != "cuda":
            return batch.to(self.device)
        if not batch.is_pinned():
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True)

    def _packs(self, lengths: list[int]) -> list[list[int]]:
        """Item indices packed longest first into passes of at most ``budget`` padded samples."""
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        if self.budget is None:
            return [order] if order else []
        packs: list[list[int]] = []
        for i in order:
            if packs and (len(packs[-1]) + 1) * lengths[packs[-1][0]] <= self.budget:
                packs[-1].append(i)
            else:
                packs.append([i])
        return packs

    @torch.inference_mode()
    def _encode_items(self, items: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Codes [n_q, frames] and latent [dim, frames] per item (on the CPU), batched when that is exact."""
        batched = [i for i, w in enumerate(items) if w.shape[-1] >= self.min_batch]
        out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for i in (i for i in range(len(items)) if i not in set(batched)):
            out[i] = self._forward(items[i][None], None)[0]
        for pack in self._packs([items[i].shape[-1] for i in batched]):
            chosen = [batched[k] for k in pack]
            if len(chosen) == 1:
                out[chosen[0]] = self._forward(items[chosen[0]][None], None)[0]
                continue
            lengths = [items[i].shape[-1] for i in chosen]
            width = -(-max(lengths) // HOP_LENGTH) * HOP_LENGTH
            batch = torch.zeros(len(chosen), 1, width, pin_memory=self.device.type == "cuda")
            for row, i in enumerate(chosen):
                batch[row, :, : lengths[row]] = items[i]
            for i, result in zip(chosen, self._forward(batch, lengths)):
                out[i] = result
        return [out[i] for i in range(len(items))]

    def _forward(self, batch: torch.Tensor, lengths: list[int] | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Encode and quantize ``batch`` [B, 1, T] on the device; per item (codes [n_q, frames], latent
        [dim, frames]) on the CPU. ``lengths``: valid samples per item (None: one item, unpadded)."""
        self._lengths = list(lengths) if lengths is not None else None
        try:
            emb = self.encoder(self._stage(batch))  # [B, dim, frames]
        finally:
            self._lengths = None
        codes = self.model.quantizer.encode(emb, FRAME_RATE, self.bandwidth).transpose(0, 1)  # [B, n_q, frames]
        codes, emb = codes.cpu(), emb.cpu()  # one copy each per batch (no-ops on the CPU)
        frames = [-(-n // HOP_LENGTH) for n in lengths] if lengths is not None else [emb.shape[-1]]
        return [(codes[b, :, :n], emb[b, :, :n]) for b, n in enumerate(frames)]

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
