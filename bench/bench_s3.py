"""Benchmark: what a store on an S3 object store costs, in requests, bytes and time, against the
local file system on the same corpus (issue 21, item 2).

    python bench/bench_s3.py --root CORPUS --dataset asv19 --out /tmp/bench_s3 [--split train,dev] [--files N] \
        [--ssl wavlm-large [--ssl-layers 1-12]] [--result s3]

``--files N``: N utterances of each split, half bona fide (the first by id), written as a manifest in OUT (a corpus
small enough to extract twice). ``--ssl MODEL``: the store also gets the SSL stream (untrained weights,
the default storage, int8), and training reads it lazily (``ram_mb = 0``: one ranged GET of a chunk per
crop), as a stream larger than the memory is read each epoch: the stream whose requests and bytes
matter at scale (a chunk holds 340 int8 frames of 12 layers, 6.8 s; a shard 16 chunks, 109 s).

The S3 side is moto's S3 API server on loopback (the S3 extra), whose request log is counted: every
PUT, GET, HEAD, LIST (a GET on the bucket with ``list-type``), DELETE and POST the client stack
(s3fs through fsspec, as Zarr v3 opens it) sends. Loopback has no network latency or bandwidth limit,
so the times compare the client stacks, not a real network: for a real endpoint, multiply the request
counts by its per-request latency. Bytes are the objects' sizes in the bucket after each step; the
codec weights file (93 MB, once per store) is counted apart from the features. On a small corpus the
request counts are mostly per-run costs (store metadata, the lease's heartbeat and checks), not per
audio hour: read them as an upper bound of the per-hour rate.

Steps, each on the local disk and on S3: extraction (in this machine's default mode) of the corpus,
`pipeline verify`, and two epochs of `pipeline train` reading the store. The codec is built once
before both (``--weights untrained``: as `pipeline extract` builds it, `extract.run`, timed apart as
``codec_build_seconds``) and its file is given to both extractions (``--weights FILE``), so both do
the same work: the time ratio compares the stores alone. Bytes: the stream's per audio hour
(``stream_bytes_per_audio_hour``: the frame arrays, offsets and utterance tables, which grow with
the audio) apart from the per-store tables that do not (``fixed_store_bytes``: the codec weights
file, the codebooks, an SSL stream's PCA basis, the arrays' metadata); with ``--ssl``, the SSL
stream's own (``ssl_bytes_per_audio_hour``). Writes its result through `bench/results.py`
(``bench/results/NAME.json``, default ``s3``) and prints the figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import results as bench_results  # noqa: E402  (bench/results.py: the one stamp)

REQUEST = re.compile(r'"(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP')
ANSI = re.compile(r"\x1b\[[0-9;]*m")
"""moto's log colours some request lines (e.g. 206 partial reads): the codes are stripped first."""
MODULES = ["store/writer.py", "store/reader.py", "store/format.py", "extract/run.py", "extract/unit.py",
           "extract/committer.py", "common/lease.py", "classify/data.py", "classify/train.py"]
SSL_MODULES = ["extract/ssl_stream.py", "store/sslstorage.py", "classify/frames.py", "classify/sources.py"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def count_requests(log: Path, start: int) -> tuple[dict[str, int], int]:
    """Requests in the moto log after byte ``start``, by kind; and the new end of the log."""
    text = log.read_bytes()
    counts: collections.Counter[str] = collections.Counter()
    for method, target in REQUEST.findall(ANSI.sub("", text[start:].decode(errors="replace"))):
        kind = "LIST" if method == "GET" and ("list-type" in target or target.rstrip("/").count("/") <= 1 and "?" in target) else method
        counts[kind] += 1
    return dict(counts), len(text)


FIXED_NAMES = ("codec_weights.th", "codebooks", "pca_mean", "pca_basis")
"""Path parts of a store's objects whose size does not grow with the audio (one copy per store)."""


def fixed_object(path: str) -> bool:
    """Whether an object of the store is a per-store table (see :data:`FIXED_NAMES`) or metadata
    (``zarr.json``, the lease), not a part of a stream that grows with the audio."""
    parts = path.split("/")
    return parts[-1] in ("zarr.json", "lock.json") or any(name in parts for name in FIXED_NAMES)


def build_codec(args: argparse.Namespace, out: Path) -> tuple[str, float]:
    """(the ``--weights`` value both extractions get, seconds it took to make): an untrained codec
    built once, exactly as `pipeline extract --weights untrained` builds it for a new store
    (`extract.run`'s own function, over the same plan), saved to ``OUT/codec_weights.th``; any other
    ``--weights`` as it is (a file, or the pretrained codec both sides read from the same cache)."""
    if args.weights != "untrained":
        return args.weights, 0.0
    sys.path.insert(0, str(ROOT))
    from extract.codec import n_quantizers  # noqa: PLC0415
    from extract.datasets import get_dataset  # noqa: PLC0415
    from extract.run import ExtractConfig, _codec_for_new_store  # noqa: PLC0415

    started = time.perf_counter()
    splits = [s.strip() for s in args.split.split(",") if s.strip()] or None
    config = ExtractConfig(dataset=args.dataset, root=args.root, out=str(out / "unused.zarr"), splits=splits,
                           weights="untrained")
    plan = get_dataset(args.dataset).load(Path(args.root), splits).table.reset_index(drop=True)
    data = _codec_for_new_store(config, plan, n_quantizers(config.bandwidth), print)[1]
    path = out / "codec_weights.th"
    path.write_bytes(data)
    return str(path), time.perf_counter() - started


def write_manifest(args: argparse.Namespace, out: Path) -> str:
    """OUT/manifest.csv: about ``--files`` utterances of each of the splits, half of each label (path, label,
    utt_id, speaker, system, split), so that the benchmark's corpus is made from the corpus itself."""
    sys.path.insert(0, str(ROOT))
    from extract.datasets import get_dataset  # noqa: PLC0415

    splits = [x.strip() for x in args.split.split(",") if x.strip()] or None
    table = get_dataset(args.dataset).load(Path(args.root), splits).table
    # half bona fide, half spoof (training and the EER need both), the first of each by id
    pick = table.sort_values("utt_id").groupby(["split", "label"], observed=True).head((args.files + 1) // 2)
    path = out / "manifest.csv"
    pick[["path", "label", "utt_id", "speaker", "system", "split"]].to_csv(path, index=False)
    return str(path)


def run(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"pipeline {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return seconds, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--dataset", default="asv19")
    parser.add_argument("--split", default="train,dev")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--weights", default="untrained")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--files", type=int, default=0, help="the first N utterances of each split (0: all)")
    parser.add_argument("--ssl", default=None, help="also the SSL stream of this model (untrained weights)")
    parser.add_argument("--ssl-layers", default=None, help="its layers (default: the model's default, 1-12)")
    args = parser.parse_args()

    import s3fs  # the S3 extra

    args.out.mkdir(parents=True, exist_ok=True)
    if args.files:
        args.root, args.dataset = write_manifest(args, args.out), "manifest"
    port = free_port()
    log = args.out / "moto.log"
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log.open("w"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
           "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(ROOT)}
    codec_file, codec_seconds = build_codec(args, args.out)  # once, for both extractions
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        fs = s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"], endpoint_url=endpoint)
        fs.mkdir("bench")
        local = args.out / "local.zarr"
        shutil.rmtree(local, ignore_errors=True)
        shutil.rmtree(args.out / "run_local", ignore_errors=True)
        shutil.rmtree(args.out / "run_s3", ignore_errors=True)
        remote = "s3://bench/store.zarr"
        steps = {}
        position = 0
        common = ["--dataset", args.dataset, "--root", args.root, "--split", args.split, "--weights", codec_file]
        ssl = ["--ssl", args.ssl, "--ssl-weights", "untrained", *(["--ssl-layers", args.ssl_layers] if args.ssl_layers else [])]
        layers = f'layers="{args.ssl_layers}", ' if args.ssl_layers else ""
        trained = (["--variant", "ssl+qaf-static", "--set", f"ssl_kwargs={{{layers}proj_dim=64, ram_mb=0}}"]
                   if args.ssl else [])  # ram_mb 0: each crop read from the store, as a stream larger than RAM
        for target, where in ((str(local), "local"), (remote, "s3")):
            commands = {
                "extract": ["extract", *common, *(ssl if args.ssl else []), "--out", target],
                "verify": ["verify", target],
                "train": ["train", "--features", target, "--out", str(args.out / f"run_{where}"),
                          "--set", f"epochs={args.epochs}", *trained],
            }
            for step, command in commands.items():
                seconds, output = run(command, env)
                requests, position = count_requests(log, position)
                steps[f"{step}_{where}"] = {"seconds": round(seconds, 2), "requests": requests if where == "s3" else None}
            if where == "s3":
                sizes = fs.du("bench/store.zarr", total=False)
                fixed = {path: size for path, size in sizes.items() if fixed_object(path.split("store.zarr/", 1)[-1])}
                steps[f"extract_{where}"]["bytes"] = int(sum(sizes.values()))
                steps[f"extract_{where}"]["bytes_fixed"] = int(sum(fixed.values()))  # once per store, not per hour
                steps[f"extract_{where}"]["bytes_codec_weights"] = int(sum(size for path, size in sizes.items()
                                                                           if path.endswith("codec_weights.th")))
                steps[f"extract_{where}"]["objects"] = len(sizes)
                steps[f"extract_{where}"]["objects_fixed"] = len(fixed)
                steps[f"extract_{where}"]["bytes_ssl"] = int(sum(size for path, size in sizes.items()
                                                                 if "/streams/ssl/" in path and not fixed_object(path)))
                steps[f"extract_{where}"]["objects_ssl"] = sum("/streams/ssl/" in path for path in sizes)
        info = json.loads(run(["inspect", str(local), "--json"], env)[1])
        audio_seconds = info["audio_seconds"]
    finally:
        server.terminate()
        server.wait()
    hours = audio_seconds / 3600
    per_hour = {step: {kind: round(n / hours, 1) for kind, n in (value["requests"] or {}).items()}
                for step, value in steps.items() if value.get("requests")}
    figures = {
        "audio_seconds": audio_seconds,
        "steps": steps,
        "requests_per_audio_hour": per_hour,
        "codec_build_seconds": round(codec_seconds, 2),  # once, before both extractions (0: a given file)
        # what grows with the audio (the streams' frames, offsets, per-utterance tables), per audio hour;
        # apart from what every store holds once (codec weights, codebooks, a PCA basis, metadata)
        "stream_bytes_per_audio_hour": round((steps["extract_s3"]["bytes"] - steps["extract_s3"]["bytes_fixed"]) / hours),
        "fixed_store_bytes": steps["extract_s3"]["bytes_fixed"],
        "s3_over_local_time": {step: round(steps[f"{step}_s3"]["seconds"] / steps[f"{step}_local"]["seconds"], 2)
                               for step in ("extract", "verify", "train")},
        "utterances": info["ok"],
    }
    if args.ssl:
        stream = info["streams"]["ssl"]
        figures["ssl"] = {"model": args.ssl, "layers": args.ssl_layers or "default", "dtype": stream["dtype"],
                          "frame_shape": stream["frame_shape"], "about": stream["about"]}
        figures["ssl_bytes_per_audio_hour"] = round(steps["extract_s3"]["bytes_ssl"] / hours)
    rec = bench_results._CURRENT[-1] if bench_results._CURRENT else None
    if rec is not None:
        rec.codec_weights(None, info["weights"]["sha256"])
        if args.ssl:
            sha = re.search(r"weights sha256 ([0-9a-f]+)", info["streams"]["ssl"]["about"])
            rec.ssl_weights(None, sha[1] if sha else None)  # the short form the stream's record names
    bench_results.record(**figures)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    sys.exit(bench_results.run(main, "s3", MODULES + (SSL_MODULES if "--ssl" in sys.argv else [])))
