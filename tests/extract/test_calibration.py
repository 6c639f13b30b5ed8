"""The untrained codec's calibration: a balanced, seeded sample of the training split, and k-means
whose dead codewords are re-seeded; both recorded in the store and reported by `inspect`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from encodec.quantization.core_vq import kmeans as encodec_kmeans

from extract import calibration
from extract.audio import load_audio
from extract.calibration import NO_TRAIN_SPLIT, draw_order, draw_sample, init_codebooks, kmeans
from extract.codec import build_untrained, new_model
from extract.datasets import get_dataset
from extract.run import extract
from store import format as sf
from store.inspect import format_report, inspect_store
from store.reader import FeatureStore
from store.verify import verify_store

from .conftest import quiet, tiny_config


def plan_table(seed: int = 0) -> pd.DataFrame:
    """A protocol in the ASVspoof 2019 order (all bona fide of a speaker first), labels unequal."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, speakers, systems in (("train", ("S1", "S2", "S3"), ("A01", "A02")), ("dev", ("D1",), ("A01",)),
                                     ("eval", ("E1",), ("A09",))):
        for speaker in speakers:
            for system in ("bonafide", *systems):
                for _ in range(int(rng.integers(3, 9))):
                    rows.append({"utt_id": f"{split}_{len(rows):05d}", "speaker": speaker, "system": system,
                                 "label": "bonafide" if system == "bonafide" else "spoof", "split": split,
                                 "path": f"/nowhere/{len(rows)}.flac"})
    return pd.DataFrame(rows)


def test_the_order_is_balanced_spans_every_stratum_and_keeps_to_train():
    plan = plan_table()
    order, splits, note = draw_order(plan, seed=3)
    picked = plan.iloc[order]
    assert splits == ["train"] and note == "" and set(picked["split"]) == {"train"}
    labels = picked["label"].tolist()
    assert labels[0::2] == ["bonafide"] * (len(order) // 2) and labels[1::2] == ["spoof"] * (len(order) // 2)
    train = plan[plan["split"] == "train"]
    assert len(order) == 2 * min(train["label"].value_counts())  # stops when the smaller label runs out
    for label in ("bonafide", "spoof"):  # round-robin: the first k of a label cover its k strata
        strata = set(map(tuple, train.loc[train["label"] == label, ["speaker", "system"]].to_numpy()))
        first = picked[picked["label"] == label].head(len(strata))
        assert set(map(tuple, first[["speaker", "system"]].to_numpy())) == strata
    assert draw_order(plan, seed=3)[0] == order and draw_order(plan, seed=4)[0] != order


def test_without_a_training_split_it_draws_from_the_splits_there_and_says_so():
    plan = plan_table()
    plan = plan[plan["split"] != "train"]
    order, splits, note = draw_order(plan, seed=0)
    assert splits == ["dev", "eval"] and NO_TRAIN_SPLIT in note and "dev, eval" in note
    assert set(plan.iloc[order]["split"]) == {"dev", "eval"}


@pytest.fixture(scope="module")
def corpus_plan(tiny_corpus) -> pd.DataFrame:
    return get_dataset("asv19").load(tiny_corpus).table.reset_index(drop=True)


def test_the_sample_passes_over_unreadable_files_and_records_what_it_holds(corpus_plan, tmp_path):
    plan = corpus_plan.copy()
    first = draw_order(plan, seed=0)[0]
    plan.loc[first[0], "path"] = str(tmp_path / "missing.flac")  # the first bona fide: replaced by the next one
    sample = draw_sample(plan, seed=0, seconds=1000.0, max_seconds=3600.0, window_seconds=1.0)
    rows = plan.set_index("utt_id").loc[sample.utterances]
    assert plan["utt_id"].iat[first[0]] not in sample.utterances
    assert set(rows["split"]) == {"train"} and list(rows["label"][0::2]) == ["bonafide"] * (len(rows) // 2)
    assert list(rows["label"][1::2]) == ["spoof"] * (len(rows) // 2)
    record = sample.record
    assert record["utterances"] == sample.utterances and record["splits"] == ["train"] and record["seed"] == 0
    assert record["labels"] == {"bonafide": len(rows) // 2, "spoof": len(rows) // 2}
    assert record["speakers"] == rows["speaker"].value_counts().to_dict()
    assert all(clip.shape[-1] <= 24000 for clip in sample.clips)  # window_seconds
    assert record["seconds"] == pytest.approx(sum(c.shape[-1] for c in sample.clips) / 24000, abs=1e-3)
    short = draw_sample(corpus_plan, seed=0, seconds=0.5, max_seconds=3600.0, window_seconds=60.0)
    assert len(short.utterances) == 2  # one whole pair, even though its first clip was enough


def test_same_seed_same_sample_and_same_weights_whatever_the_thread_count(corpus_plan):
    threads = torch.get_num_threads()
    built = []
    try:
        for n in (2, 1):
            torch.set_num_threads(n)
            sample = draw_sample(corpus_plan, seed=5, seconds=8.0, max_seconds=3600.0, window_seconds=60.0)
            built.append((sample.utterances, build_untrained(sample.clips, n_q=2, seed=5, kmeans_frames=1024,
                                                             kmeans_iters=2, lsuv_seconds=2)[2].sha256))
    finally:
        torch.set_num_threads(threads)
    assert built[0] == built[1]


def test_kmeans_without_reseeding_is_encodecs_algorithm():
    data = torch.randn(300, 8)
    torch.manual_seed(5)
    expected, expected_bins = encodec_kmeans(data, 16, 10)
    torch.manual_seed(5)
    got, bins = kmeans(data, 16, 10)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.equal(bins, expected_bins)


def naive_counts(data: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Frames nearest to each codeword, by explicit differences."""
    nearest = ((data[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    return torch.bincount(nearest, minlength=len(means))


def test_reseeding_leaves_no_dead_codeword():
    """Half the frames are the zero vector (residuals of frames that were alone in their cluster):
    the initial sample holds many zero codewords, and plain k-means keeps all but one of them dead."""
    generator = torch.Generator().manual_seed(0)
    data = torch.cat([torch.zeros(300, 8), torch.randn(300, 8, generator=generator)])
    torch.manual_seed(1)
    plain, _ = kmeans(data, 64, 10)
    torch.manual_seed(1)
    means, bins = kmeans(data, 64, 10, dead_below=1)
    assert int((naive_counts(data, plain) == 0).sum()) > 10 and int((plain == 0).all(1).sum()) > 10
    assert torch.equal(bins, naive_counts(data, means))
    assert int((bins == 0).sum()) == 0 and int((means == 0).all(1).sum()) <= 1


def test_untrained_codebooks_are_initialised_level_by_level():
    """EnCodec's initialisation (no re-seeding): level by level on the residual."""
    torch.manual_seed(0)
    model = new_model()
    assert all(float(layer._codebook.embed.abs().sum()) == 0 for layer in model.quantizer.vq.layers)  # EnCodec's zeros
    t = torch.arange(24000 * 3) / 24000
    wavs = [(0.2 * torch.sin(2 * torch.pi * f0 * t * (1 + 0.3 * t)) + 0.05 * torch.randn(t.shape))[None] for f0 in range(100, 300, 20)]
    wav = wavs[0]
    used = init_codebooks(model, wavs, n_q=4, max_frames=2000, iters=5, dead_below=0)
    assert used == 2000
    layers = model.quantizer.vq.layers
    assert all(float(layer._codebook.inited) == 1.0 and float(layer._codebook.embed.abs().sum()) > 0 for layer in layers[:4])
    assert all(float(layer._codebook.embed.abs().sum()) == 0 for layer in layers[4:])
    model.set_target_bandwidth(3.0)
    with torch.no_grad():
        codes = model.encode(wav[None])[0][0]
    assert codes.shape[1] == 4 and all(codes[0, q].unique().numel() > 10 for q in range(4))
    usage = calibration.usage(model, 4)
    assert [u["used"] for u in usage] == [int((layer._codebook.cluster_size > 0).sum()) for layer in layers[:4]]
    assert [u["zero"] for u in usage] == [int((layer._codebook.embed == 0).all(1).sum()) for layer in layers[:4]]
    assert usage[3]["zero"] > 100  # without re-seeding, the deeper levels keep zero codewords

    torch.manual_seed(0)
    reseeded = new_model()
    init_codebooks(reseeded, wavs, n_q=4, max_frames=2000, iters=5)
    usage = calibration.usage(reseeded, 2)
    assert all(u["used"] == 1024 and u["zero"] == 0 for u in usage)


def test_inspect_reports_the_calibration_and_the_codebooks(tiny_store, tiny_corpus):
    info = inspect_store(tiny_store)
    record = info["weights"]["calibration"]
    plan = get_dataset("asv19").load(tiny_corpus).table.set_index("utt_id")
    assert record["splits"] == ["train"] and set(plan.loc[record["utterances"], "split"]) == {"train"}
    assert {"seed", "utterances", "seconds", "splits"} <= set(record)
    assert record["utterances"] == draw_sample(plan.reset_index(), 0, 1e9, 3600.0, 60.0).utterances[: len(record["utterances"])]
    store = FeatureStore(tiny_store)
    codes, books = np.asarray(store.codes), store.codebooks
    levels = info["codebooks"]["levels"]
    assert [lv["used"] for lv in levels] == [len(np.unique(codes[:, q])) for q in range(codes.shape[1])]
    assert [lv["zero"] for lv in levels] == [int(sum(not row.any() for row in books[q])) for q in range(len(books))]
    assert [lv["used_calibration"] for lv in levels] == [c["used"] for c in record["codebooks"]]
    text = format_report(info)
    assert f"calibration seed 0: {len(record['utterances'])} utterances of train" in text and "level 8:" in text
    json.dumps(info)


def test_a_store_made_before_calibration_was_recorded_opens_inspects_and_verifies(tiny_store, tmp_path):
    old = tmp_path / "old.zarr"
    shutil.copytree(tiny_store, old)
    files = sf.StoreFiles(str(old))
    attrs = files.read_group_attrs()
    attrs["weights"].pop("calibration")
    attrs["summary"].pop("codebook_usage")
    files.update_group_attrs({"weights": attrs["weights"], "summary": attrs["summary"],
                              sf.INTEGRITY: sf.attrs_digest(attrs)})
    info = inspect_store(str(old))
    assert info["weights"]["calibration"] is None
    assert all(lv["used"] is None and lv["used_calibration"] is None and lv["zero"] is not None for lv in info["codebooks"]["levels"])
    assert "calibration not recorded" in format_report(info)
    assert verify_store(str(old)).ok
    assert np.array_equal(FeatureStore(str(old)).codes, FeatureStore(tiny_store).codes)


def test_an_eval_only_store_says_its_codec_saw_no_training_split(tiny_corpus, tmp_path):
    out = tmp_path / "eval.zarr"
    result = extract(tiny_config(tiny_corpus, out, splits=["eval"], kmeans_frames=1024, kmeans_iters=2, latent=False,
                                 energy=False), log=quiet)
    assert NO_TRAIN_SPLIT in result.weights.label and result.weights.label.startswith("UNTRAINED")
    info = inspect_store(str(out))
    assert info["weights"]["calibration"]["splits"] == ["eval"] and NO_TRAIN_SPLIT in info["weights"]["calibration"]["note"]
    assert NO_TRAIN_SPLIT.upper() in format_report(info) and NO_TRAIN_SPLIT in info["weights"]["label"]


def test_loading_is_the_extractions(corpus_plan):
    """The sample's clips are the files as the extraction decodes them (first window only)."""
    sample = draw_sample(corpus_plan, seed=0, seconds=1.0, max_seconds=3600.0, window_seconds=60.0)
    path = corpus_plan.set_index("utt_id").loc[sample.utterances[0], "path"]
    assert torch.equal(sample.clips[0], load_audio(path))
