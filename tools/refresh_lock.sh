#!/usr/bin/env bash
# Regenerate requirements.lock from pyproject.toml: one universal lock (Python 3.11 to 3.13; Linux,
# macOS, Windows) with every package at an exact version and its hashes, resolved by uv from PyPI.
# Then run `python3 install.py --fresh && .venv/bin/python -m pytest` on each Python before committing.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
if command -v uv >/dev/null 2>&1; then
    UV=uv
else
    tools_env="${TMPDIR:-/tmp}/rvq-uv-$UV_VERSION"
    [ -x "$tools_env/bin/uv" ] || { python3 -m venv "$tools_env" && "$tools_env/bin/pip" install --quiet "uv==$UV_VERSION"; }
    UV="$tools_env/bin/uv"
fi
"$UV" pip compile pyproject.toml --extra test --universal --python-version 3.11 --generate-hashes \
    --index-url https://pypi.org/simple --custom-compile-command "tools/refresh_lock.sh" \
    --quiet --output-file requirements.lock "$@"
