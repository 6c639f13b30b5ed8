"""A bounded load test of `pipeline serve` on loopback: N concurrent clients post recordings until a
fixed number of requests is done or a fixed time has passed; latency percentiles, throughput and
errors by status.

    python bench/bench_serve.py [--model RUN] [--clients 4] [--requests 40] [--seconds 180]
        [--workers 1] [--queue 8] [--file AUDIO] [--result serve]

The server is started here, as a subprocess on 127.0.0.1 (`tests.serving.start_server`), and never
anywhere else. Without ``--model`` the tests' tiny workflow is built in a temporary folder
(`tests.scoring.build`: an UNTRAINED codec and a 3-epoch model); without ``--file`` the upload is
that workflow's eval recordings joined into one FLAC. Requests beyond ``workers`` + ``queue``
waiting are answered 503 by design: they are counted as errors by status, not hidden.

The result is ``bench/results/serve.json`` (`bench/results.py`; ``--result NAME`` for another name,
``none`` for none); its load and date are those of the load test itself (the building of the tiny
workflow is not in them).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import results as bench_results  # noqa: E402  (bench/results.py: the raw result of this run)

MODULES = ["pipeline/serve/app.py", "classify/timeline.py", "classify/ood.py", "classify/verdict.py"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--file", type=Path, default=None)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--queue", type=int, default=8)
    bench_results.add_argument(parser, "serve")
    args = parser.parse_args()
    if args.model is not None and args.file is None:
        parser.error("--model needs --file (the recording to post)")
    import httpx
    import soundfile as sf

    from tests.serving import start_server, stop

    scratch = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    model = args.model
    if model is None:
        from tests.scoring import build

        print("building the tests' tiny workflow (UNTRAINED codec) ...", flush=True)
        workflow = build(scratch)
        model = workflow.run
        files = workflow.files("eval")
    if args.file is not None:
        blob, name = args.file.read_bytes(), args.file.name
    else:
        data = np.concatenate([sf.read(p, dtype="float32")[0] for p in files])
        buf = io.BytesIO()
        sf.write(buf, data, 16000, format="FLAC")
        blob, name = buf.getvalue(), "joined.flac"
    audio_seconds = sf.info(io.BytesIO(blob)).duration
    proc, url = start_server(model, "--workers", str(args.workers), "--queue", str(args.queue), "--timeout", "600")
    assert url.startswith("http://127.0.0.1:")
    health = httpx.get(url + "/health", timeout=10).json()
    described = httpx.get(url + "/model", timeout=10).json()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    issued = [0]
    deadline = time.monotonic() + args.seconds
    rec = bench_results.Recorder(args.result, MODULES, tee=False, interval_s=2.0)  # the load test's stamp and load

    def client() -> None:
        with httpx.Client(timeout=600) as session:
            while time.monotonic() < deadline:
                with lock:
                    if issued[0] >= args.requests:
                        return
                    issued[0] += 1
                started = time.monotonic()
                try:
                    status = str(session.post(url + "/score", files={"file": (name, blob)}).status_code)
                except httpx.HTTPError as err:
                    status = type(err).__name__
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == "200":
                        latencies.append(time.monotonic() - started)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except BaseException:
        rec.abort()  # a half run is not a result
        stop(proc)
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    wall = time.monotonic() - started
    stop(proc)
    shutil.rmtree(scratch, ignore_errors=True)
    ok = np.array(latencies)
    figures = {"clients": args.clients, "requests_asked": args.requests, "seconds_cap": args.seconds,
               "requests_done": sum(statuses.values()), "ok": int(ok.size), "statuses": statuses,
               "errors": sum(v for k, v in statuses.items() if k != "200"), "wall_seconds": round(wall, 2),
               "throughput_per_second": round(ok.size / wall, 3), "upload_audio_seconds": round(audio_seconds, 2),
               "upload_bytes": len(blob), "server": {"workers": args.workers, "queue": args.queue},
               "latency_seconds": ({f"p{q}": round(float(np.percentile(ok, q)), 3) for q in (50, 90, 95, 99)}
                                   | {"max": round(float(ok.max()), 3), "mean": round(float(ok.mean()), 3)})
               if ok.size else None,
               "codec_weights": health["model"]["codec_weights"], "model": health["model"]["name"],
               "untrained": health["model"]["untrained"]}
    print(json.dumps(figures, indent=2))
    rec.codec_weights(None, sha256=described["codec_weights"]["sha256"])
    if described.get("ssl_weights"):
        rec.ssl_weights(None, sha256=described["ssl_weights"]["sha256"])
    rec.figures.update(figures)
    rec.finish()  # bench/results/NAME.json (nothing for --result none)


if __name__ == "__main__":
    main()
