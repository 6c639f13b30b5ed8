"""Untrusted files never run code: crafted pickles given as a checkpoint or as codec weights (a
file, or the one inside a store) are refused with a clear message and their code never runs; store
attributes are read as JSON data; nothing the tool writes needs an unrestricted unpickler."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from classify.checkpoint import FORMAT, CheckpointError, load_checkpoint
from extract import codec_stream
from extract.codec import WeightsError, load_weights_file
from pipeline.cli import main
from store import format as sf
from store.inspect import inspect_store
from store.reader import FeatureStore
from store.verify import verify_store
from tests.synthetic import synthetic_store, verifiable_store

from .helpers import SMALL_CODEC, TRAIN_SETTINGS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Payload:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "the-payload-ran"


def crafted(tmp_path: Path, marker: Path) -> dict[str, Path]:
    """A raw pickle, and a torch.save zip whose data.pkl holds the payload beside what a checkpoint
    or a state dict holds."""
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Payload(marker)))
    zipped = tmp_path / "zipped.pt"
    torch.save({"format": FORMAT, "format_version": 1, "model": {"w": torch.zeros(2)}, "extra": Payload(marker)}, zipped)
    state = tmp_path / "state.th"
    torch.save({"encoder.model.0.conv.conv.weight": torch.zeros(1), "hook": Payload(marker)}, state)
    pickle.loads(raw.read_bytes())  # the payload works: it is the loaders that refuse it
    assert marker.exists()
    marker.unlink()
    return {"raw": raw, "zipped": zipped, "state": state}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return synthetic_store(str(tmp_path_factory.mktemp("u") / "s.zarr"), n_per_split=12, latent=False)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_crafted_checkpoints_are_refused(store, tmp_path, marker):
    files = crafted(tmp_path, marker)
    for name in ("raw", "zipped"):
        with pytest.raises(CheckpointError, match=f"{files[name]}: not a readable checkpoint"):
            load_checkpoint(files[name])
        result = cli("evaluate", "--model", files[name], "--features", store, "--out", tmp_path / "eval")
        assert result.exit_code == 1 and "not a readable checkpoint" in result.output and "Traceback" not in result.output
    run = tmp_path / "run"  # a run folder whose last.pt was replaced: resuming refuses it
    run.mkdir()
    (run / "last.pt").write_bytes(files["zipped"].read_bytes())
    result = cli("train", "--features", store, "--out", run, "--epochs", "1", *TRAIN_SETTINGS)
    assert result.exit_code == 1 and f"{run / 'last.pt'}: not a readable checkpoint" in result.output
    assert not marker.exists()


def test_crafted_codec_weights_are_refused(tmp_path, marker):
    files = crafted(tmp_path, marker)
    for name in ("raw", "state"):
        with pytest.raises(WeightsError, match=f"{files[name]}: not a loadable state dict"):
            load_weights_file(files[name])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "manifest.csv").write_text("path,label\nnone.flac,spoof\n")
    args = list(SMALL_CODEC)
    args[args.index("--weights") + 1] = str(files["state"])
    result = cli("extract", "--dataset", "manifest", "--root", corpus / "manifest.csv", "--out", tmp_path / "s.zarr", *args)
    assert result.exit_code == 1 and "not a loadable state dict" in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_a_crafted_weights_file_inside_a_store_is_refused(tmp_path, marker):
    store = Path(verifiable_store(tmp_path / "v.zarr", n_per_split=2))
    files = crafted(tmp_path, marker)
    data = files["state"].read_bytes()
    (store / sf.WEIGHTS).write_bytes(data)  # replaced, and its sha256 recorded to match
    meta = json.loads((store / "zarr.json").read_text())
    sha = hashlib.sha256(data).hexdigest()
    meta["attributes"]["weights"]["sha256"] = sha
    (store / "zarr.json").write_text(json.dumps(meta))
    assert any("were edited after extraction" in p for p in verify_store(str(store)).problems)
    meta["attributes"][sf.INTEGRITY] = sf.attrs_digest(meta["attributes"])  # the digest forged too
    (store / "zarr.json").write_text(json.dumps(meta))
    assert any("codec_weights.th: cannot compare with codebooks" in p for p in verify_store(str(store)).problems)
    with pytest.raises(WeightsError, match="codec_weights.th: not a loadable EnCodec state dict"):
        codec_stream._encoder(str(store), sha, 6.0, "cpu", False, 60.0, 0.5, None)  # what a worker loads
    assert not marker.exists()


def test_store_attributes_are_read_as_data(store, tmp_path, marker):
    copy = tmp_path / "s.zarr"
    import shutil

    shutil.copytree(store, copy)
    meta = json.loads((copy / "zarr.json").read_text())
    code = f"__import__('os').system('touch {marker}')"
    meta["attributes"]["dataset"]["description"] = code
    meta["attributes"]["provenance"] = {"py/reduce": [{"py/function": "os.system"}, {"py/tuple": [f"touch {marker}"]}]}
    (copy / "zarr.json").write_text(json.dumps(meta))
    opened = FeatureStore(str(copy))
    assert opened.attrs["dataset"]["description"] == code  # a string, never evaluated
    inspect_store(str(copy))
    verify_store(str(copy))
    assert not marker.exists()


def is_pickle(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def test_nothing_the_tool_writes_needs_an_unrestricted_unpickler(tmp_path):
    """Every file of a store, a training run, its evaluation and a sweep: torch files load with
    weights_only=True, and no other file is a pickle."""
    store = verifiable_store(tmp_path / "v.zarr", n_per_split=8, failed_per_split=1)
    assert cli("train", "--features", store, "--out", tmp_path / "run", "--epochs", "1", *TRAIN_SETTINGS).exit_code == 0
    assert cli("evaluate", "--model", tmp_path / "run", "--features", store, "--out", tmp_path / "eval").exit_code == 0
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('[base]\nepochs = 1\ncrop_seconds = 0.4\ndevice = "cpu"\nhead_kwargs = {proj_dim = 8, hidden_dim = 8}\n'
                     '[grid]\nvariant = ["mean"]\n')
    assert cli("sweep", "--features", store, "--config", sweep, "--out", tmp_path / "sweep", "--workers", "0").exit_code == 0
    torch_files = 0
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.name != sweep.name):
        head = path.read_bytes()[:4]
        if head[:2] == b"PK" and zipfile.is_zipfile(path):
            torch.load(path, map_location="cpu", weights_only=True)
            torch_files += 1
        else:
            assert not is_pickle(head), path
    assert torch_files >= 4  # the store's weights, best.pt, last.pt, the trial's checkpoints
    with pytest.raises(pickle.UnpicklingError):  # and the check would see a pickle
        torch.load(io.BytesIO(pickle.dumps(Payload(tmp_path / "x"))), weights_only=True)


def test_a_crafted_detector_bundle_is_refused(tmp_path, marker):
    """A file posing as a `pipeline export-model` bundle, with a payload beside the bundle's keys, is
    refused by the Detector and by `pipeline score`; its code never runs."""
    from classify.bundle import BUNDLE_FORMAT, BUNDLE_VERSION
    from classify.detector import Detector

    bundle = tmp_path / "detector.pt"
    torch.save({"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "model": {"w": torch.zeros(2)},
                "extra": Payload(marker)}, bundle)
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{bundle}: not a readable checkpoint"):
        Detector.load(bundle)
    result = cli("score", "--model", bundle, audio)
    assert result.exit_code == 1 and "not a readable checkpoint" in result.output and "Traceback" not in result.output
    assert not marker.exists()
