"""The serve extra is optional: without FastAPI and uvicorn every other command imports and runs, and
`pipeline serve` says in one line what to install (a subprocess where they cannot be imported)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = "import sys; sys.modules.update(fastapi=None, uvicorn=None, starlette=None); "


def run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, env=env, timeout=300)


def test_without_the_extra_serve_names_it_and_score_still_loads(tmp_path):
    done = run(f"from pipeline.cli import main; main(['serve', '--model', {str(tmp_path)!r}])")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == ("Error: the scoring service needs the serve extra (uvicorn is "
                                                    "missing): python3 install.py --extras serve")
    loaded = run("import pipeline.commands.score, pipeline.commands.serve, classify.timeline, classify.verdict, "
                 "classify.ood; print('fastapi' in sys.modules and sys.modules['fastapi'] is not None)")
    assert loaded.returncode == 0 and loaded.stdout.strip() == "False", loaded.stderr
