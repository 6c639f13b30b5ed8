"""The codec-weights label through the workflow a user runs: untrained weights saved by one
extraction, passed back with ``--weights FILE`` to extract a second corpus, stay UNTRAINED in the
second store, in ``pipeline inspect`` and in ``pipeline evaluate``'s output (issue 8, item 5)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from extract.datasets import generate_demo_corpus
from pipeline.cli import main
from store.reader import FeatureStore

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # ~35 s of CPU: three extractions, a training; the fast cases are in tests/extract (test_run, test_codec)

SMALL = ["--set", "kmeans_frames=1024", "--set", "kmeans_iters=3", "--set", "lsuv_seconds=2", "--set", "device='cpu'",
         "--workers", "0", "--set", "torch_threads=1", "--no-latent", "--no-energy"]
TINY_TRAIN = ["--set", "crop_seconds=0.8", "--set", "batch_size=4", "--set", "warmup_steps=0",
              "--set", "head_kwargs={proj_dim=8, hidden_dim=8}", "--device", "cpu"]


def invoke(args: list) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def assert_untrained(text: str) -> None:
    assert "UNTRAINED EnCodec 24 kHz" in text and "pretrained EnCodec" not in text and "weights from" not in text


def test_saved_untrained_weights_stay_untrained_through_a_second_corpus_and_evaluate(tmp_path):
    first_corpus = generate_demo_corpus(tmp_path / "a", n_per_split={"train": 4, "dev": 2, "eval": 2}, seed=1)
    second_corpus = generate_demo_corpus(tmp_path / "b", n_per_split={"train": 2, "dev": 2, "eval": 4}, seed=2)
    first, second = tmp_path / "a.zarr", tmp_path / "b.zarr"
    assert_untrained(invoke(["extract", "--dataset", "asv19", "--root", first_corpus, "--out", first, "--weights", "untrained", *SMALL]))
    saved = first / "codec_weights.th"
    sha = FeatureStore(str(first)).codec.weights_sha256

    output = invoke(["extract", "--dataset", "asv19", "--root", second_corpus, "--out", second, "--weights", saved, *SMALL])
    assert_untrained(output)
    store = FeatureStore(str(second))
    assert store.codec.weights_sha256 == sha and store.codec.trained is False
    assert_untrained(store.codec.weights_label)
    assert_untrained(invoke(["inspect", second]))

    run = tmp_path / "run"
    assert_untrained(invoke(["train", "--features", first, "--out", run, "--epochs", 1, "--variant", "scalar", "--head", "lstm", *TINY_TRAIN]))
    output = invoke(["evaluate", "--model", run / "best.pt", "--features", second, "--split", "eval", "--out", tmp_path / "eval", "--no-calibrate"])
    assert_untrained(output)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert_untrained(metrics["codec_weights"]["label"]) and metrics["codec_weights"]["sha256"] == sha

    # the same tensors without the untrained mark (a dict rebuilt from the items): another file, never "pretrained"
    bare = tmp_path / "bare.th"
    torch.save(dict(torch.load(saved, weights_only=True)), bare)
    output = invoke(["extract", "--dataset", "asv19", "--root", second_corpus, "--out", tmp_path / "c.zarr", "--weights", bare, *SMALL])
    label = FeatureStore(str(tmp_path / "c.zarr")).codec.weights_label
    assert label.startswith(f"EnCodec weights from {bare.resolve()} (not the published checkpoint)") and label in output
    assert "UNTRAINED" not in label and "pretrained EnCodec" not in output
