"""Batches from the store: splits, code range check, crops and padding, balance, scoring segments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from classify.data import (
    DataError,
    class_weights,
    crop_index,
    epoch_order,
    eval_segments,
    load_split,
)
from classify.sources import codec_source
from store.reader import FeatureStore
from tests.synthetic import synthetic_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    path = synthetic_store(str(tmp_path_factory.mktemp("data") / "s.zarr"), n_per_split=12, failed_per_split=2)
    return FeatureStore(path)


def test_split_holds_ok_utterances_with_their_frames(store):
    split = load_split(store, "dev")
    table = store.utterances
    ok = table[(table["split"] == "dev") & (table["status"] == "ok")]
    assert split.utt_ids == ok["utt_id"].tolist() and len(split) == 12 and split.n_failed == 2
    assert (split.starts == ok["frame_offset"].to_numpy()).all()
    assert (split.lengths == ok["n_frames"].to_numpy()).all()
    assert (split.is_bonafide == (ok["label"] == "bonafide").to_numpy()).all()
    assert split.attacks == ok["system"].tolist() and split.codecs == ok["codec"].tolist()


def test_missing_split_names_store_and_splits(store):
    with pytest.raises(DataError, match=r"s\.zarr.*no split 'test'.*dev, eval, train"):
        load_split(store, "test")


def test_one_class_split_is_refused_with_store_and_split(tmp_path):
    store = FeatureStore(synthetic_store(str(tmp_path / "one.zarr"), n_per_split=6, spoof_only=("dev",)))
    with pytest.raises(DataError, match=r"one\.zarr: split 'dev' has spoof utterances only"):
        load_split(store, "dev")
    assert len(load_split(store, "dev", both_classes=False)) == 6


def test_code_out_of_range_is_refused(tmp_path):
    path = synthetic_store(str(tmp_path / "bad.zarr"), n_per_split=4, codebook_size=64)
    zarr.open_group(path, mode="r+")["codes"][5, 3] = 64
    with pytest.raises(DataError, match=r"bad\.zarr: a code equals 64.*below the codebook size 64"):
        codec_source(FeatureStore(path))


def test_latent_variant_needs_a_latent(tmp_path):
    store = FeatureStore(synthetic_store(str(tmp_path / "nolat.zarr"), n_per_split=4, latent=False))
    with pytest.raises(DataError, match="no(ne)?.*--latent"):
        codec_source(store, "latent")


def test_long_utterance_crop_is_contiguous_at_the_drawn_offset():
    index, valid, lengths = crop_index(np.array([100]), np.array([50]), 10, "repeat", np.array([0.5]))
    offset = int(np.floor(0.5 * 41))
    assert (index[0] == 100 + offset + np.arange(10)).all() and valid.all() and lengths.tolist() == [10]
    last, _, _ = crop_index(np.array([100]), np.array([50]), 10, "zero", np.array([0.9999]))
    assert last[0, -1] == 149  # the crop can reach the utterance's last frame


def test_repeat_tiles_short_utterances_from_their_start():
    index, valid, lengths = crop_index(np.array([7]), np.array([3]), 8, "repeat", np.array([0.7]))
    assert index[0].tolist() == [7, 8, 9, 7, 8, 9, 7, 8]
    assert valid.all() and lengths.tolist() == [8]


def test_zero_pads_short_utterances_and_masks_them(store):
    source = codec_source(store, "latent", ram_bytes=1e9)
    split = load_split(store, "train")
    short = int(np.argmin(split.lengths))
    n = int(split.lengths[short])
    crop = n + 5
    index, valid, lengths = crop_index(split.starts[[short]], split.lengths[[short]], crop, "zero", np.array([0.3]))
    assert lengths.tolist() == [n] and valid[0, :n].all() and not valid[0, n:].any()
    batch = source.gather(split.rows[[short]], index - split.starts[[short], None], valid, lengths)
    start = int(split.starts[short])
    assert torch.equal(batch.codes[0, :n], torch.from_numpy(store.codes[start : start + n].astype(np.int64)))
    assert (batch.codes[0, n:] == 0).all() and (batch.latent[0, n:] == 0).all()
    assert batch.lengths.tolist() == [n]


def test_lazy_latent_equals_latent_in_ram(store):
    split = load_split(store, "train")
    index, valid, lengths = crop_index(split.starts, split.lengths, 40, "zero", np.linspace(0, 0.99, len(split)))
    relative = index - split.starts[:, None]
    in_ram = codec_source(store, "latent", ram_bytes=1e9).gather(split.rows, relative, valid, lengths)
    lazy = codec_source(store, "latent", ram_bytes=0).gather(split.rows, relative, valid, lengths)
    assert torch.equal(in_ram.latent, lazy.latent) and torch.equal(in_ram.codes, lazy.codes)


def test_class_weights_give_each_class_half_the_loss():
    labels = np.array([True] * 2 + [False] * 18)
    w_bona, w_spoof = class_weights(labels)
    assert 2 * w_bona == pytest.approx(10) and 18 * w_spoof == pytest.approx(10)


def test_sampler_balances_classes_and_permutation_covers_all():
    labels = np.array([True] * 100 + [False] * 900)
    drawn = epoch_order(labels, "sampler", torch.Generator().manual_seed(0))
    assert drawn.size == 1000 and 0.45 < labels[drawn].mean() < 0.55
    for balance in ("weighted-loss", "none"):
        order = epoch_order(labels, balance, torch.Generator().manual_seed(0))
        assert sorted(order.tolist()) == list(range(1000))


def test_train_batches_are_reproducible_from_the_generator(store):
    source, split = codec_source(store), load_split(store, "train")

    def epoch(seed):
        return list(source.train_batches(split, 5, 30, "repeat", "none", torch.Generator().manual_seed(seed)))

    first, again, other = epoch(0), epoch(0), epoch(1)
    assert [b.codes.shape for b, _ in first] == [(5, 30, 8), (5, 30, 8), (2, 30, 8)]
    assert all(torch.equal(a.codes, b.codes) for (a, _), (b, _) in zip(first, again))
    assert not all(torch.equal(a.codes, b.codes) for (a, _), (b, _) in zip(first, other))
    assert sum(int(t.sum()) for _, t in first) == int(split.is_bonafide.sum())


def test_eval_segments_cover_long_utterances_with_full_windows():
    utt, start, length = eval_segments(np.array([5, 10, 25]), 10)
    assert utt.tolist() == [0, 1, 2, 2, 2]
    assert length.tolist() == [5, 10, 10, 10, 10]
    assert start.tolist() == [0, 0, 0, 8, 15]  # spread evenly from 0 to 25 - 10


def test_eval_batches_score_every_segment_once_within_budget(store):
    source, split = codec_source(store), load_split(store, "eval")
    seen = []
    for batch, utt in source.eval_batches(split, 50, 120):
        assert batch.codes.shape[0] * batch.codes.shape[1] <= 120 or batch.codes.shape[0] == 1
        assert batch.lengths.max() == batch.codes.shape[1]
        seen.extend(utt.tolist())
    expected, _, _ = eval_segments(split.lengths, 50)
    assert sorted(seen) == sorted(expected.tolist())


def test_eval_batch_rows_are_the_utterance_frames(store):
    source, split = codec_source(store), load_split(store, "eval")
    for batch, utt in source.eval_batches(split, 1000, 10_000):
        for row, u in enumerate(utt):
            n, start = int(split.lengths[u]), int(split.starts[u])
            assert int(batch.lengths[row]) == n
            assert torch.equal(batch.codes[row, :n], torch.from_numpy(store.codes[start : start + n].astype(np.int64)))
