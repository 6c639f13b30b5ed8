"""The paper's full system: time alignment, AttM, fused crops, the ssl / ssl+V variants end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from classify import budget
from classify.align import align_codec_to_ssl, overlap_matrix
from classify.attm import AttentiveMerging
from classify.checkpoint import CheckpointError, load_checkpoint
from classify.config import TrainConfig
from classify.evaluate import evaluate
from classify.fusion import FusedDetector
from classify.rebuild import for_store
from classify.sources import make_source
from classify.train import train
from store.reader import FeatureStore
from tests.synthetic import add_ssl_stream, synthetic_store, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ssl_store(tmp_path_factory) -> str:
    path = synthetic_store(str(tmp_path_factory.mktemp("fused") / "s.zarr"), n_per_split=16, frames=(20, 90),
                           failed_per_split=1)
    add_ssl_stream(path, starts={0: 4, 3: 10, 20: 2})
    return path


def test_pair_weights_are_the_overlap_of_the_frames_spans():
    torch.manual_seed(0)
    codec = torch.randn(2, 12, 5, dtype=torch.float64)  # 4 pairs
    expected = torch.from_numpy(overlap_matrix(8, 12)) @ codec  # from the spans in seconds
    torch.testing.assert_close(align_codec_to_ssl(codec), expected)
    weights = overlap_matrix(8, 12)
    assert np.allclose(weights.sum(1), 1.0) and np.allclose(weights.sum(0), 2 / 3)  # each codec frame counted once: 13.3 ms of 20
    with pytest.raises(ValueError, match="threes"):
        align_codec_to_ssl(codec[:, :11])


def test_a_fused_crop_takes_the_same_audio_from_both_streams(ssl_store):
    """Every SSL frame u of a batch sits beside the codec frames 1.5 u .. that cover its 20 ms, from
    the same utterance, also where the SSL stream holds a crop starting later."""
    store = FeatureStore(ssl_store)
    config = dataclasses.asdict(tiny_config(variant="ssl+mean"))
    model = for_store(config, store)
    source = make_source(store, model, config)
    frame_of = {tuple(code): k for k, code in enumerate(store.codes.tolist())}  # random codes: unique rows
    assert len(frame_of) == len(store.codes)
    row_of_frame = np.searchsorted(store.offsets, np.arange(len(store.codes)), side="right") - 1
    split = source.split(store, "train")
    checked = 0
    for pad in ("repeat", "zero"):
        generator = torch.Generator().manual_seed(1)
        for batch, _ in source.train_batches(split, 8, 45, pad, "none", generator):
            ssl, codes = batch.ssl.float().numpy(), batch.codes.numpy()
            assert codes.shape[1] == 45 and ssl.shape[1] == 30  # 0.6 s: 15 pairs
            for b in range(len(ssl)):
                for u_pos in range(int(batch.lengths[b])):
                    u, row = int(ssl[b, u_pos, 0, 0]), int(ssl[b, u_pos, 0, 1])
                    for c_pos in range(3 * (u_pos // 2), 3 * (u_pos // 2) + 3):
                        frame = frame_of[tuple(codes[b, c_pos])]
                        t = frame - store.offsets[row]
                        assert row_of_frame[frame] == row
                        pair = u - u % 2  # codec frames of the pair: [pair/50, (pair+2)/50) s
                        assert pair / 50 <= t / 75 and (t + 1) / 75 <= (pair + 2) / 50 + 1e-12
                    checked += 1
    assert checked > 500
    assert 0 in split.rows and source.first["codes"][0] == 6  # crop at SSL frame 4 -> codec 6


def test_attm_starts_uniform_ignores_padding_and_has_the_sizes_chosen():
    torch.manual_seed(0)
    attm = AttentiveMerging(4, 8, proj_dim=16)
    x = torch.randn(2, 10, 4, 8)
    lengths = torch.tensor([10, 6])
    assert torch.allclose(attm.layer_weights(x, lengths), torch.full((2, 4), 0.5))
    attm.w2.data.normal_()
    padded = x.clone()
    padded[1, 6:] = 100.0
    torch.testing.assert_close(attm(padded, lengths)[1, :6], attm(x, lengths)[1, :6])
    assert not torch.allclose(attm.layer_weights(x, lengths)[0], attm.layer_weights(x, lengths)[0, :1])

    def count(module):
        return sum(p.numel() for p in module.parameters())

    projection = 12 * 1024 * 512 + 512 + 512 * 1024 + 1024
    assert count(AttentiveMerging(12, 1024, norm=False)) == projection + 1024 + 2 * 12 * 6
    assert count(AttentiveMerging(12, 1024)) == projection + 1024 + 2 * 12 * 6 + 2 * 1024  # the norm's gain, bias
    released = 12 * 1024 * 3072 + 3072 + 3072 * 1024 + 1024  # the AttM release's L H -> L H / 4 -> H
    assert count(AttentiveMerging(12, 1024, proj_dim=3072).proj) == released == 40_898_560


def wavlm_large_front_and_first_layers(n_layers: int = 12) -> int:
    """WavLM-Large's parameters counted from torchaudio's own model (built on the meta device, no
    weights): everything but the transformer layers after the first ``n_layers``."""
    import torchaudio

    with torch.device("meta"):
        full = torchaudio.models.wavlm_large()
    later = full.encoder.transformer.layers[n_layers:]
    return sum(p.numel() for p in full.parameters()) - sum(p.numel() for layer in later for p in layer.parameters())


def test_trainable_share_counts_the_frozen_parts_used():
    from extract.codec import new_model
    from extract.ssl import architecture, count_used

    assert sum(p.numel() for p in new_model().encoder.parameters()) == budget.ENCODEC_ENCODER_PARAMETERS
    codec = {"n_q": 8, "codebook_size": 1024, "dim": 128}
    counted = wavlm_large_front_and_first_layers(12)
    assert count_used(architecture("wavlm-large"), 12) == counted == 164_290_976  # what the SSL stream records
    wavlm = {"model": "wavlm-large", "parameters_used": count_used(architecture("wavlm-large"), 12)}
    parts = budget.frozen_used(codec, wavlm)
    assert sum(parts.values()) == 7_425_792 + 8 * 1024 * 128 + 164_290_976
    assert budget.frozen_used(codec, None, codebooks=False) == {"encodec_encoder": 7_425_792}
    record = budget.share(7_000_000, parts)
    assert record["percent"] == pytest.approx(100 * 7e6 / 172_765_344) and "paper: 4.4 %" in budget.describe(record)


@pytest.mark.parametrize("variant", ["ssl", "ssl+mean", "ssl+qaf-static"])
def test_ssl_variants_train_evaluate_and_name_both_weights(ssl_store, tmp_path, variant):
    store = FeatureStore(ssl_store)
    config = tiny_config(variant=variant, epochs=3, ssl_kwargs={"proj_dim": 8, "layers": "1,3"})
    result = train(config, store, tmp_path / "run", log=lambda _: None)
    state = load_checkpoint(tmp_path / "run")
    assert state["ssl"]["weights"]["label"].startswith("SYNTHETIC SSL") and state["ssl"]["layers"] == [1, 2, 3]
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert written["trainable_share"]["trainable"] == result.n_trainable
    assert ("encodec_codebooks" in written["trainable_share"]["frozen_used"]) == (variant != "ssl")
    assert (result.level_weights is None) == (variant == "ssl")
    metrics = evaluate(tmp_path / "run", store, "eval", tmp_path / "eval", log=lambda _: None)
    assert metrics["ssl_weights"]["label"].startswith("SYNTHETIC SSL") and metrics["codec_weights"]["label"]
    assert metrics["n_scored"] == 16 and metrics["eer"] <= 0.25  # the SSL features carry the class


def test_a_checkpoint_is_refused_on_other_ssl_features(ssl_store, tmp_path):
    store = FeatureStore(ssl_store)
    train(tiny_config(variant="ssl", epochs=1, ssl_kwargs={"proj_dim": 8}), store, tmp_path / "run", log=lambda _: None)
    other = synthetic_store(str(tmp_path / "o.zarr"), n_per_split=16, frames=(20, 90), failed_per_split=1)
    add_ssl_stream(other, weights_sha256="1" * 64)
    with pytest.raises(CheckpointError, match="other SSL features.*SSL weights"):
        evaluate(tmp_path / "run", FeatureStore(other), "eval", tmp_path / "eval", log=lambda _: None)


def test_ssl_variant_names_and_options_are_checked():
    assert TrainConfig(variant="ssl+first:2").variant == "ssl+first:2"
    for bad in ("ssl+nope", "sslmean", "ssl+ssl", "ssl+"):
        with pytest.raises(ValueError, match="unknown weighting variant"):
            TrainConfig(variant=bad)
    with pytest.raises(ValueError, match="unknown key.*proj"):
        TrainConfig(variant="ssl", ssl_kwargs={"proj": 3})


def test_a_store_without_ssl_stream_says_so(tmp_path):
    store = FeatureStore(synthetic_store(str(tmp_path / "s.zarr"), n_per_split=4))
    with pytest.raises(ValueError, match="no stream 'ssl'"):
        for_store(dataclasses.asdict(tiny_config(variant="ssl")), store)
    assert not isinstance(for_store(dataclasses.asdict(tiny_config()), store), FusedDetector)


def test_attm_output_norm_keeps_the_head_out_of_saturation_whatever_the_ssl_offset():
    """SSL frames with a large offset common to every utterance (as untrained WavLM-Large's: mean
    norm ~20 per layer, std ~0.45 per dimension): without the norm AttM's output grows with the offset,
    with it every output frame has mean 0 and standard deviation 1 over its dimensions, and what
    differs between utterances is kept."""
    torch.manual_seed(0)
    offset = torch.randn(4, 64) * 3.0  # one vector per layer, the same for every utterance and frame
    x = offset + 0.45 * torch.randn(3, 20, 4, 64)
    lengths = torch.tensor([20, 20, 20])
    plain, normed = AttentiveMerging(4, 64, proj_dim=32, norm=False), AttentiveMerging(4, 64, proj_dim=32)
    normed.load_state_dict({**plain.state_dict(), "norm.weight": torch.ones(64), "norm.bias": torch.zeros(64)})
    big = offset * 30 + 0.45 * torch.randn(3, 20, 4, 64)
    assert plain(big, lengths).abs().mean() > 5 * plain(x, lengths).abs().mean()  # grows with the offset
    for inputs in (x, big):
        y = normed(inputs, lengths)
        torch.testing.assert_close(y.mean(-1), torch.zeros(3, 20), atol=1e-5, rtol=0)
        torch.testing.assert_close(y.std(-1, unbiased=False), torch.ones(3, 20), atol=1e-3, rtol=0)
    y = normed(x, lengths)
    assert (y[0] - y[1]).abs().mean() > 0.01  # utterances still differ


def test_a_checkpoint_from_before_the_norm_is_rebuilt_without_it(tmp_path):
    """A model saved before ``ssl_kwargs.norm`` existed (no attm.norm parameters, no key in its
    config) is rebuilt without the norm and loads; a new one gets it."""
    from classify.migrations import migrate
    from classify.rebuild import build

    def fused_detector(config, codebooks, source):
        return build(config, codebooks, source)

    def saved_config(config, state):  # how a version-1 checkpoint's config reads now
        return migrate({"format_version": 1, "config": config, "model": state})["config"]

    source = {"model": "wavlm-tiny", "layers": [1, 2], "hidden": 32}
    codebooks = torch.randn(2, 16, 8)
    config = {"variant": "ssl+mean", "tau": 1.0, "level_norm": True, "head": "lstm",
              "head_kwargs": {"proj_dim": 8, "hidden_dim": 8}, "ssl_kwargs": {"proj_dim": 16}}
    old = fused_detector({**config, "ssl_kwargs": {"proj_dim": 16, "norm": False}}, codebooks, source)
    state = old.state_dict()
    assert not any(k.startswith("attm.norm") for k in state)
    rebuilt = fused_detector(saved_config(config, state), codebooks, source)
    rebuilt.load_state_dict(state)  # strict: the same parameters
    assert isinstance(rebuilt.attm.norm, torch.nn.Identity)
    new = fused_detector(config, codebooks, source)
    assert isinstance(new.attm.norm, torch.nn.LayerNorm)
    # with the norm the ssl settings stay as they are (the migration adds only the entries made explicit
    # later: the views fields of version 2 and the dev view of version 3, at their defaults)
    assert saved_config(config, new.state_dict()) == {**config, "views": "", "view_clean_share": 0.5, "dev_view": ""}
