"""bench/figures.py: figures rendered from results, stale ones caught by `check` and marked by `render`.

Each test builds a scratch git repository (a module, a result measured at its first commit, a
document with markers) and runs the script as CI does (``python3 bench/figures.py``), so what is
checked is the command's exit status and output, with git doing the history."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "figures.py"

DOC = """# Bench

## 1. Speed

<sub><!--fig-source speed--><!--/fig-source--></sub>

The encoder runs at <!--fig speed:rate fmt=.1f-->0<!--/fig--> audio s per wall s.

<!--fig-table speed:table-->
<!--/fig-table-->

## 2. Facts

The model has 663,329 parameters (a fact of the code, not a figure).
"""


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout.strip()


def figures(root: Path, command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(root / "bench" / "figures.py"), command, "--root", str(root)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "bench" / "results").mkdir(parents=True)
    (root / "extract").mkdir()
    shutil.copy(SCRIPT, root / "bench" / "figures.py")
    (root / "extract" / "encoder.py").write_text("SPEED = 1\n")
    (root / "extract" / "other.py").write_text("X = 1\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "code")
    measured_at = git(root, "rev-parse", "HEAD")
    result = {"benchmark": "speed", "command": "python bench/bench_speed.py", "commit": measured_at, "dirty": False,
              "codec_sha256": None, "ssl_sha256": None, "machine": {"cpus": 2, "memory_gb": 8, "platform": "test"},
              "load_before": [0.5, 0.4, 0.3], "load_during": 1.2, "date": "2026-12-06T10:00:00Z",
              "modules": ["extract/encoder.py"],
              "figures": {"rate": 17.704, "table": {"columns": ["what", "s"], "rows": [["encode", "210.3"], ["extract", 246.4]]}}}
    (root / "bench" / "results" / "speed.json").write_text(json.dumps(result))
    (root / "BENCHMARKS.md").write_text(DOC)
    assert figures(root, "render").returncode == 0
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "result and document")
    return root


def test_render_writes_the_results_values_and_an_unchanged_tree_passes(repo: Path):
    text = (repo / "BENCHMARKS.md").read_text()
    assert "<!--fig speed:rate fmt=.1f-->17.7<!--/fig-->" in text
    assert "| what | s |\n|---|---|\n| encode | 210.3 |\n| extract | 246.4 |" in text
    assert "*Measured: `bench/results/speed.json` (commit " in text and "load 0.5 before, 1.2 during" in text
    assert "663,329" in text  # prose outside markers is never touched
    done = figures(repo, "check")
    assert done.returncode == 0, done.stderr
    # a document that changed nothing in the text by rendering again
    assert figures(repo, "render").returncode == 0 and (repo / "BENCHMARKS.md").read_text() == text


def test_a_committed_change_to_a_declared_module_is_caught_then_marked_stale(repo: Path):
    (repo / "extract" / "other.py").write_text("X = 2\n")  # not declared: still current
    git(repo, "commit", "-qam", "other module")
    assert figures(repo, "check").returncode == 0

    (repo / "extract" / "encoder.py").write_text("SPEED = 2\n")
    git(repo, "commit", "-qam", "faster encoder")
    changed_in = git(repo, "rev-parse", "--short", "HEAD")
    done = figures(repo, "check")
    assert done.returncode == 1
    assert "section '1. Speed'" in done.stderr and "speed is shown as current" in done.stderr
    assert "extract/encoder.py" in done.stderr

    assert figures(repo, "render").returncode == 0
    text = (repo / "BENCHMARKS.md").read_text()
    assert f"<!--fig-source speed stale={changed_in}-->**Stale since {changed_in}** (extract/encoder.py changed in 1 commit" in text
    assert "17.7" in text  # the measured value stays, marked stale
    assert figures(repo, "check").returncode == 0

    # a later change to the same module does not move "stale since", and check still passes
    (repo / "extract" / "encoder.py").write_text("SPEED = 3\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "even faster")
    assert figures(repo, "check").returncode == 0


def test_an_uncommitted_change_is_caught_too(repo: Path):
    (repo / "extract" / "encoder.py").write_text("SPEED = 5\n")
    done = figures(repo, "check")
    assert done.returncode == 1 and "section '1. Speed'" in done.stderr and "uncommitted" in done.stderr
    # as committed, nothing changed
    assert subprocess.run([sys.executable, str(repo / "bench" / "figures.py"), "check", "--root", str(repo), "--rev", "HEAD"],
                          capture_output=True, text=True, timeout=60).returncode == 0
    assert figures(repo, "render").returncode == 0
    assert "**Stale since uncommitted changes**" in (repo / "BENCHMARKS.md").read_text()
    assert figures(repo, "check").returncode == 0


def test_a_missing_result_is_caught(repo: Path):
    (repo / "bench" / "results" / "speed.json").unlink()
    done = figures(repo, "check")
    assert done.returncode == 1
    assert "section '1. Speed'" in done.stderr and "bench/results/speed.json is missing" in done.stderr
    assert figures(repo, "render").returncode == 0
    assert "**No raw result**" in (repo / "BENCHMARKS.md").read_text()


def test_a_figure_typed_by_hand_is_caught(repo: Path):
    path = repo / "BENCHMARKS.md"
    path.write_text(path.read_text().replace(">17.7<", ">19.0<"))
    done = figures(repo, "check")
    assert done.returncode == 1 and "speed:rate shows '19.0', its result gives '17.7'" in done.stderr
    path.write_text(path.read_text().replace("| encode | 210.3 |", "| encode | 200.0 |"))
    assert "speed:table" in figures(repo, "check").stderr


def test_a_figure_without_its_provenance_line_or_key_is_caught(repo: Path):
    path = repo / "BENCHMARKS.md"
    path.write_text(path.read_text() + "\n## 3. Elsewhere\n\nAgain <!--fig speed:rate fmt=.1f-->17.7<!--/fig-->, "
                    "and <!--fig speed:nope-->1<!--/fig-->.\n")
    err = figures(repo, "check").stderr
    assert "section '3. Elsewhere': shows figures of speed without its provenance line" in err
    assert "speed:nope: no figure 'nope'" in err
    # a marker at the start of a line would make GitHub show that line as raw HTML
    path.write_text(path.read_text().replace("The encoder runs at <!--fig", "The encoder runs at\n<!--fig"))
    assert "the marker of speed:rate starts a line" in figures(repo, "check").stderr


def test_the_repository_passes_check():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    # as committed (HEAD): a developer's uncommitted edit of a measured module is `check`'s business, not this test's
    done = subprocess.run([sys.executable, str(SCRIPT), "check", "--rev", "HEAD"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr


def test_a_merge_that_brings_an_older_change_keeps_a_stale_mark_valid(repo: Path):
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-qb", "side")
    (repo / "extract" / "encoder.py").write_text("SPEED = 7\n")
    git(repo, "add", "-A")
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "older change on a branch"], check=True,
                   env={**os.environ, "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z", "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z"})
    git(repo, "checkout", "-q", "main")
    assert git(repo, "rev-parse", "HEAD") == base
    (repo / "extract" / "encoder.py").write_text("SPEED = 2\n")
    git(repo, "commit", "-qam", "change on main")
    assert figures(repo, "render").returncode == 0
    git(repo, "commit", "-qam", "render")
    git(repo, "merge", "-q", "-X", "ours", "-m", "merge", "side")
    done = figures(repo, "check")  # "stale since" now names an older commit, but the figure is still shown stale
    assert done.returncode == 0, done.stderr


def test_a_name_with_spaces_or_dots_is_one_figure(repo: Path):
    result_path = repo / "bench" / "results" / "speed.json"
    result = json.loads(result_path.read_text())
    result["figures"]["groups"] = {"held out (new seed)": {"rate": 0.0667}, "reverb(rt60_s=[0.8, 0.8])": 17.3,
                                   "reverb(rt60_s=[0.8, 0.8]).x": 99.0, "it's": {"n": 3}}
    result_path.write_text(json.dumps(result))
    path = repo / "BENCHMARKS.md"
    path.write_text(path.read_text() + "\n<sub><!--fig-source speed--><!--/fig-source--></sub>\n"
                    '\nHeld out: <!--fig "speed:groups.held out (new seed).rate" fmt=.1%-->?<!--/fig-->; '
                    'reverb <!--fig "speed:groups.reverb(rt60_s=[0.8, 0.8])"-->?<!--/fig-->, longest name '
                    '<!--fig "speed:groups.reverb(rt60_s=[0.8, 0.8]).x"-->?<!--/fig-->, '
                    "<!--fig \"speed:groups.it's.n\"-->?<!--/fig-->.\n")
    assert figures(repo, "render").returncode == 0
    text = path.read_text()
    assert 'Held out: <!--fig "speed:groups.held out (new seed).rate" fmt=.1%-->6.7%<!--/fig-->' in text
    assert 'reverb <!--fig "speed:groups.reverb(rt60_s=[0.8, 0.8])"-->17.3<!--/fig-->' in text
    assert 'longest name <!--fig "speed:groups.reverb(rt60_s=[0.8, 0.8]).x"-->99.0<!--/fig-->' in text
    assert "<!--fig \"speed:groups.it's.n\"-->3<!--/fig-->" in text
    assert figures(repo, "check").returncode == 0
    assert figures(repo, "render").returncode == 0 and path.read_text() == text  # a second render changes nothing
    # without the quotes the key stops at the space: caught, not guessed
    path.write_text(text.replace('<!--fig "speed:groups.held out (new seed).rate" fmt=.1%-->',
                                 "<!--fig speed:groups.held out (new seed).rate fmt=.1%-->"))
    assert "no figure 'groups.held'" in figures(repo, "check").stderr


def test_a_merge_that_changes_a_module_itself_names_it(repo: Path):
    git(repo, "checkout", "-qb", "side")
    (repo / "extract" / "other.py").write_text("X = 3\n")
    git(repo, "commit", "-qam", "side: another module")
    git(repo, "checkout", "-q", "main")
    (repo / "extract" / "other.py").write_text("X = 4\n")
    git(repo, "commit", "-qam", "main: another module")
    subprocess.run(["git", "-C", str(repo), "merge", "-q", "--no-commit", "-X", "ours", "side"], check=True, capture_output=True)
    (repo / "extract" / "encoder.py").write_text("SPEED = 9\n")  # changed by the merge itself, on neither side
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "merge, with an edit")
    merge = git(repo, "rev-parse", "--short", "HEAD")
    assert figures(repo, "check").returncode == 1
    assert figures(repo, "render").returncode == 0
    assert f"**Stale since {merge}** (extract/encoder.py changed in 1 commit" in (repo / "BENCHMARKS.md").read_text()
