"""`pipeline inspect`, `pipeline verify` and `pipeline export` through click's test runner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pandas as pd
import pytest
from click.testing import CliRunner

from pipeline.commands.storetools import export_command, inspect_command, verify_command
from store import format as sf
from tests.synthetic import verifiable_store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return verifiable_store(tmp_path_factory.mktemp("cli") / "s.zarr", n_per_split=4, failed_per_split=1)


def run(command, args: list[str]):
    return CliRunner().invoke(command, args)


def test_command_names():
    assert (inspect_command.name, verify_command.name, export_command.name) == ("inspect", "verify", "export")


def test_inspect_json(store):
    result = run(inspect_command, [store, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    table = pd.read_parquet(Path(store) / sf.UTTERANCES)
    assert info["utterances"] == len(table) == 15
    assert info["audio_seconds"] == pytest.approx(table.loc[table["status"] == "ok", "duration"].sum())
    assert set(info["bytes"]) >= {sf.CODES, sf.LATENT, sf.CODEBOOKS, sf.OFFSETS, sf.UTTERANCES, sf.FAILURES, sf.WEIGHTS}
    assert info["weights"]["file"] == str(Path(store).resolve() / sf.WEIGHTS)
    assert set(info["weights"]) >= {"source", "sha256", "file", "label"}


def test_inspect_text_and_errors(store, tmp_path):
    result = run(inspect_command, [store])
    assert result.exit_code == 0 and "15 (12 ok, 3 failed)" in result.output
    missing = str(tmp_path / "none.zarr")
    result = run(inspect_command, [missing])
    assert result.exit_code == 1 and f"Error: {missing}: no feature store here" in result.output


def test_verify_ok_and_damaged(store, tmp_path):
    result = run(verify_command, [store])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("OK: every check passed")
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    (copy / "codes/c/0/0").unlink()
    result = run(verify_command, [str(copy)])
    assert result.exit_code == 1
    assert "FAIL  chunks: codes/c/0/0: missing" in result.output and "\n1 problem found\n" in result.output
    assert "re-extract" in result.output.lower() or "repair" in result.output.lower()  # then how to repair it
    report = json.loads(run(verify_command, [str(copy), "--json"]).output)
    assert report["ok"] is False and [c["name"] for c in report["checks"] if not c["ok"]] == ["chunks"]


def test_export(store, tmp_path):
    out = tmp_path / "dev.h5"
    result = run(export_command, [store, "--format", "hdf5", "--out", str(out), "--split", "dev", "--latent"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    table = pd.read_parquet(Path(store) / sf.UTTERANCES)
    dev = table[(table["split"] == "dev") & (table["status"] == "ok")]
    with h5py.File(out) as f:
        assert list(f["utterance_id"].asstr()[...]) == dev["utt_id"].tolist()
        assert f["embeddings"].shape == (dev["n_frames"].sum(), 8, 128) and f["latent"].shape == (dev["n_frames"].sum(), 128)
        assert f["offsets"].shape == (len(dev) + 1,)


def test_export_rejects_other_formats_and_bad_input(store, tmp_path):
    result = run(export_command, [store, "--format", "csv", "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "'csv' is not" in result.output and "hdf5" in result.output
    result = run(export_command, [store, "--format", "hdf5"])
    assert result.exit_code == 2 and "--out" in result.output
    result = run(export_command, [store, "--format", "hdf5", "--out", str(tmp_path / "x.h5"), "--split", "test"])
    assert result.exit_code == 1 and f"Error: {store}: no split 'test'; the store has dev, eval, train" in result.output
