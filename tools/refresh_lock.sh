#!/usr/bin/env bash
# Regenerate the locks from pyproject.toml: universal locks (Python 3.11 to 3.13; Linux, macOS,
# Windows) with every package at an exact version and its hashes, resolved by uv from PyPI.
#   requirements-all.lock   the project with every extra (test, s3, serve), resolved first
#   requirements.lock       the default install (core + test), constrained to the versions above
#   requirements-s3.lock    core + test + s3        (python3 install.py --extras s3)
#   requirements-serve.lock core + test + serve     (python3 install.py --extras serve)
# so that an extra never moves a version of the default install.
# Then run `python3 install.py --fresh --extras all && .venv/bin/python -m pytest` on each Python
# before committing.
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
compile() {  # OUTPUT EXTRA... [-- UV ARGS]
    local out="$1"; shift
    local extras=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do extras+=(--extra "$1"); shift; done
    [ "${1:-}" = "--" ] && shift
    "$UV" pip compile pyproject.toml "${extras[@]}" --universal --python-version 3.11 --generate-hashes \
        --index-url https://pypi.org/simple --custom-compile-command "tools/refresh_lock.sh" \
        --quiet --output-file "$out" "$@"
}
compile requirements-all.lock test s3 serve
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
# the same versions, without hashes or comments (a constraints file)
# (markers kept: some packages resolve to other versions on other Pythons)
grep -E '^[][A-Za-z0-9_.-]+==' requirements-all.lock | sed -E 's/ *\\$//; s/\[[^]]*\]==/==/' > "$constraints"
compile requirements.lock test -- --constraint "$constraints"
compile requirements-s3.lock test s3 -- --constraint "$constraints"
compile requirements-serve.lock test serve -- --constraint "$constraints"
