"""Frame readers: the registry, the one batcher, and every backend giving the same batches as the
store's own arrays (the Detector's arrays in RAM, an SSL stream read lazily, a new backend)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classify.data import FrameSource
from classify.frames import READERS, ArrayReader, FrameReader, length_batches, open_reader, register_reader
from classify.sources import codec_source
from store.reader import FeatureStore
from tests.synthetic import add_ssl_stream, synthetic_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    path = synthetic_store(str(tmp_path_factory.mktemp("frames") / "s.zarr"), n_per_split=10, frames=(20, 90),
                           failed_per_split=1)
    add_ssl_stream(path, starts={0: 4, 3: 10})
    return FeatureStore(path)


def test_length_batches_take_the_longest_first_within_the_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, size=200)
    seen, previous = [], None
    for chosen in length_batches(lengths, 120):
        longest = int(lengths[chosen].max())
        assert longest == lengths[chosen[0]] and (len(chosen) * longest <= 120 or len(chosen) == 1)
        assert previous is None or longest <= previous
        previous = int(lengths[chosen].min())
        seen.extend(chosen.tolist())
    assert sorted(seen) == list(range(200))
    assert seen == sorted(range(200), key=lambda i: -lengths[i])  # ties in their order, as Python sorts


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown frame reader 'nope'; known: .*codes.*memory.*store"):
        open_reader("nope")


def _batches(source: FrameSource, split, seed: int = 0) -> list:
    train = list(source.train_batches(split, 4, 30, "zero", "none", torch.Generator().manual_seed(seed)))
    return [b for b, _ in train] + [b for b, _ in source.eval_batches(split, 60, 200)]


def _assert_same(first: list, second: list) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert torch.equal(a.codes, b.codes) and torch.equal(a.lengths, b.lengths)
        for x, y in ((a.latent, b.latent), (a.ssl, b.ssl)):
            assert (x is None) == (y is None) and (x is None or torch.equal(x, y))


def test_arrays_in_ram_give_the_store_readers_batches(store):
    """The Detector's backend (per-utterance arrays in RAM) against the store's readers: the same
    frames for the codec variants' codes and latent, and for the SSL variants' pairs (layers chosen,
    the stream's crop starts included), read in RAM or lazily."""
    layers = np.array([0, 2])
    ssl_stream = store.stream("ssl")
    rows = np.arange(len(store.utterances))
    codes = [store.utterance_codes(r) for r in rows]
    latent = [store.utterance_latent(r) for r in rows]
    cached = codec_source(store, "latent", ram_bytes=0)
    in_ram = FrameSource.of(ArrayReader(codes), ArrayReader(latent))
    split = cached.split(store, "train")
    _assert_same(_batches(cached, split), _batches(in_ram, split))

    lazy = open_reader("store", store, "ssl", 0, columns=layers)
    whole = open_reader("store", store, "ssl", 1e9, columns=layers)
    assert lazy.ram is None and whole.ram is not None
    memory = ArrayReader([ssl_stream.utterance(r) for r in rows], layers)
    memory.starts = lazy.starts  # the same crops as the store's stream
    sources = [FrameSource.of(open_reader("codes", store), None, reader) for reader in (lazy, whole, memory)]
    split = sources[0].split(store, "train")
    assert split.n_failed >= 1 and sources[0].first["codes"][3] == 15  # SSL crop at frame 10: codec frame 15
    batches = [_batches(source, split) for source in sources]
    _assert_same(batches[0], batches[1])
    _assert_same(batches[0], batches[2])
    assert batches[0][0].ssl.shape[2] == 2 and batches[0][0].codes.shape[1] == 3 * batches[0][0].ssl.shape[1] // 2


def test_a_new_backend_is_one_class_and_one_registration(store):
    """A reader of another backend (here the codes, shifted by one, as an augmented view would give
    other codes) plugs into the batches with no other change."""

    @register_reader("test-shifted")
    class Shifted(FrameReader):
        def __init__(self, inner: FrameReader) -> None:
            self.inner, self.offsets, self.starts, self.name = inner, inner.offsets, inner.starts, "shifted"

        def read(self, rows: np.ndarray, relative: np.ndarray) -> np.ndarray:
            return (self.inner.read(rows, relative) + 1) % 64

    try:
        codes = open_reader("codes", store)
        plain = FrameSource.of(codes)
        shifted = FrameSource.of(open_reader("test-shifted", codes))
        split = plain.split(store, "dev")
        for a, b in zip(_batches(plain, split), _batches(shifted, split), strict=True):
            valid = torch.arange(a.codes.shape[1])[None, :] < a.lengths[:, None]
            assert torch.equal(b.codes[valid], (a.codes[valid] + 1) % 64) and (b.codes[~valid] == 0).all()
        with pytest.raises(ValueError, match="registered twice"):
            register_reader("test-shifted")(type("Other", (Shifted,), {}))
    finally:
        READERS.pop("test-shifted", None)
