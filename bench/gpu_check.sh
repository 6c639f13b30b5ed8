#!/usr/bin/env bash
# The GPU run (issue 21, item 6), on a lent GPU machine with no registry access. First, HERE:
#     bash bench/gpu_wheels.sh          # the project's packages the device lacks -> .whl/ (about 7 MB)
# then through the device tool (the working tree travels; .whl must be carried):
#     run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=600)
# It installs the wheels into /tmp/site, runs bench/gpu_check.py (about 8 minutes: a generated corpus,
# codec and SSL extraction, code agreement with the CPU, an epoch, a paper sweep trial, an hour-long
# file scored) and leaves gpu.json and the step logs in $OUT (or bench/results/ when $OUT is unset).
# Arguments are passed to bench/gpu_check.py (e.g. --files 200 for a shorter run).
set -uo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
[ -n "${OUT:-}" ] && export BENCH_RESULTS_DIR="$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
timeout 560 python3 bench/gpu_check.py --device cuda "$@"
