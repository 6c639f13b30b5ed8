"""Can this environment run the tool? Versions, the torch/torchaudio pair, the lock, CUDA, the codec.

``pipeline doctor`` prints :func:`report`; every command whose import fails because the codec stack
(torch, torchaudio, encodec) cannot load prints :func:`codec_stack_problem`'s one paragraph instead
of a stack trace. Nothing here imports torch at module level: a broken torch must still be diagnosed.
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from common.provenance import lock_state

PROJECT = "rvq-antispoof"
SUPPORTED_PYTHONS = ((3, 11), (3, 12), (3, 13))
PACKAGES = ("torch", "torchaudio", "encodec", "zarr", "dask", "distributed", "numpy", "pandas", "pyarrow", "soundfile")
FIX = "python3 install.py --fresh"
"""What a user of a source checkout runs to get back to the tested environment."""


def version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def pinned(name: str) -> str | None:
    """The requirement this project declares for ``name`` (``torch==2.11.0``), from its metadata."""
    try:
        requirements = metadata.requires(PROJECT) or []
    except metadata.PackageNotFoundError:
        return None
    for requirement in requirements:
        text = requirement.split(";")[0].strip()
        bare = text.replace(" ", "")
        for sep in ("==", ">=", "<=", "~=", "!=", "<", ">"):
            if bare.lower().startswith(name + sep):
                return bare
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _pair_command() -> str:
    torch_req, audio_req = pinned("torch") or "torch", pinned("torchaudio") or "torchaudio"
    return f"pip install '{torch_req}' '{audio_req}'"


def codec_stack_problem() -> str | None:
    """None when torch, torchaudio and encodec import; else one paragraph: what fails and what to run.

    Importing is the only reliable test: torchaudio's compiled library is loaded at import, and a
    torchaudio built against another torch fails there (``undefined symbol``)."""
    for name in ("torch", "torchaudio", "encodec"):
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - OSError (library load), ImportError, RuntimeError...
            installed = version(name)
            if installed is None:
                return (f"{name} is not installed in this environment ({sys.executable}). "
                        f"Install the project with its tested lock: {FIX} (or pip install -e .).")
            if name == "torchaudio":
                return (f"torchaudio {installed} cannot be loaded with torch {version('torch')} "
                        f"({_first_line(err)}). torch and torchaudio are compiled against each other and must "
                        f"be a tested pair: {_pair_command()} (or {FIX}). `pipeline doctor` shows the environment.")
            return (f"{name} {installed} cannot be imported ({_first_line(err)}). Reinstall the tested "
                    f"environment: {FIX}. `pipeline doctor` shows the environment.")
    return None


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report; ``ok`` None means informational."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""


def _python_check() -> Check:
    ok = tuple(sys.version_info[:2]) in SUPPORTED_PYTHONS
    detail = f"{platform.python_version()} ({sys.executable})"
    return Check("python", ok, detail, "" if ok else "use Python 3.11, 3.12 or 3.13")


def _lock_check() -> Check:
    state = lock_state()
    if state is None:
        return Check("lock", None, "no requirements.lock beside the package (not a source checkout): not compared")
    lock, differences = Path(state["file"]), state["differences"]
    if state["matches"] is None:
        return Check("lock", None, f"{lock}: not compared (the packaging library is missing)")
    if not differences:
        return Check("lock", True, f"every package at its version in {lock}")
    shown = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
    return Check("lock", None, f"{len(differences)} package(s) differ from {lock.name}: {shown}",
                 f"{FIX} installs the tested versions")


def _cuda_check() -> Check:
    try:
        import torch  # noqa: PLC0415
    except Exception:  # noqa: BLE001 - reported by the codec stack check
        return Check("cuda", None, "unknown (torch does not import)")
    if not torch.cuda.is_available():
        built = torch.version.cuda
        return Check("cuda", None, f"no CUDA device (torch built {'for CUDA ' + built if built else 'for CPU only'}); "
                                   "everything runs on the CPU")
    devices = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        devices.append(f"cuda:{i} {props.name}, {props.total_memory / 2**30:.1f} GiB")
    return Check("cuda", True, f"CUDA {torch.version.cuda}: " + "; ".join(devices))


def _pretrained_check() -> Check:
    try:
        import torch  # noqa: PLC0415

        from extract.codec import CHECKPOINT_NAME, pretrained_file  # noqa: PLC0415
    except Exception:  # noqa: BLE001 - reported by the codec stack check
        return Check("pretrained EnCodec", None, "unknown (the codec stack does not import)")
    path = Path(torch.hub.get_dir()) / "checkpoints" / CHECKPOINT_NAME
    if not path.is_file():
        return Check("pretrained EnCodec", None, f"not in the torch hub cache ({path}); `extract --weights pretrained` "
                     "downloads it from EnCodec's URL, or pass a copy with --weights FILE")
    try:
        pretrained_file(download=False)
    except ValueError as err:
        return Check("pretrained EnCodec", False, str(err), f"delete {path} and let extract download it again")
    return Check("pretrained EnCodec", True, f"{path} (sha256 prefix checked)")


def _disk_check(folder: Path) -> Check:
    usage = shutil.disk_usage(folder)
    free = usage.free / 2**30
    return Check("disk", free >= 1.0, f"{free:.1f} GiB free in {folder}", "" if free >= 1.0 else "free some space")


def report(folder: Path | None = None) -> tuple[list[Check], bool]:
    """Every check, and whether extraction can run here (python supported, codec stack loads, zarr imports)."""
    folder = Path(folder or os.getcwd())
    checks = [_python_check(), Check(PROJECT, True, version(PROJECT) or "not installed (running from a checkout)")]
    for name in PACKAGES:
        installed = version(name)
        checks.append(Check(name, installed is not None, installed or "not installed"))
    problem = codec_stack_problem()
    checks.append(Check("codec stack", problem is None,
                        f"torch {version('torch')} + torchaudio {version('torchaudio')} + encodec load together"
                        if problem is None else problem))
    try:
        importlib.import_module("zarr")
        zarr_ok = True
    except Exception as err:  # noqa: BLE001
        checks.append(Check("zarr import", False, _first_line(err), FIX))
        zarr_ok = False
    checks += [_lock_check(), _cuda_check(), _pretrained_check(), _disk_check(folder)]
    can_extract = checks[0].ok is True and problem is None and zarr_ok
    return checks, can_extract


def format_report(checks: list[Check], can_extract: bool) -> str:
    marks = {True: "ok  ", False: "FAIL", None: "    "}
    width = max(len(c.name) for c in checks)
    lines = [f"{marks[c.ok]} {c.name:<{width}}  {c.detail}" + (f"\n     {'':<{width}}  -> {c.fix}" if c.fix else "")
             for c in checks]
    lines.append("")
    lines.append("extraction can run here" if can_extract else
                 "extraction CANNOT run here: fix the FAIL lines above")
    return "\n".join(lines)
