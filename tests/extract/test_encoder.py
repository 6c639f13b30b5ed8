"""Batched encoding gives each utterance the codes and latent it gets when encoded alone."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from extract.audio import load_audio
from extract.codec import build_untrained
from extract.datasets import get_dataset
from extract.encoder import BatchEncoder


@pytest.fixture(scope="module")
def corpus_wavs(tiny_corpus):
    table = get_dataset("asv19").load(tiny_corpus).table
    return [load_audio(p) for p in table["path"]]


@pytest.fixture(scope="module")
def model(corpus_wavs):
    """The product's untrained codec (LSUV encoder, k-means codebooks), fit on other audio than the
    tests encode: shifted, rescaled copies of the corpus (5,300 frames). Fit on the very frames it
    encodes, at ~2.6 frames per codeword, k-means leaves deep-level codewords 1e-9 apart that any
    rounding flips; on a real corpus it gets 8 frames per codeword (kmeans_frames 8192)."""
    copies = [w[:, shift:] * gain for gain, shift in ((0.5, 80), (2.0, 160)) for w in corpus_wavs]
    return build_untrained(copies, n_q=8, kmeans_frames=4096, kmeans_iters=5, lsuv_seconds=4)[0]


def odd_lengths(wavs):
    """Cut the corpus's utterances to lengths that are not multiples of any stride, plus a short one."""
    cuts = [w[:, : w.shape[-1] - k * 37 - 1] for k, w in enumerate(wavs[:6])]
    return cuts + [wavs[0][:, :5000]]


def quantization_error(model, latent: torch.Tensor, codes: np.ndarray) -> float:
    """|latent - decode(codes)|: how well the codes represent the frames."""
    q = torch.from_numpy(codes.astype(np.int64)).t()[:, None]  # [n_q, 1, frames]
    return float((latent - model.quantizer.decode(q)[0]).abs().mean())


def test_batched_equals_one_by_one(model, corpus_wavs):
    """The encoder output is the same batched or alone (to float rounding), and rounding flips at
    most 1 % of frames' codes (7.7 % with the untrained codec before LSUV); where it flips one, the
    codes represent the frame as well. The issue's target, 0.1 %, is measured on offla19 (BENCHMARKS
    section 9: no frame flips); this corpus's codec is fitted on a few seconds, and its flips depend on
    the machine's float kernels (at most 1 of 1,138 frames on one machine of this project, 7 on another)."""
    wavs = odd_lengths(corpus_wavs)
    encoder = BatchEncoder(model, 6.0, window_seconds=600)
    batched = encoder._encode_items(wavs)
    alone = [encoder._encode_items([w])[0] for w in wavs]
    differ = total = 0
    for (codes_b, emb_b), (codes_a, emb_a), w in zip(batched, alone, wavs):
        frames = -(-w.shape[-1] // 320)
        assert codes_b.shape == codes_a.shape == (8, frames)
        assert torch.allclose(emb_b, emb_a, atol=1e-5 * float(emb_a.abs().max()), rtol=1e-5)
        differ += int((codes_b != codes_a).any(dim=0).sum())
        total += frames
        with torch.no_grad():
            err_b = quantization_error(model, emb_a, codes_b.t().numpy())
            err_a = quantization_error(model, emb_a, codes_a.t().numpy())
        assert err_b <= err_a + 1e-4 * float(emb_a.abs().mean())
    assert total > 1000
    assert differ <= 0.01 * total, f"{differ} of {total} frames' codes differ between batched and one-by-one"


def test_one_by_one_equals_encodec_encode(model, corpus_wavs):
    """Alone, an utterance gets exactly EnCodec's codes and encoder output (the folded weight
    norms compute the same weights), and the caller's model is left as it was."""
    hooks = sum(len(m._forward_pre_hooks) for m in model.modules())
    encoder = BatchEncoder(model, 6.0)
    for w in odd_lengths(corpus_wavs)[:4]:
        with torch.no_grad():
            expected = model.encode(w[None])[0][0][0].t().numpy()
            latent = model.encoder(w[None])[0].t().numpy()
        got = encoder.encode([w])[0]
        assert np.array_equal(got.codes, expected)
        assert np.array_equal(got.latent, latent.astype(np.float16))
    assert sum(len(m._forward_pre_hooks) for m in model.modules()) == hooks
    assert any(name.endswith("weight_g") for name, _ in model.encoder.named_parameters())
    assert not any(name.endswith("weight_g") for name, _ in encoder.encoder.named_parameters())


def test_long_files_are_encoded_in_windows(model, corpus_wavs):
    wav = torch.cat(corpus_wavs[:2], dim=1)
    encoder = BatchEncoder(model, 6.0, window_seconds=1.0)
    result = encoder.encode([wav])[0]
    assert result.n_windows == -(-wav.shape[-1] // 24000)
    assert result.codes.shape[0] == sum(-(-min(24000, wav.shape[-1] - s) // 320) for s in range(0, wav.shape[-1], 24000))
    first = BatchEncoder(model, 6.0).encode([wav[:, :24000]])[0]
    np.testing.assert_allclose(result.latent[:75].astype(np.float32), first.latent.astype(np.float32), atol=2e-3, rtol=2e-3)  # float16 ulps


def test_reflection_hook_writes_what_encodecs_pad1d_appends(model):
    """The in-place hook gives each item of a padded batch the right padding EnCodec's own
    SConv1d would give it alone: pad1d(x[:L], (0, extra), mode="reflect")."""
    from encodec.modules.conv import SConv1d, get_extra_padding_for_conv1d, pad1d

    encoder = BatchEncoder(model, 6.0)
    layer = next(m for m in encoder.encoder.modules() if isinstance(m, SConv1d) and m.conv.conv.stride[0] == 8)
    conv = layer.conv.conv
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    lengths = [97, 90, 64, 33, 18]
    x = torch.randn(len(lengths), 3, 110)
    expected = []
    for i, length in enumerate(lengths):
        extra = get_extra_padding_for_conv1d(x[i : i + 1, :, :length], kernel, stride, kernel - stride)
        expected.append(pad1d(x[i : i + 1, :, :length], (0, extra), mode="reflect")[0])
    assert {e.shape[-1] - n for e, n in zip(expected, lengths)} != {0}  # some items need padding
    original = x.clone()
    encoder._lengths = list(lengths)
    try:
        assert encoder._reflect_each_end(layer, (x,)) is None
        after = encoder._lengths
    finally:
        encoder._lengths = None
    for i, want in enumerate(expected):
        assert torch.equal(x[i, :, : want.shape[-1]], want)
        assert torch.equal(x[i, :, want.shape[-1] :], original[i, :, want.shape[-1] :])  # nothing else moved
    assert after == [e.shape[-1] // stride for e in expected]


def test_long_files_are_encoded_in_passes_within_the_batch_budget(model, corpus_wavs):
    """A long file's windows are packed into forward passes of at most batch_seconds of padded
    audio (not one pass over the whole file), with the same result."""
    wav = torch.cat(corpus_wavs[:3], dim=1)
    windows = -(-wav.shape[-1] // 24000)
    passes: list[tuple[int, ...]] = []
    budgeted = BatchEncoder(model, 6.0, window_seconds=1.0, batch_seconds=2.0)
    forward = budgeted._forward
    budgeted._forward = lambda batch, lengths: passes.append(tuple(batch.shape)) or forward(batch, lengths)
    got = budgeted.encode([wav])[0]
    assert max(b * t for b, _, t in passes) <= 2 * 24000 and len(passes) >= windows // 2
    whole = BatchEncoder(model, 6.0, window_seconds=1.0).encode([wav])[0]
    assert got.n_windows == whole.n_windows == windows
    np.testing.assert_allclose(got.latent.astype(np.float32), whole.latent.astype(np.float32), atol=2e-3, rtol=2e-3)  # float16 ulps


def test_staging_on_the_cpu_is_the_batch_itself(model):
    """The GPU path's staging (pinned memory, non-blocking copy) is a plain no-op on the CPU."""
    encoder = BatchEncoder(model, 6.0)
    batch = torch.randn(2, 1, 640)
    assert encoder._stage(batch) is batch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the CPU path is tested above)")
def test_gpu_path_stages_pinned_batches_and_agrees_with_the_cpu(model, corpus_wavs):
    """On a GPU: padded batches are built in pinned memory, staged to the device, quantized there,
    and come back to the CPU; the encoder output equals the CPU's to float rounding (TF32 off),
    and where a code flips the codes represent the frames as well."""
    wavs = odd_lengths(corpus_wavs)
    gpu = BatchEncoder(copy.deepcopy(model), 6.0, device="cuda", window_seconds=600)
    codebooks = list(gpu.model.quantizer.buffers())
    assert codebooks and all(b.is_cuda for b in codebooks)
    staged: list[tuple[bool, bool]] = []
    stage = gpu._stage
    gpu._stage = lambda batch: (out := stage(batch), staged.append((batch.is_pinned(), out.is_cuda)))[0]
    on_gpu = gpu._encode_items(wavs)
    on_cpu = BatchEncoder(model, 6.0, window_seconds=600)._encode_items(wavs)
    assert any(pinned for pinned, _ in staged) and all(cuda for _, cuda in staged)
    for (codes_g, emb_g), (codes_c, emb_c) in zip(on_gpu, on_cpu):
        assert codes_g.device.type == emb_g.device.type == "cpu" and codes_g.shape == codes_c.shape
        assert torch.allclose(emb_g, emb_c, atol=1e-5, rtol=1e-4)
        with torch.no_grad():
            assert quantization_error(model, emb_c, codes_g.t().numpy()) <= \
                quantization_error(model, emb_c, codes_c.t().numpy()) + 1e-4 * float(emb_c.abs().mean())
