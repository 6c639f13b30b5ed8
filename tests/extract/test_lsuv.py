"""The untrained codec's encoder: variance-normalised layer by layer (LSUV), reproducibly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from extract.audio import load_audio
from extract.calibration import init_codebooks
from extract.codec import build_untrained, new_model, state_dict_bytes
from extract.datasets import get_dataset
from extract.lsuv import calibration_batch, normalise_encoder, output_variance


@pytest.fixture(scope="module")
def wavs(tiny_corpus):
    table = get_dataset("asv19").load(tiny_corpus).table
    return [load_audio(p) for p in table["path"]]


def conv_variances(encoder: nn.Module, batch: torch.Tensor) -> list[float]:
    """Output variance (per channel over batch and time, mean over channels) of each Conv1d, in forward order."""
    seen: list[float] = []

    def record(_module, _args, out):
        per_channel = out.double().transpose(0, 1).reshape(out.shape[1], -1)
        seen.append(float(per_channel.var(dim=1, unbiased=False).mean()))

    handles = [m.register_forward_hook(record) for m in encoder.modules() if isinstance(m, nn.Conv1d)]
    with torch.no_grad():
        encoder(batch)
    for h in handles:
        h.remove()
    return seen


def test_calibration_batch_cuts_the_audio_in_order():
    clips = [torch.arange(0, 5.0)[None], torch.arange(5, 12.0)[None]]
    assert calibration_batch(clips, segments=3, segment_samples=4).tolist() == [[[0, 1, 2, 3]], [[4, 5, 6, 7]], [[8, 9, 10, 11]]]
    assert calibration_batch(clips, segments=9, segment_samples=5).shape == (2, 1, 5)  # not enough audio: fewer rows
    assert calibration_batch(clips, segments=2, segment_samples=50).shape == (1, 1, 12)  # less than one row
    assert output_variance(torch.tensor([[[1.0, 3.0], [5.0, 5.0]]])) == pytest.approx(0.5)  # channels: var 1 and 0


def test_every_convolution_has_unit_variance_after_a_save_load_round_trip(wavs):
    torch.manual_seed(0)
    model = new_model()
    batch = calibration_batch(wavs, segments=3, segment_samples=24000)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert max(abs(v - 1) for v in conv_variances(model.encoder, batch)) > 0.5
    factors = normalise_encoder(model.encoder, batch)

    fresh = new_model()  # the factors must live in the state dict (weight_g of the weight-normed convs)
    fresh.load_state_dict(model.state_dict())
    variances = conv_variances(fresh.encoder, batch)
    assert len(factors) == len(variances) == 18
    assert all(abs(v - 1) < 1e-3 for v in variances), variances
    after = fresh.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if k.startswith("encoder.") and k.endswith("weight_g")}
    g = "encoder.model.15.conv.conv.weight_g"  # the final conv: g scaled by its factor, direction kept
    assert torch.allclose(after[g], before[g] * factors[-1], rtol=1e-6)


def test_frames_follow_the_input(wavs):
    """The plain random encoder's frames are almost constant; after LSUV they vary over time."""
    torch.manual_seed(0)
    model = new_model()
    held_out = calibration_batch(wavs[7:], segments=2, segment_samples=24000)

    def std_over_time() -> float:
        with torch.no_grad():
            return float(model.encoder(held_out).std(dim=-1).mean())

    plain = std_over_time()
    normalise_encoder(model.encoder, calibration_batch(wavs[:7], segments=3, segment_samples=24000))
    assert std_over_time() > 0.3 and std_over_time() > 100 * plain


def test_untrained_codec_is_reproducible_whatever_the_thread_count(wavs):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first = build_untrained(wavs, n_q=2, kmeans_frames=1024, kmeans_iters=2, lsuv_seconds=2)
        torch.set_num_threads(1)
        second = build_untrained(wavs, n_q=2, kmeans_frames=1024, kmeans_iters=2, lsuv_seconds=2)
    finally:
        torch.set_num_threads(threads)
    assert first[1] == second[1] and first[2] == second[2]
    assert torch.get_num_threads() == threads
    other_seed = build_untrained(wavs, n_q=2, seed=1, kmeans_frames=1024, kmeans_iters=2, lsuv_seconds=2)
    assert other_seed[2].sha256 != first[2].sha256
    info = first[2]
    assert info.source == "untrained" and not info.trained and "UNTRAINED" in info.label
    assert "LSUV on 2 s" in info.origin and "k-means on 1024 frames" in info.origin


def test_without_lsuv_it_is_the_earlier_untrained_codec(wavs):
    """lsuv=False rebuilds the plain seeded random encoder + k-means (what the benchmark compares with)."""
    model = build_untrained(wavs, n_q=2, seed=4, kmeans_frames=1024, kmeans_iters=2, lsuv=False)[0]
    torch.manual_seed(4)
    expected = new_model()
    torch.manual_seed(4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        init_codebooks(expected, wavs, 2, 1024, 2)
    finally:
        torch.set_num_threads(threads)
    assert state_dict_bytes(model) == state_dict_bytes(expected)
