"""`pipeline doctor`, the clear diagnosis of a torch/torchaudio pair that cannot load, and install.py."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import COMMANDS, main
from pipeline.environment import codec_stack_problem, pinned

ROOT = Path(__file__).resolve().parents[2]


def test_doctor_reports_versions_and_that_extraction_can_run():
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    for name in ("torch", "torchaudio", "encodec", "zarr", "dask", "numpy"):
        assert f" {name} " in result.output and metadata.version(name) in result.output
    assert "codec stack" in result.output and "pretrained EnCodec" in result.output and "GiB free" in result.output
    assert result.output.rstrip().endswith("extraction can run here")


def test_the_pinned_pair_is_what_is_installed():
    # the pyproject pins a pair that loads together; this environment must be that pair
    assert pinned("torch") == f"torch=={metadata.version('torch').split('+')[0]}"
    assert pinned("torchaudio") == f"torchaudio=={metadata.version('torchaudio').split('+')[0]}"
    assert codec_stack_problem() is None


@pytest.fixture
def broken_torchaudio(tmp_path) -> dict[str, str]:
    """An environment whose torchaudio 2.11.1 fails to load its library, as the real one does over
    torch 2.11.0 (a shadowing package on PYTHONPATH, with its own distribution metadata)."""
    package = tmp_path / "torchaudio"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise OSError('Could not load this library: /x/torchaudio/lib/libtorchaudio.so\\n"
        "undefined symbol: torch_exception_get_what_without_backtrace')\n")
    info = tmp_path / "torchaudio-2.11.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torchaudio\nVersion: 2.11.1\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}


def pipeline(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_a_torchaudio_that_cannot_load_gets_one_clear_diagnosis(broken_torchaudio, tmp_path):
    doctor = pipeline("doctor", env=broken_torchaudio, cwd=tmp_path)
    assert doctor.returncode == 1
    diagnosis = f"torchaudio 2.11.1 cannot be loaded with torch {metadata.version('torch')}"
    assert diagnosis in doctor.stdout and "undefined symbol" not in doctor.stdout.split(diagnosis)[0]
    assert f"pip install '{pinned('torch')}' '{pinned('torchaudio')}'" in doctor.stdout
    assert "torchaudio installed 2.11.1, lock" in doctor.stdout or "not a source checkout" in doctor.stdout
    assert "extraction CANNOT run here" in doctor.stdout
    # every command that needs the codec says the same, without a traceback
    for args in (["demo", "--out", str(tmp_path / "d")], ["extract", "--dataset", "demo", "--root", "x", "--out", "y"]):
        run = pipeline(*args, env=broken_torchaudio, cwd=tmp_path)
        assert run.returncode == 1, run.stderr
        assert diagnosis in run.stderr and "Traceback" not in run.stderr + run.stdout
    assert not (tmp_path / "d").exists()
    # a command that does not need the codec still works
    help_text = pipeline("metrics", "--help", env=broken_torchaudio, cwd=tmp_path)
    assert help_text.returncode == 0 and "EER" in help_text.stdout


def test_every_registered_command_imports():
    for name in COMMANDS:
        assert main.get_command(None, name).name == name


def test_install_refuses_an_old_python_in_one_line():
    code = ("import sys; sys.version_info = (3, 10, 4, 'final', 0); sys.version = '3.10.4 (fake)'; "
            f"sys.argv = ['install.py']; exec(compile(open({str(ROOT / 'install.py')!r}).read(), 'install.py', 'exec'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs Python 3.11, 3.12 or 3.13" in lines[0] and "Python 3.10.4" in lines[0]
