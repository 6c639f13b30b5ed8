"""A reader that loops over a store while another process writes it: `inspect`, then (once the store
is finished) every utterance of every finished stream through the reader. Run as
``python -m tests.reliability.read_loop STORE STOP_FILE OUT.json``; it stops when STOP_FILE exists
and writes what it saw: reads, errors (with their messages), and a digest of each finished read.

Reads before the store's attributes exist (no store yet, or being created) are not errors. From then
on every read must succeed, and every read of a finished stream must give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from store.inspect import inspect_store
from store.reader import FeatureStore, StoreReadError


def finished_digests(url: str) -> dict[str, str]:
    """sha256 of each finished stream, read utterance by utterance, with its offsets."""
    store = FeatureStore(url, in_memory=False)
    out = {}
    for name in store.streams:
        stream = store.stream(name)
        digest = hashlib.sha256(stream.offsets.tobytes())
        for row in range(len(stream.offsets) - 1):
            digest.update(stream.utterance(row).tobytes())
        out[name] = digest.hexdigest()
    return out


def main(url: str, stop: Path, out: Path) -> None:
    seen = {"inspect": 0, "finished_reads": 0, "not_yet": 0, "errors": [], "digests": {}, "states": []}
    started = False
    while not stop.exists():
        try:
            info = inspect_store(url)
            started = True
            seen["inspect"] += 1
            if not seen["states"] or seen["states"][-1] != info["state"]:
                seen["states"].append(info["state"])
            if info["state"] == "complete":
                for name, digest in finished_digests(url).items():
                    seen["digests"].setdefault(name, [])
                    if digest not in seen["digests"][name]:
                        seen["digests"][name].append(digest)
                seen["finished_reads"] += 1
        except StoreReadError as err:
            if not started and ("no zarr.json" in str(err) or "being created" in str(err)):
                seen["not_yet"] += 1
            else:
                seen["errors"].append(f"{type(err).__name__}: {err}")
        except Exception as err:  # noqa: BLE001 - every other failure is what the test looks for
            seen["errors"].append(f"{type(err).__name__}: {err}")
        time.sleep(0.02)
    out.write_text(json.dumps(seen, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
