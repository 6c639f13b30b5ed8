"""Damaged stores: a flipped byte, a truncated and a deleted chunk, a deleted table, edited attributes.

`verify` names the array, the chunk, the utterances and the work units affected and says how to
repair; `verify --repair` re-extracts exactly those units and the repaired store equals the original;
`train` and `evaluate` refuse a damaged store before any work (the quick check), and a damaged chunk
met later, as it is read, stops them with the same message.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path

import pytest
import soundfile
from click.testing import CliRunner

from extract import run as run_module
from extract.datasets import generate_demo_corpus
from extract.repair import RepairError, repair_store
from extract.run import extract
from pipeline.cli import main
from store import format as sf
from store.reader import FeatureStore, StoreDamaged
from store.verify import quick_check, verify_store
from store.writer import finish_store

from .helpers import assert_same_store, extract_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LAYOUT = {"chunk_frames": {sf.CODES: 64, sf.LATENT: 64, sf.ENERGY: 64}, "shard_chunks": 4}
"""Tiny chunks (64 frames) in shards of 4, so that a small store spans many shards."""
TRAIN = ["--epochs", "1", "--device", "cpu", "--set", "batch_size=4", "--set", "crop_seconds=0.4",
         "--set", "warmup_steps=0", "--set", "head_kwargs={proj_dim=8, hidden_dim=8}"]


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    corpus = generate_demo_corpus(tmp_path_factory.mktemp("damage") / "demo",
                                  n_per_split={"train": 4, "dev": 4, "eval": 2}, seed=8)
    out = tmp_path_factory.mktemp("store") / "s.zarr"
    config = extract_config(corpus, out, unit_size=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "finish_store", functools.partial(finish_store, **LAYOUT))
        extract(config, log=lambda _: None)
    assert verify_store(str(out)).ok
    return out


@pytest.fixture
def store(original, tmp_path) -> Path:
    copy = tmp_path / "s.zarr"
    shutil.copytree(original, copy)
    return copy


@pytest.fixture(scope="module")
def checkpoint(original, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(main, ["train", "--features", str(original), "--out", str(run), *TRAIN])
    assert result.exit_code == 0, result.output
    return run / "best.pt"


def flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    path.write_bytes(bytes(raw))


def frames_of(store: Path, shard: int) -> tuple[int, int]:
    per = LAYOUT["chunk_frames"][sf.CODES] * LAYOUT["shard_chunks"]
    return shard * per, (shard + 1) * per


def utterances_in(store: Path, lo: int, hi: int) -> list[str]:
    s = FeatureStore(str(store))
    off = s.offsets
    return [u for r, u in enumerate(s.utterances["utt_id"]) if off[r] < hi and off[r + 1] > lo and off[r + 1] > off[r]]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_store_spans_several_shards(original):
    assert FeatureStore(str(original)).offsets[-1] > 3 * 256 and len(list((original / "codes/c").iterdir())) > 3


def test_flipped_byte_is_named_met_when_read_and_repaired(store, original, tmp_path):
    flip_byte(store / "codes/c/1/0")
    expected = utterances_in(store, *frames_of(store, 1))
    result = cli("verify", store)
    assert result.exit_code == 1
    assert "FAIL  chunks: codes/c/1/0 (chunk " in result.output and "cannot be decoded" in result.output
    lo, hi = map(int, re.search(r"codes/c/1/0 \(chunk \d of the shard, rows (\d+):(\d+)", result.output).groups())
    affected = next(line for line in result.output.splitlines() if "affected:" in line)
    named = re.search(r"utterance\(s\) affected: (.*) \(work unit", affected).group(1).split(", ")
    assert named == utterances_in(store, lo, hi)  # those with frames in the damaged chunk
    assert f"pipeline verify --repair {store}" in result.output
    # the quick check does not decode chunks: train starts, and meets the damage as it reads the codes
    assert quick_check(str(store)).ok
    trained = cli("train", "--features", store, "--out", tmp_path / "run", *TRAIN)
    assert trained.exit_code == 1 and "reading codes failed" in trained.output
    assert "codes/c/1/0" in trained.output and "verify --repair" in trained.output and "Traceback" not in trained.output
    # the repair re-extracts exactly the units with frames in that shard, and the store is the original again
    logged: list[str] = []
    repaired = repair_store(str(store), log=logged.append)
    assert repaired.rewritten == ["codes/c/1/0"] and sorted(repaired.utterances) == sorted(expected)
    assert repaired.compared_frames > 0 and repaired.report.ok
    assert_same_store(store, original)


def test_truncated_shard_is_refused_before_any_work_and_repaired(store, original, checkpoint, tmp_path):
    path = store / "latent/c/2/0"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    report = quick_check(str(store))
    assert not report.ok and any("latent/c/2/0" in p and "shard index" in p for p in report.problems)
    for args in (["train", "--features", store, "--out", tmp_path / "run", *TRAIN, "--variant", "latent"],
                 ["evaluate", "--model", checkpoint, "--features", store, "--out", tmp_path / "eval"]):
        result = cli(*args)
        assert result.exit_code == 1 and f"{store} is damaged" in result.output, result.output
        assert "latent/c/2/0" in result.output and "utterance(s) affected" in result.output
        assert "verify --repair" in result.output
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "eval").exists()
    repaired = cli("verify", "--repair", store)
    assert repaired.exit_code == 0, repaired.output
    assert "rewrote latent/c/2/0" in repaired.output and "OK: every check passed" in repaired.output
    assert_same_store(store, original)


def test_deleted_shards_of_two_streams_are_repaired_together(store, original):
    (store / "codes/c/0/0").unlink()
    (store / "energy/c/3/0").unlink()
    report = verify_store(str(store))
    assert sorted(a.stream for a in report.affected) == ["codes", "energy"]
    assert any(p == "chunks: codes/c/0/0: missing (Zarr would read it as fill value 0)" for p in report.problems)
    with pytest.raises(StoreDamaged, match="codes/c/0/0"):
        FeatureStore(str(store), check=True)
    result = repair_store(str(store), log=lambda _: None)
    assert sorted(result.rewritten) == ["codes/c/0/0", "energy/c/3/0"] and result.report.ok
    assert_same_store(store, original)


def test_a_repair_that_would_not_reproduce_the_store_writes_nothing(store):
    (store / "codes/c/1/0").unlink()
    s = FeatureStore(str(store))
    victim = utterances_in(store, *frames_of(store, 1))[0]
    row = int(s.utterances.index[s.utterances["utt_id"] == victim][0])
    audio = Path(s.utterances["path"].iloc[row])
    saved = audio.read_bytes()
    try:  # the audio changed since the extraction: other codes, maybe another length
        data, sr = soundfile.read(audio)
        soundfile.write(audio, data[::-1] * 0.5, sr)
        before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
        with pytest.raises(RepairError, match="(?i)nothing was written"):
            repair_store(str(store), log=lambda _: None)
        assert {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()} == before
    finally:
        audio.write_bytes(saved)


def test_deleted_table_is_named_and_not_repaired_in_place(store, tmp_path):
    (store / sf.UTTERANCES).unlink()
    result = cli("verify", store)
    assert result.exit_code == 1 and "FAIL  tables: utterances.parquet: missing" in result.output
    assert "cannot be repaired in place" in result.output
    trained = cli("train", "--features", store, "--out", tmp_path / "run", *TRAIN)
    assert trained.exit_code == 1 and "utterances.parquet: missing" in trained.output
    with pytest.raises(RepairError, match="utterances.parquet: missing"):
        repair_store(str(store), log=lambda _: None)


@pytest.mark.parametrize("edit", ["frame_rate", "weights_sha256", "summary"])
def test_edited_attributes_are_named(store, tmp_path, edit):
    meta = json.loads((store / "zarr.json").read_text())
    attrs = meta["attributes"]
    if edit == "frame_rate":
        attrs["codec"]["frame_rate"] = 50
    elif edit == "weights_sha256":
        attrs["weights"]["sha256"] = "0" * 64
    else:
        attrs["summary"]["frames"] += 1
    (store / "zarr.json").write_text(json.dumps(meta))
    report = verify_store(str(store))
    assert not report.ok
    if edit == "summary":
        assert any("summary says frames" in p for p in report.problems)
    else:
        assert any("were edited after extraction" in p for p in report.problems)
    trained = cli("train", "--features", store, "--out", tmp_path / "run", *TRAIN)
    assert trained.exit_code == 1 and f"{store} is damaged" in trained.output
