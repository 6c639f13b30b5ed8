"""The untrained codec of a whole store: its calibration sample and how every level uses its codebook
(issue 17, items 1 and 2), read from a store made by `pipeline extract --weights untrained`.

    python bench/bench_codebooks.py --store offla19.zarr [--result codebooks]

Reads what `pipeline inspect --json` reports (``weights.calibration``: seed, utterance ids, seconds,
splits; ``codebooks``: per level the codebook size, codewords equal to the zero vector, codes used
by the store's frames and by the calibration frames) and counts the calibration sample by label,
speaker and system from the store's own utterance table. Nothing is re-computed here: the figures
are the store's records, made by the extraction (`extract/calibration.py`, `store/codebooks.py`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import results as bench_results  # noqa: E402  (bench/results.py)

from store.reader import FeatureStore  # noqa: E402

MODULES = ["extract/calibration.py", "extract/codec.py", "extract/lsuv.py", "extract/run.py", "store/codebooks.py",
           "store/inspect.py"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    args = parser.parse_args()
    done = subprocess.run([sys.executable, "-m", "pipeline", "inspect", args.store, "--json"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    weights, codebooks = report["weights"], report["codebooks"]
    calibration = weights.get("calibration") or {}
    table = FeatureStore(args.store).utterances.set_index("utt_id")
    sample = table.loc[calibration.get("utterances", [])]
    counts = {key: dict(sorted(Counter(sample[key].astype(str)).items()))
              for key in ("label", "speaker", "system", "split") if key in sample}
    levels = codebooks["levels"]
    print(f"## Codebook use of {report['store']}\n\n{weights['label']}\n")
    print(f"Calibration sample: seed {calibration.get('seed')}, {len(sample)} utterances, "
          f"{calibration.get('seconds', 0):.1f} s, splits {calibration.get('splits')}; {counts}\n")
    print(f"### Codebook use per level ({codebooks['frames']:,} frames)\n")
    print("| level | codewords | used by the store's frames | used by the calibration frames | equal to the zero vector |")
    print("|---|---|---|---|---|")
    for level in levels:
        print(f"| {level['level']} | {level['size']} | {level['used']} | {level['used_calibration']} | {level['zero']} |")
    bench_results.record(
        codec_weights=Path(args.store) / "codec_weights.th", store=report["store"], label=weights["label"], frames=codebooks["frames"],
        utterances=report["ok"], audio_seconds=report["audio_seconds"],
        calibration={"seed": calibration.get("seed"), "utterances": len(sample),
                     "seconds": calibration.get("seconds"), "splits": calibration.get("splits"), **counts},
        levels=levels, max_zero_share=max(level["zero"] / level["size"] for level in levels),
        min_used_share=min(level["used"] / level["size"] for level in levels))


if __name__ == "__main__":
    sys.exit(bench_results.run(main, "codebooks", MODULES))
