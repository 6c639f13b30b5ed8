#!/usr/bin/env python3
"""Would a fresh `pip install rvq-antispoof` still work? Find out before users do.

Installs the NEWEST versions that pyproject.toml allows (not the lock) into a scratch virtual
environment, runs `pipeline doctor` and the fast tests, and, for every failing test, finds which
upgraded package breaks it: each package newer than the lock is put back to its locked version in
turn and the failing tests are run again. Writes a Markdown report (stdout and --report FILE).

    python3 tools/check_newest.py                                  # this interpreter
    PYENV_VERSION=3.13.0 python3 tools/check_newest.py             # another one
    python3 tools/check_newest.py --override torch==2.14.1 --override torchaudio==2.11.1
                                                                   # try a candidate torch pair

Run by hand (it downloads and installs a whole environment, a few minutes with pip's cache); its
last result goes into the README's Compatibility section.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+ " + " ".join(command), file=sys.stderr, flush=True)
    return subprocess.run(command, text=True, capture_output=True, **kwargs)


def locked_versions(python: str) -> dict[str, str]:
    """name -> version the lock pins for the scratch interpreter's Python and platform."""
    code = (
        "import json, sys\n"
        "from packaging.requirements import Requirement\n"
        "out = {}\n"
        "for line in open(sys.argv[1]).read().splitlines():\n"
        "    text = line.split('\\\\')[0].strip()\n"
        "    if not text or text.startswith(('#', '-')): continue\n"
        "    r = Requirement(text)\n"
        "    if r.marker is None or r.marker.evaluate():\n"
        "        out[r.name.lower()] = next(s.version for s in r.specifier if s.operator == '==')\n"
        "print(json.dumps(out))\n"
    )
    result = run([python, "-c", code, str(LOCK)])
    result.check_returncode()
    return json.loads(result.stdout)


def installed_versions(python: str) -> dict[str, str]:
    result = run([python, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"])
    result.check_returncode()
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(result.stdout)}


def failing_tests(output: str) -> list[str]:
    """Node ids from pytest's ``-rfE`` summary lines (``FAILED tests/x.py::test_y - ...``)."""
    return sorted({m.group(2) for m in re.finditer(r"^(FAILED|ERROR) (\S+)", output, re.MULTILINE)})


def pytest(python: str, tests: list[str] | None = None) -> subprocess.CompletedProcess:
    command = [python, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-m", "not slow"]
    return run(command + (tests or []), cwd=ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", default=None, help="scratch environment folder (default: a temporary one)")
    parser.add_argument("--override", action="append", default=[], metavar="REQ",
                        help="install this requirement over the newest set (repeatable), e.g. torch==2.14.1")
    parser.add_argument("--no-bisect", action="store_true", help="do not look for the package behind each failure")
    parser.add_argument("--report", default=None, help="also write the Markdown report to this file")
    args = parser.parse_args()

    folder = Path(args.venv or tempfile.mkdtemp(prefix="rvq-newest-"))
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    python = str(folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    lines = [f"## Newest-versions check, {datetime.date.today().isoformat()}", "",
             f"Python {platform.python_version()} on {platform.platform(terse=True)}; scratch environment {folder}; "
             f"command: `{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`", ""]

    install = run([python, "-m", "pip", "install", "--upgrade", "--upgrade-strategy", "eager",
                   "--disable-pip-version-check", "-e", f"{ROOT}[test]"])
    if install.returncode:
        lines += ["**The newest allowed versions do not install:**", "", "```", install.stderr[-3000:], "```"]
        return report(lines, args.report, 1)
    if args.override:
        forced = run([python, "-m", "pip", "install", "--disable-pip-version-check", *args.override])
        if forced.returncode:
            lines += [f"**The overrides {args.override} do not install:**", "", "```", forced.stderr[-3000:], "```"]
            return report(lines, args.report, 1)
        lines += [f"Overrides installed on top: {', '.join(args.override)}", ""]

    locked = locked_versions(python)
    newest = installed_versions(python)
    upgraded = {name: (locked[name], newest[name]) for name in sorted(locked)
                if name in newest and newest[name] != locked[name]}
    lines += ["| package | lock | newest allowed |", "|---|---|---|"]
    lines += [f"| {name} | {old} | {new} |" for name, (old, new) in upgraded.items()] or ["| (none) | | |"]
    lines.append("")

    doctor = run([python, "-m", "pipeline", "doctor"], cwd=ROOT)
    lines += [f"`pipeline doctor`: exit {doctor.returncode}" + ("" if doctor.returncode == 0 else " (extraction cannot run)"), ""]
    if doctor.returncode:
        lines += ["```", doctor.stdout[-3000:], "```", ""]

    tests = pytest(python)
    summary = (tests.stdout.strip().splitlines() or ["(no output)"])[-1]
    failures = failing_tests(tests.stdout)
    lines += [f"Fast tests (`pytest -m 'not slow'`): {summary}", ""]
    if failures and not args.no_bisect and upgraded:
        lines += ["| failing test | broken by (passes with the locked version) |", "|---|---|"]
        culprits: dict[str, list[str]] = {test: [] for test in failures}
        for name, (old, new) in upgraded.items():
            if run([python, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", f"{name}=={old}"]).returncode:
                continue
            rerun = failing_tests(pytest(python, failures).stdout)
            for test in failures:
                if test not in rerun:
                    culprits[test].append(f"{name} {new} (lock {old})")
            run([python, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", f"{name}=={new}"])
        lines += [f"| `{test}` | {', '.join(c) or 'no single package: several together, or not a version change'} |"
                  for test, c in culprits.items()]
        lines.append("")
    elif failures:
        lines += ["Failing tests:", "", *(f"- `{t}`" for t in failures), ""]
    status = 1 if failures or doctor.returncode or tests.returncode else 0
    lines.append("Result: **" + ("the newest allowed versions work" if status == 0 else "BROKEN: see above") + "**")
    return report(lines, args.report, status)


def report(lines: list[str], path: str | None, status: int) -> int:
    text = "\n".join(lines) + "\n"
    print(text)
    if path:
        Path(path).write_text(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
