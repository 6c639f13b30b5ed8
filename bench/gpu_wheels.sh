#!/usr/bin/env bash
# Download, HERE (a machine with registry access), the wheels that bench/gpu_check.sh installs on a lent
# GPU machine, which has Python 3.12, torch, torchaudio, numpy, pandas, pyarrow, click, tqdm, fsspec,
# psutil, scipy, scikit-learn, matplotlib, cloudpickle, toolz, msgpack, pyyaml and jinja2, but not this
# project's other packages and no registry (/work/.library/device/KINDS.md). Versions: the project's lock.
#
#   bash bench/gpu_wheels.sh            # -> .whl/ (ignored by git; carried with `carry: [".whl"]`)
#
# encodec publishes no wheel (an sdist of pure Python): it is built here into a py3-none-any wheel.
# Everything must stay under the device tool's 64 MiB for the whole working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/work/main/.venv/bin/python}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || grep -qx '/.whl/' "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null \
    || echo '/.whl/' >> "$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p .whl
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
PACKAGES="zarr numcodecs donfig google-crc32c soundfile cffi pycparser dask distributed tornado tblib zict locket partd msgspec"
for name in $PACKAGES; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64 \
        -d .whl "$name==$(version "$name")"
done
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl "encodec==$(version encodec)"
du -ch .whl/*.whl | tail -1
total=$(du -cb .whl/*.whl | tail -1 | cut -f1)
if [ "$total" -gt $((56 * 1024 * 1024)) ]; then
    echo "wheels take $total bytes: too many for the 64 MiB working tree" >&2; exit 1
fi
