"""bench/results.py: a benchmark's raw result carries the stamp bench/figures.py relies on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, time
sys.path.insert(0, {bench!r})
import results

def main():
    print("## Speed: 3 files")
    print()
    print("| what | s |")
    print("|---|---|")
    print("| encode | 1.5 |")
    print("| write | 0.2 |")
    results.record(raw={{"n": 3}})
    time.sleep(0.3)
    return {status}

sys.exit(results.run(main, "demo", ["classify/metrics.py"]))
"""


def run(tmp_path: Path, status: int, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "bench_demo.py"
    script.write_text(SCRIPT.format(bench=str(REPO / "bench"), status=status))
    env = {**os.environ, "BENCH_RESULTS_DIR": str(tmp_path / "results")}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=60, cwd=REPO, env=env)


def test_a_run_writes_its_stamp_and_its_printed_tables(tmp_path: Path):
    done = run(tmp_path, 0, "--result", "test_results_demo")
    assert done.returncode == 0, done.stderr
    assert "| encode | 1.5 |" in done.stdout  # the report still prints
    result = json.loads((tmp_path / "results" / "test_results_demo.json").read_text())
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert result["benchmark"] == "test_results_demo" and result["commit"] == head
    assert isinstance(result["dirty"], bool)
    assert result["command"].endswith("bench_demo.py --result test_results_demo")
    assert result["modules"] == ["classify/metrics.py"]
    assert len(result["load_before"]) == 3 and isinstance(result["load_during"], float)
    assert result["machine"]["cpus"] >= 1 and result["machine"]["memory_gb"] > 0 and result["machine"]["platform"]
    assert result["date"].endswith("Z") and result["codec_sha256"] is None and result["ssl_sha256"] is None
    assert result["figures"]["raw"] == {"n": 3}
    assert result["figures"]["tables"]["speed"] == {"columns": ["what", "s"], "rows": [["encode", "1.5"], ["write", "0.2"]]}


def test_a_failed_run_or_a_run_named_none_writes_nothing(tmp_path: Path):
    assert run(tmp_path, 2, "--result", "test_results_failed").returncode == 2
    assert run(tmp_path, 0, "--result", "none").returncode == 0
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").glob("*"))
    assert run(tmp_path, 0).returncode == 0  # the default name
    assert [p.name for p in (tmp_path / "results").glob("*")] == ["demo.json"]


def test_a_module_that_does_not_exist_is_refused():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import results  # noqa: PLC0415  (bench/ is not a package)
    finally:
        sys.path.remove(str(REPO / "bench"))
    try:
        results.stamp("x", ["extract/no_such_module.py"])
    except ValueError as error:
        assert "no_such_module.py" in str(error)
    else:
        raise AssertionError("a typo in a module path would never go stale")


def test_only_changes_to_what_benchmarks_measure_make_a_run_dirty():
    sys.path.insert(0, str(REPO / "bench"))
    import results

    # a result or a report written by an earlier run in the same tree is not a change to the code measured
    assert not results.is_dirty([]) and not results.is_dirty(["bench/results/codebooks.json", "bench/RESULTS_codec.md"])
    assert results.is_dirty(["bench/results/s3.json", "extract/run.py"]) and results.is_dirty(["bench/bench_s3.py"])
    assert results.is_dirty(["README.md"])
