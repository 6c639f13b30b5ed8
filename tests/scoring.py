"""The users' scoring workflow, built once per test session (fixture ``scoring`` in tests/conftest.py):
a generated corpus, a train+dev store and a separately extracted eval store of the same
(untrained) codec, both extracted one file at a time (``batch_seconds=0``) on one torch thread, and
a short run trained on the train+dev store. The run scores in windows of 1 s
(``max_eval_seconds``), so that the demo's 1.5-4 s files also test the windowed mean logit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from classify.train import train
from extract.datasets import generate_demo_corpus, get_dataset
from extract.run import ExtractConfig, extract
from store.format import WEIGHTS
from store.reader import FeatureStore
from tests.synthetic import tiny_config as train_config

SIZES = {"train": 16, "dev": 4, "eval": 4}
"""The training split is the untrained codec's calibration sample (equal numbers of bona fide and spoof
utterances, `extract.calibration`): 16 files (5 bona fide) give it more frames than a level has
codewords, so that its deep levels do not collapse to one code."""


def quiet(_message: str) -> None:
    pass


def extract_config(corpus: Path, out: Path, **overrides) -> ExtractConfig:
    """An untrained-codec extraction small enough for tests, one file per encoder batch, one thread."""
    values = dict(dataset="asv19", root=str(corpus), out=str(out), weights="untrained", kmeans_frames=3000,
                  kmeans_iters=5, unit_size=4, device="cpu", torch_threads=1, batch_seconds=0)
    values.update(overrides)
    return ExtractConfig(**values)


@dataclass(frozen=True)
class Scoring:
    """``traindev``/``eval_store``: store paths; ``run``: the trained run directory."""

    corpus: Path
    traindev: str
    eval_store: str
    run: Path

    def files(self, split: str) -> list[str]:
        """Audio paths of a split, in protocol order."""
        return get_dataset("asv19").load(self.corpus, [split]).table["path"].tolist()

    def store_of(self, split: str) -> FeatureStore:
        return FeatureStore(self.eval_store if split == "eval" else self.traindev)


def build(root: Path) -> Scoring:
    """Build the workflow of the module docstring under ``root``."""
    corpus = generate_demo_corpus(root / "corpus", n_per_split=SIZES, seed=3)
    traindev = root / "traindev.zarr"
    extract(extract_config(corpus, traindev, splits=["train", "dev"]), log=quiet)
    eval_store = root / "eval.zarr"  # extracted on its own, with the train store's codec weights
    extract(extract_config(corpus, eval_store, splits=["eval"], weights=str(traindev / WEIGHTS)), log=quiet)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(train_config(epochs=3, lr=3e-2, max_eval_seconds=1.0), FeatureStore(str(traindev)), root / "run",
              log=quiet)
    finally:
        torch.set_num_threads(threads)
    return Scoring(corpus, str(traindev), str(eval_store), root / "run")


def assert_explains_as_scored(detector, data, rate: int) -> None:
    """One scoring path: ``detector``'s explanation of the samples has score()'s score, in float32 and
    under the scoring's autocast (bfloat16 here on the CPU, as a CUDA detector runs), which does
    change the score."""
    import numpy as np  # noqa: PLC0415

    scores = {}
    for dtype in (None, torch.bfloat16):
        detector.dtype = dtype
        explanation = detector.explain(data, rate, window_seconds=0.3)
        scores[dtype] = detector.score(data, rate)
        assert explanation.score == scores[dtype]
        assert np.isfinite(explanation.levels).all() and np.isfinite(explanation.over_time).all()
    assert scores[None] != scores[torch.bfloat16]
