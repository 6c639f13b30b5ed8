#!/usr/bin/env python3
"""Set up rvq-antispoof from the tested lock:  python3 install.py

Creates a virtual environment (default ``.venv``), installs every package at the exact version and
hash of ``requirements.lock`` (one lock for Python 3.11 to 3.13 on Linux, macOS and Windows), then
this project itself (editable, no further dependencies), and runs ``pipeline doctor``.

    python3 install.py                 # .venv with the python3 that runs this script
    python3.13 install.py --venv ENV   # another interpreter, another folder
    python3 install.py --fresh         # delete the folder first
    python3 install.py --extras s3     # also the S3 client and test server (requirements-s3.lock)
    python3 install.py --extras serve  # also the scoring service (requirements-serve.lock)
    python3 install.py --extras all    # everything (requirements-all.lock; what CI runs)

Each extra has its own complete lock, resolved with the same versions as the default one, so an
extra adds packages and never moves one.

This file must stay readable by old interpreters, so that they get the one-line refusal below
instead of a syntax error: no f-strings, no annotations.
"""

import sys

SUPPORTED = ((3, 11), (3, 12), (3, 13))

if tuple(sys.version_info[:2]) not in SUPPORTED:
    sys.stderr.write(
        "rvq-antispoof needs Python 3.11, 3.12 or 3.13, but %s is Python %s; run this script with one of "
        "those (e.g. python3.12 install.py, or `pyenv install 3.12`).\n" % (sys.executable, sys.version.split()[0])
    )
    sys.exit(1)

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import venv  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXTRAS = ("s3", "serve", "all")


def venv_python(folder):
    if os.name == "nt":
        return os.path.join(folder, "Scripts", "python.exe")
    return os.path.join(folder, "bin", "python")


def run(*command):
    print("+ " + " ".join(command), flush=True)
    return subprocess.call(command)


def main():
    parser = argparse.ArgumentParser(description="Install rvq-antispoof into a virtual environment from the tested lock.")
    parser.add_argument("--venv", default=os.path.join(HERE, ".venv"), help="virtual environment folder (default .venv)")
    parser.add_argument("--lock", default=None,
                        help="lock file (default requirements.lock, or requirements-EXTRA.lock with --extras)")
    parser.add_argument("--extras", default=None, choices=EXTRAS,
                        help="optional parts: s3 (object stores), serve (the scoring service), all")
    parser.add_argument("--fresh", action="store_true", help="delete the virtual environment first")
    args = parser.parse_args()
    if args.lock is None:
        name = "requirements.lock" if args.extras is None else "requirements-%s.lock" % args.extras
        args.lock = os.path.join(HERE, name)

    if args.fresh and os.path.exists(args.venv):
        shutil.rmtree(args.venv)
    python = venv_python(args.venv)
    if os.path.exists(python):
        probe = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        mine = "%d.%d" % sys.version_info[:2]
        if probe.stdout.strip() != mine:
            sys.stderr.write("%s is a Python %s environment, not %s: use --fresh or another --venv\n"
                             % (args.venv, probe.stdout.strip() or "(broken)", mine))
            return 1
    else:
        print("creating %s (Python %s)" % (args.venv, sys.version.split()[0]), flush=True)
        venv.EnvBuilder(with_pip=True).create(args.venv)

    # The lock pins every package with its hashes: what CI tested is what gets installed.
    status = run(python, "-m", "pip", "install", "--require-hashes", "--disable-pip-version-check",
                 "-r", args.lock)
    if status:
        sys.stderr.write("installing the locked packages failed (see above); nothing of this project was installed\n")
        return status
    status = run(python, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-e", HERE)
    if status:
        return status
    return run(python, "-m", "pipeline", "doctor")


if __name__ == "__main__":
    sys.exit(main())
