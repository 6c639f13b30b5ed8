"""The untrained codec's calibration on a real corpus: which utterances it is fitted on, and how its
codebooks are used (issue 17). Builds the codec exactly as `pipeline extract --weights untrained`
would for the corpus's training split (`extract.run._codec_for_new_store`, default settings), without
extracting anything, and writes ``bench/results/calibration.json``: the sample (ids, seconds,
counts by label, speaker, system) and, per level, the codewords the calibration frames use and those
equal to the zero vector.

    python bench/bench_calibration.py [--root /work/shared/data/offla19]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extract.codec import n_quantizers  # noqa: E402
from extract.datasets import get_dataset  # noqa: E402
from extract.run import ExtractConfig, _codec_for_new_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/work/shared/data/offla19")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "calibration.json"))
    args = parser.parse_args()
    config = ExtractConfig(dataset="asv19", root=args.root, out="-", weights="untrained", splits=["train"])
    plan = get_dataset("asv19").load(Path(args.root), ["train"]).table.reset_index(drop=True)
    load_before = list(os.getloadavg())
    started = time.perf_counter()
    _, _, info, record = _codec_for_new_store(config, plan, n_quantizers(config.bandwidth), print)
    result = {
        "benchmark": "calibration", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain")),
        "codec_sha256": info.sha256, "ssl_sha256": None,
        "machine": {"cpus": os.cpu_count(), "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                    "platform": platform.platform()},
        "load_before": load_before, "load_during": os.getloadavg()[0], "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "modules": ["extract/calibration.py", "extract/codec.py", "extract/lsuv.py", "extract/run.py"],
        "figures": {"build_seconds": round(time.perf_counter() - started, 1), "label": info.label, "origin": info.origin,
                    "calibration": record},
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["figures"]["calibration"]["codebooks"]))


if __name__ == "__main__":
    main()
