"""Benchmark of `pipeline extract` on CPU: cache size, throughput against the bare encoder and a
naive per-file loop, 1 vs 2 dask workers, batched vs one-by-one code agreement, and where the CPU
time goes (torch threads, batch size, the memory allocator).

    python bench/bench_extract.py [--store /tmp/bench/offla19.zarr] [--split dev] [--limit N]
                                  [--in-process] [--tuning] [--skip naive,workers2,onebyone,probe]

Needs a finished full-corpus store (``--store``, made by ``pipeline extract``): its sizes give the
cache cost per audio second, and its ``codec_weights.th`` is the codec every measurement here uses
(so no k-means runs in the timed commands). When these results were measured the pipeline treated
a weights FILE as trained codec weights and labelled the temporary stores "pretrained" (fixed since:
untrained weights saved by this tool now stay UNTRAINED, and weights saved before that fix are
"EnCodec weights from FILE (not the published checkpoint)"); they are the UNTRAINED codec's (seeded
random encoder, k-means codebooks, before LSUV) whatever those labels say: every number here is for
that codec. Its architecture, and so its cost, is that of the real EnCodec 24 kHz; its codes'
statistics are not.

Measurements, on the ``--split`` subset (with ``--limit N``: N utterances evenly spaced over the
split's protocol, which is grouped by label and speaker, fed to the pipeline as a manifest):

1. cache size: codes / latent bytes on disk of the full store per audio second (``inspect_store``),
   against dense float32 per-quantizer embeddings (75 x n_q x 128 x 4 B/s);
2. throughput (audio s per wall s) of ``pipeline extract --workers 1`` against
   (a) the bare compute floor: all audio decoded into RAM first, then only ``BatchEncoder.encode``
       timed (after a 1 s warm-up), over the pipeline's own batches (units of ``unit_size``
       utterances in plan order, length-sorted batches of ``batch_seconds`` padded audio inside
       each unit), same torch threads;
   (b) a naive loop: per file soundfile read + ``convert_audio`` + ``EncodecModel.encode``, one at
       a time (under ``torch.no_grad``), no batching, no overlap;
   and, with ``--in-process``, ``--workers 0`` (no dask); with ``--tuning``, the pipeline with the
   faster CPU settings a user can choose today (TUNING);
3. ``--workers 1`` vs ``--workers 2`` (torch threads split: cores // workers each);
4. ``--batch-seconds 64`` (the old default) and the current default vs ``--batch-seconds 0`` (one
   utterance per forward): share of
   codes that differ, and share of frames whose summed level embedding sum_q C_q[code_q] differs by
   more than 1e-4 (max over dims); also bare vs pipeline, 1 vs 2 workers, naive vs pipeline;
5. probes: the bare encoder on the subset's first ``--probe-files`` files in a fresh process per
   setting (PROBES: torch threads, batch seconds, OMP_WAIT_POLICY, glibc malloc variables), with
   user / system CPU time and minor page faults.

The machine is assumed shared: the load averages (``/proc/loadavg``) before and after every
measurement, and the CPU each one got (CPU time / wall time), are printed with it.
Prints a markdown report on stdout; raw numbers also go to ``WORK/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from extract.audio import CODEC_SAMPLE_RATE, load_audio, probe
from extract.codec import load_weights_file
from extract.datasets import get_dataset
from extract.encoder import BatchEncoder
from extract.run import ExtractConfig
from store.inspect import inspect_store
from store.reader import FeatureStore

try:
    from extract.run import BATCH_SECONDS
except ImportError:  # before the device-dependent default
    BATCH_SECONDS = {"cpu": 64.0}
from extract.unit import length_batches
from pipeline.cluster import threads_per_worker

DENSE_BYTES_PER_FRAME_LEVEL = 128 * 4  # float32 x dim
TARGET_CODES_BYTES_PER_S = 1500
TARGET_OVERHEAD = 0.15
EMB_TOLERANCE = 1e-4
PIPELINE = str(Path(sys.executable).with_name("pipeline"))


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), 0)
    versions = {"python": platform.python_version()}
    for name in ("torch", "torchaudio", "encodec", "zarr", "dask", "distributed", "numpy", "soundfile"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    repo = Path(__file__).resolve().parents[1]
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
    code = f"commit {git('rev-parse', '--short', 'HEAD') or '?'}" + (", extract/ or pipeline/ modified" if git("status", "--porcelain", "extract", "pipeline") else "")
    return {"code": code, "cpus": os.cpu_count(), "model": model, "mem_gib": round(mem / 2**20, 1), "versions": versions, "torch_default_threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------- subset


def subset_table(root: str, split: str, limit: int | None) -> pd.DataFrame:
    table = get_dataset("asv19").load(Path(root), [split]).table.reset_index(drop=True)
    if limit and limit < len(table):  # evenly spaced over the protocol (which is grouped by label and speaker)
        table = table.iloc[np.unique(np.linspace(0, len(table) - 1, limit).round().astype(int))].reset_index(drop=True)
    table["duration"] = [probe(p).duration for p in table["path"]]
    return table


def pipeline_source(table: pd.DataFrame, root: str, split: str, limit: int | None, work: Path) -> list[str]:
    """The `pipeline extract` arguments that select the subset: the split, or a manifest of it."""
    if not limit:
        return ["--dataset", "asv19", "--root", root, "--split", split]
    manifest = work / "manifest.csv"
    table[["utt_id", "path", "label", "speaker", "system", "split"]].to_csv(manifest, index=False)
    return ["--dataset", "manifest", "--root", str(manifest)]


# ---------------------------------------------------------------------------------------- runs


def run_pipeline(name: str, source: list[str], weights: str, work: Path, extra: list[str], env: dict | None = None) -> dict:
    """One `pipeline extract` into a fresh temp store, under /usr/bin/time -v."""
    out = work / f"{name}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [PIPELINE, "extract", *source, "--out", str(out), "--weights", weights, *extra]
    timefile = work / f"{name}.time"
    load_before = loadavg()
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", "-o", str(timefile), *cmd], capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - started
    load_after = loadavg()
    (work / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: pipeline extract failed (exit {proc.returncode}); see {work / (name + '.log')}")
    tv = timefile.read_text()

    def field(label: str) -> str:
        m = re.search(rf"{re.escape(label)}: (.+)", tv)
        return m.group(1).strip() if m else ""

    summary = re.search(r"([\d.]+) audio seconds; (\d+) frames; .*; ([\d.]+) s\s*$", proc.stdout, re.M)
    user, system = float(field("User time (seconds)") or 0), float(field("System time (seconds)") or 0)
    return {
        "name": name,
        "command": " ".join([*(f"{k}={v}" for k, v in (env or {}).items()), *cmd]),
        "store": str(out),
        "wall_s": wall,
        "extract_wall_s": float(summary.group(3)) if summary else None,
        "audio_s": float(summary.group(1)) if summary else None,
        "cpu_s": user + system,
        "user_s": user,
        "sys_s": system,
        "minflt": int(field("Minor (reclaiming a frame) page faults") or 0),
        "max_rss_mb": int(field("Maximum resident set size (kbytes)") or 0) / 1024,
        "load_before": load_before,
        "load_after": load_after,
    }


class Meter:
    """Wall time, CPU time (user, system) and minor page faults of this process over a block."""

    def __enter__(self):
        self.load_before = loadavg()
        self._r0, self._t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall, r1 = time.perf_counter() - self._t0, resource.getrusage(resource.RUSAGE_SELF)
        user, system = r1.ru_utime - self._r0.ru_utime, r1.ru_stime - self._r0.ru_stime
        self.result = {"wall_s": wall, "cpu_s": user + system, "user_s": user, "sys_s": system,
                       "minflt": r1.ru_minflt - self._r0.ru_minflt, "load_before": self.load_before, "load_after": loadavg()}
        return False


def bare_encode(paths: list[str], weights: str, threads: int, batch_seconds: float, unit_size: int) -> tuple[dict, dict, dict]:
    """Decode everything into RAM, then time only BatchEncoder.encode over the pipeline's batches
    (after one untimed 1 s warm-up forward). Returns (encode measurement, decode measurement, codes by row)."""
    torch.set_num_threads(threads)
    encoder = BatchEncoder(load_weights_file(weights), 6.0, latent=True)
    with Meter() as decode:
        wavs = [load_audio(p) for p in paths]
    lengths = [w.shape[-1] for w in wavs]
    budget = max(1, int(batch_seconds * CODEC_SAMPLE_RATE))
    batches = []
    for start in range(0, len(paths), unit_size):
        batches += length_batches({r: lengths[r] for r in range(start, min(len(paths), start + unit_size))}, budget)
    encoder.encode([wavs[0][:, :CODEC_SAMPLE_RATE]])  # warm-up (oneDNN set-up, thread pool), not timed
    codes: dict[int, np.ndarray] = {}
    with Meter() as encode:
        for batch in batches:
            for row, enc in zip(batch, encoder.encode([wavs[r] for r in batch])):
                codes[row] = enc.codes
    return {**encode.result, "threads": threads, "batches": len(batches)}, decode.result, codes


def run_naive(paths: list[str], weights: str, threads: int) -> tuple[dict, dict]:
    """The obvious loop: read, convert_audio, EncodecModel.encode, one file at a time."""
    from encodec.utils import convert_audio

    torch.set_num_threads(threads)
    model = load_weights_file(weights)
    model.set_target_bandwidth(6.0)
    codes: dict[int, np.ndarray] = {}
    with Meter() as m, torch.no_grad():
        for row, path in enumerate(paths):
            data, sr = sf.read(path, dtype="float32", always_2d=True)
            wav = convert_audio(torch.from_numpy(data.T.copy()), sr, model.sample_rate, model.channels)
            frames = model.encode(wav[None])
            codes[row] = torch.cat([c for c, _ in frames], dim=-1)[0].t().numpy().astype(np.uint16)
    return {**m.result, "threads": threads}, codes


MMAP = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20)}  # glibc's largest; fixed, so tensors below it are reused from the heap
TRIM_NOW = {"MALLOC_TRIM_THRESHOLD_": str(1 << 30)}  # what pipeline/cluster.py gives LocalCluster workers

TUNING = [  # (name, label, extra arguments, environment): settings a user can pick today
    ("t_w1_t1", "`--workers 1 --set torch_threads=1`", ["--workers", "1", "--set", "torch_threads=1"], {}),
    ("t_w1_t1_mmap", "`MALLOC_MMAP_THRESHOLD_=33554432 pipeline extract --workers 1 --set torch_threads=1`", ["--workers", "1", "--set", "torch_threads=1"], MMAP),
    ("t_w1_passive_mmap", "`OMP_WAIT_POLICY=PASSIVE MALLOC_MMAP_THRESHOLD_=33554432 pipeline extract --workers 1` (2 threads)", ["--workers", "1"], {"OMP_WAIT_POLICY": "PASSIVE", **MMAP}),
    ("t_w0_t1", "`--workers 0 --set torch_threads=1` (in process, no dask)", ["--workers", "0", "--set", "torch_threads=1"], {}),
    ("t_w2_mmap", "`MALLOC_MMAP_THRESHOLD_=33554432 pipeline extract --workers 2` (1 thread each)", ["--workers", "2"], MMAP),
]

PROBES = [  # (label, torch threads, batch seconds, extra environment)
    ("2 threads, 64 s (the pipeline's compute before the 8 s default)", 2, 64.0, {}),
    ("2 threads, 8 s (the pipeline's default compute now, `--workers 1`)", 2, 8.0, {}),
    ("2 threads, 8 s, OMP_WAIT_POLICY=PASSIVE", 2, 8.0, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("1 thread, 64 s", 1, 64.0, {}),
    ("1 thread, 64 s, MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4e9 (no mmap at all)", 1, 64.0, {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "4000000000"}),
    ("1 thread, 8 s", 1, 8.0, {}),
    ("1 thread, 8 s, MALLOC_TRIM_THRESHOLD_=65536 (dask nanny's default)", 1, 8.0, {"MALLOC_TRIM_THRESHOLD_": "65536"}),
    ("1 thread, 8 s, MALLOC_TRIM_THRESHOLD_=1073741824 (what pipeline/cluster.py sets now)", 1, 8.0, TRIM_NOW),
    ("1 thread, 8 s, MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432", 1, 8.0, {**TRIM_NOW, **MMAP}),
    ("1 thread, one utterance at a time (0 s)", 1, 0.0, {}),
]


def run_probes(paths: list[str], weights: str, unit_size: int, work: Path) -> list[dict]:
    """The bare encoder in a fresh process per setting (the allocator reads its environment at start)."""
    spec = work / "probe_paths.json"
    spec.write_text(json.dumps(paths))
    out = []
    for label, threads, batch_seconds, env in PROBES:
        child = {**os.environ, **env}
        for name in ("OMP_WAIT_POLICY", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"):
            if name not in env:
                child.pop(name, None)
        args = [sys.executable, __file__, "--probe-child", str(spec), weights, str(threads), str(batch_seconds), str(unit_size)]
        proc = subprocess.run(args, capture_output=True, text=True, env=child)
        if proc.returncode != 0:
            raise SystemExit(f"probe {label!r} failed: {proc.stderr[-2000:]}")
        out.append({"label": label, "threads": threads, "batch_seconds": batch_seconds, "env": env, **json.loads(proc.stdout.strip().splitlines()[-1])})
    return out


def probe_child(spec: str, weights: str, threads: str, batch_seconds: str, unit_size: str) -> int:
    encode, _, _ = bare_encode(json.loads(Path(spec).read_text()), weights, int(threads), float(batch_seconds), int(unit_size))
    print(json.dumps(encode))
    return 0


# ---------------------------------------------------------------------------------------- comparisons


def store_codes(url: str, utt_ids: list[str]) -> tuple[dict[str, np.ndarray], FeatureStore]:
    store = FeatureStore(url)
    table = store.utterances.set_index("utt_id")
    return {u: store.utterance_codes(int(np.flatnonzero(store.utterances["utt_id"] == u)[0])) for u in utt_ids if table.loc[u, "status"] == "ok"}, store


def compare_codes(a: dict, b: dict, codebooks: np.ndarray) -> dict:
    """Share of codes that differ, per level and overall; share of frames whose summed embedding
    sum_q C_q[code_q] differs by more than EMB_TOLERANCE (max abs over dims)."""
    keys = [k for k in a if k in b]
    ca = np.concatenate([a[k] for k in keys]).astype(np.int64)
    cb = np.concatenate([b[k] for k in keys]).astype(np.int64)
    if ca.shape != cb.shape:
        raise SystemExit(f"frame counts differ: {ca.shape} vs {cb.shape}")
    levels = np.arange(ca.shape[1])
    diff = ca != cb
    frames = np.flatnonzero(diff.any(1))
    emb_a = codebooks[levels[None], ca[frames]].astype(np.float64).sum(1)
    emb_b = codebooks[levels[None], cb[frames]].astype(np.float64).sum(1)
    gap = np.abs(emb_a - emb_b).max(1) if len(frames) else np.zeros(0)
    sample = np.random.default_rng(0).choice(ca.shape[0], min(ca.shape[0], 5000), replace=False)
    scale = np.abs(codebooks[levels[None], ca[sample]].astype(np.float64).sum(1)).max(1)
    return {
        "utterances": len(keys),
        "frames": int(ca.shape[0]),
        "codes": int(ca.size),
        "codes_differ": int(diff.sum()),
        "share_codes_differ": float(diff.mean()),
        "share_per_level": [float(x) for x in diff.mean(0)],
        "frames_any_code_differ": int(len(frames)),
        "frames_emb_differ": int((gap > EMB_TOLERANCE).sum()),
        "share_frames_emb_differ": float((gap > EMB_TOLERANCE).sum() / ca.shape[0]),
        "max_emb_gap": float(gap.max()) if len(gap) else 0.0,
        "median_emb_maxabs": float(np.median(scale)),
        "utterances_identical": int(sum(np.array_equal(a[k], b[k]) for k in keys)),
    }


def near_duplicates(codebooks: np.ndarray, tol: float = 1e-4) -> list[int]:
    """Per level: codewords whose nearest other codeword is within ``tol`` (L2)."""
    out = []
    for book in codebooks.astype(np.float64):
        sq = (book**2).sum(1)
        d2 = np.maximum(sq[:, None] - 2 * book @ book.T + sq[None], 0)
        np.fill_diagonal(d2, np.inf)
        out.append(int((np.sqrt(d2.min(1)) <= tol).sum()))
    return out


# ---------------------------------------------------------------------------------------- report


def fmt_run(label: str, r: dict, audio: float) -> str:
    return (
        f"| {label} | {r['wall_s']:.1f} | {audio / r['wall_s']:.2f} | {r['user_s']:.1f} | {r['sys_s']:.1f} | {r['minflt']:,} | "
        f"{r['cpu_s'] / r['wall_s'] * 100:.0f} % | {r['load_before']} / {r['load_after']} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/work/shared/data/offla19")
    parser.add_argument("--store", default="/tmp/bench/offla19.zarr", help="finished full-corpus store (sizes; its codec weights)")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int, default=None, help="N utterances of the split, evenly spaced over its protocol")
    parser.add_argument("--work", default="/tmp/bench/bench_extract", help="temp stores, logs, results.json")
    parser.add_argument("--skip", default="", help="comma-separated: naive, workers2, onebyone, probe")
    parser.add_argument("--probe-files", type=int, default=16, help="files (the subset's first) for the threads/allocator probe")
    parser.add_argument("--keep", action="store_true", help="keep the temporary stores")
    parser.add_argument("--in-process", action="store_true", help="also time `pipeline extract --workers 0` (no dask)")
    parser.add_argument("--tuning", action="store_true", help="also time the pipeline with the faster CPU settings of TUNING")
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--probe-child":
        return probe_child(*sys.argv[2:7])
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    weights = str(Path(args.store) / "codec_weights.th")
    started = time.perf_counter()
    info = machine()
    defaults = ExtractConfig(dataset="asv19", root=args.root, out="-")
    threads1 = threads_per_worker(1)
    batch_default = defaults.batch_seconds if defaults.batch_seconds is not None else BATCH_SECONDS["cpu"]

    # 1. cache size ---------------------------------------------------------------------------
    full = inspect_store(args.store)
    n_q = full["codec"]["n_q"]
    seconds_full = full["audio_seconds"]
    codes_bps = full["bytes"]["codes"] / seconds_full
    latent_bps = (full["bytes"].get("latent") or 0) / seconds_full
    frames_per_s = full["frames"] / seconds_full
    dense_bps = 75 * n_q * DENSE_BYTES_PER_FRAME_LEVEL
    raw_codes_bps = frames_per_s * n_q * 2

    # subset -----------------------------------------------------------------------------------
    table = subset_table(args.root, args.split, args.limit)
    audio = float(table["duration"].sum())
    source = pipeline_source(table, args.root, args.split, args.limit, work)
    ids = table["utt_id"].tolist()

    # 2./3./4. runs: bare next to pipeline w1 so they see similar load ------------------------
    runs: dict[str, dict] = {}
    paths = table["path"].tolist()
    bare, decode, bare_codes = bare_encode(paths, weights, threads1, batch_default, defaults.unit_size)
    runs["w1"] = run_pipeline("w1", source, weights, work, ["--workers", "1"])
    tuning = [(label, run_pipeline(name, source, weights, work, extra, env)) for name, label, extra, env in TUNING] if args.tuning else []
    if args.in_process:
        runs["w0"] = run_pipeline("w0", source, weights, work, ["--workers", "0"])
    naive, naive_codes = run_naive(paths, weights, threads1) if "naive" not in skip else (None, None)
    if "workers2" not in skip:
        runs["w2"] = run_pipeline("w2", source, weights, work, ["--workers", "2"])
    if "onebyone" not in skip:
        runs["bs0"] = run_pipeline("w1_bs0", source, weights, work, ["--workers", "1", "--batch-seconds", "0"])
        if batch_default != 64:
            runs["bs64"] = run_pipeline("w1_bs64", source, weights, work, ["--workers", "1", "--batch-seconds", "64"])
    probes = run_probes(paths[: args.probe_files], weights, defaults.unit_size, work) if "probe" not in skip else []
    probe_audio = float(table["duration"].iloc[: args.probe_files].sum())

    # comparisons --------------------------------------------------------------------------
    w1_codes, w1_store = store_codes(runs["w1"]["store"], ids)
    codebooks = w1_store.codebooks
    cmp = {"bare_vs_w1": compare_codes({ids[r]: c for r, c in bare_codes.items()}, w1_codes, codebooks)}
    if naive is not None:
        cmp["naive_vs_w1"] = compare_codes({ids[r]: c for r, c in naive_codes.items()}, w1_codes, codebooks)
    if "w2" in runs:
        cmp["w2_vs_w1"] = compare_codes(store_codes(runs["w2"]["store"], ids)[0], w1_codes, codebooks)
    if "w0" in runs:
        cmp["w0_vs_w1"] = compare_codes(store_codes(runs["w0"]["store"], ids)[0], w1_codes, codebooks)
    if "bs0" in runs:
        bs0_codes, bs0_store = store_codes(runs["bs0"]["store"], ids)
        cmp["bs0_vs_w1"] = compare_codes(bs0_codes, w1_codes, codebooks)
        if "bs64" in runs:
            cmp["bs0_vs_bs64"] = compare_codes(bs0_codes, store_codes(runs["bs64"]["store"], ids)[0], codebooks)
        if naive is not None:
            cmp["naive_vs_bs0"] = compare_codes({ids[r]: c for r, c in naive_codes.items()}, bs0_codes, codebooks)
        la, lb = w1_store.latent[...].astype(np.float32), bs0_store.latent[...].astype(np.float32)
        same_order = (w1_store.utterances["utt_id"].to_numpy() == bs0_store.utterances["utt_id"].to_numpy()).all()
        cmp["bs0_vs_w1"]["latent_max_abs_diff"] = float(np.abs(la - lb).max()) if same_order and la.shape == lb.shape else None
        cmp["bs0_vs_w1"]["latent_share_values_differ"] = float((la != lb).mean()) if same_order and la.shape == lb.shape else None
    dups = near_duplicates(codebooks)
    total = time.perf_counter() - started

    for label, r in tuning:
        r["label"] = label
        r["codes_vs_w1"] = compare_codes(store_codes(r["store"], ids)[0], w1_codes, codebooks)["share_codes_differ"]
    if not args.keep:
        for r in [*runs.values(), *(t for _, t in tuning)]:
            shutil.rmtree(r["store"], ignore_errors=True)

    # report ---------------------------------------------------------------------------------
    v = info["versions"]
    p = print
    subset = f"{args.split} split" + (f", {len(table)} utterances evenly spaced over its protocol (--limit {args.limit})" if args.limit else "")
    p(f"## Extraction benchmark: offla19 {subset}, {len(table)} files, {audio:.1f} s of audio ({audio / 60:.1f} min)")
    p()
    p(f"Codec: **UNTRAINED EnCodec 24 kHz** (seeded random encoder, k-means codebooks; `{weights}`, "
      f"sha256 {full['weights']['sha256'][:12]}), {n_q} quantizers / {full['codec']['bandwidth']} kbps, latent on. "
      "The architecture and so the cost are those of the real codec; the codes are not real codec features.")
    p()
    p(f"Code: {info['code']}. Default batch: {batch_default:g} s on CPU.")
    p(f"Machine: {info['cpus']} CPUs ({info['model']}), {info['mem_gib']} GiB RAM, no GPU. Python {v['python']}, torch {v['torch']}, "
      f"torchaudio {v['torchaudio']}, encodec {v['encodec']}, zarr {v['zarr']}, dask {v['dask']}, numpy {v['numpy']}.")
    p(f"Load average (1/5/15 min) at start of each measurement / at its end is in every row; 'CPU' is the CPU time the "
      f"measurement got over its wall time ({threads1} threads = {threads1 * 100} % at most).")
    p()
    p(f"### 1. Cache size per audio second (full store `{args.store}`: {full['ok']} utterances, {seconds_full:.1f} s, {full['frames']} frames = {frames_per_s:.2f} frames/s)")
    p()
    p("| what | bytes on disk | bytes per audio second | vs dense float32 |")
    p("|---|---|---|---|")
    p(f"| codes uint16 [{full['frames']}, {n_q}], zstd | {full['bytes']['codes']:,} | **{codes_bps:,.0f}** (target <= {TARGET_CODES_BYTES_PER_S:,}: {'met' if codes_bps <= TARGET_CODES_BYTES_PER_S else 'NOT met'}) | {dense_bps / codes_bps:.0f}x smaller |")
    p(f"| codes, uncompressed (frames/s x {n_q} x 2 B) | - | {raw_codes_bps:,.0f} | {dense_bps / raw_codes_bps:.0f}x smaller |")
    if latent_bps:
        p(f"| latent float16 [{full['frames']}, 128], zstd (separate, optional) | {full['bytes']['latent']:,} | {latent_bps:,.0f} | {dense_bps / latent_bps:.1f}x smaller |")
    p(f"| codebooks float32 [{n_q}, 1024, 128] (once per store) | {full['bytes']['codebooks']:,} | - | - |")
    p(f"| codec weights file (once per store) | {full['bytes'].get('codec_weights.th', 0):,} | - | - |")
    p(f"| whole store | {full['bytes']['total']:,} | {full['bytes']['total'] / seconds_full:,.0f} | - |")
    p(f"| dense float32 per-quantizer embeddings (75 x {n_q} x 128 x 4 B) | - | {dense_bps:,} | 1x |")
    p()
    bare_rate = audio / bare["wall_s"]
    w1 = runs["w1"]
    overhead = w1["wall_s"] / bare["wall_s"] - 1
    overhead_in = w1["extract_wall_s"] / bare["wall_s"] - 1
    p(f"### 2./3. Throughput ({subset}, {audio:.1f} audio s)")
    p()
    p("| what | wall (s) | audio s / wall s | user s | sys s | minor page faults | CPU | load avg before / after |")
    p("|---|---|---|---|---|---|---|---|")
    p(fmt_run(f"bare `BatchEncoder.encode`, {bare['batches']} batches of <= {batch_default:g} s, audio already in RAM, after a 1 s warm-up ({threads1} threads)", bare, audio))
    p(fmt_run("(decoding the audio for the bare row, not timed in it: soundfile read + convert_audio, 1 file at a time)", decode, audio))
    p(fmt_run(f"`pipeline extract --workers 1` (whole command; default {batch_default:g} s batches, {threads1} threads)", w1, audio))
    p(f"| ... of which inside `extract()` (its printed wall time; excludes interpreter start, imports, LocalCluster start/stop) | {w1['extract_wall_s']:.1f} | {audio / w1['extract_wall_s']:.2f} | | | | | |")
    if "w2" in runs:
        p(fmt_run(f"`pipeline extract --workers 2` (whole command; {batch_default:g} s batches, {threads_per_worker(2)} torch thread per worker)", runs["w2"], audio))
        p(f"| ... of which inside `extract()` | {runs['w2']['extract_wall_s']:.1f} | {audio / runs['w2']['extract_wall_s']:.2f} | | | | | |")
    if "w0" in runs:
        p(fmt_run(f"`pipeline extract --workers 0` (whole command; in process, no dask; {batch_default:g} s batches)", runs["w0"], audio))
        p(f"| ... of which inside `extract()` | {runs['w0']['extract_wall_s']:.1f} | {audio / runs['w0']['extract_wall_s']:.2f} | | | | | |")
    if naive is not None:
        p(fmt_run(f"naive loop: sf.read + convert_audio + EncodecModel.encode per file ({threads1} threads)", naive, audio))
    if "bs0" in runs:
        p(fmt_run("`pipeline extract --workers 1 --batch-seconds 0` (one utterance per forward)", runs["bs0"], audio))
    if "bs64" in runs:
        p(fmt_run("`pipeline extract --workers 1 --batch-seconds 64` (the old default)", runs["bs64"], audio))
    p()
    p(f"Pipeline overhead over the bare encoder (wall / bare wall - 1): **{overhead * 100:.1f} %** for the whole command, "
      f"{overhead_in * 100:.1f} % inside `extract()` (target <= {TARGET_OVERHEAD * 100:.0f} %: "
      f"{'met' if overhead <= TARGET_OVERHEAD else 'NOT met'} / {'met' if overhead_in <= TARGET_OVERHEAD else 'NOT met'}). "
      f"The pipeline also decodes the audio, which the bare row excludes.")
    if naive is not None:
        p(f"Naive loop wall / pipeline (`--workers 1`) wall: {naive['wall_s'] / w1['wall_s']:.2f} for the whole command, "
          f"{naive['wall_s'] / w1['extract_wall_s']:.2f} inside `extract()` (above 1: the pipeline is faster); "
          f"naive wall / bare wall: {naive['wall_s'] / bare['wall_s']:.2f}.")
    if "w2" in runs:
        p(f"`--workers 2` vs `--workers 1`: {w1['wall_s'] / runs['w2']['wall_s']:.2f}x the speed for the whole command, "
          f"{w1['extract_wall_s'] / runs['w2']['extract_wall_s']:.2f}x inside `extract()`; max RSS {runs['w2']['max_rss_mb']:.0f} MB vs {w1['max_rss_mb']:.0f} MB (`/usr/bin/time`, largest single process).")
    if tuning:
        p()
        p("#### Pipeline with faster CPU settings (same subset; compare with the `--workers 1` row only where the load was similar)")
        p()
        p("| what | wall (s) | audio s / wall s | user s | sys s | minor page faults | CPU | load avg before / after |")
        p("|---|---|---|---|---|---|---|---|")
        p(fmt_run(f"`pipeline extract --workers 1` (defaults: {threads1} threads, {batch_default:g} s batches; the row above)", w1, audio))
        for label, r in tuning:
            p(fmt_run(label, r, audio))
            p(f"| ... of which inside `extract()`; share of codes differing from the default `--workers 1` store: {r['codes_vs_w1'] * 100:.2f} % | {r['extract_wall_s']:.1f} | {audio / r['extract_wall_s']:.2f} | | | | | |")
    p()
    p("### 4. Code agreement")
    p()
    p(f"Summed embedding = sum_q C_q[code_q] (float64 sum of the float32 codebooks); a frame 'differs' if its max abs difference over the 128 dims is > {EMB_TOLERANCE:g}.")
    p()
    p("| comparison | frames | codes differing | share of codes | share per level 1..8 | frames with summed embedding differing | share of frames | largest gap | median max-abs of a summed embedding (scale) |")
    p("|---|---|---|---|---|---|---|---|---|")
    labels = {
        "bs0_vs_w1": f"`--batch-seconds {batch_default:g}` (default) vs `--batch-seconds 0` (both `--workers 1`)",
        "bs0_vs_bs64": "`--batch-seconds 64` vs `--batch-seconds 0` (both `--workers 1`)",
        "bare_vs_w1": "bare encoder (this process) vs `pipeline --workers 1`",
        "w2_vs_w1": "`--workers 2` (1 thread) vs `--workers 1` (2 threads)",
        "w0_vs_w1": "`--workers 0` (in process) vs `--workers 1`",
        "naive_vs_bs0": "naive `EncodecModel.encode` per file vs `pipeline --batch-seconds 0`",
        "naive_vs_w1": "naive `EncodecModel.encode` per file vs `pipeline --workers 1`",
    }
    for key in ("bs0_vs_bs64", "bs0_vs_w1", "bare_vs_w1", "w2_vs_w1", "w0_vs_w1", "naive_vs_w1", "naive_vs_bs0"):
        if key not in cmp:
            continue
        c = cmp[key]
        per_level = " / ".join(f"{x * 100:.2f}" for x in c["share_per_level"])
        p(f"| {labels[key]} | {c['frames']} | {c['codes_differ']} of {c['codes']} | {c['share_codes_differ'] * 100:.3f} % | {per_level} % | "
          f"{c['frames_emb_differ']} | {c['share_frames_emb_differ'] * 100:.3f} % | {c['max_emb_gap']:.2e} | {c['median_emb_maxabs']:.2e} |")
    if "bs0_vs_w1" in cmp and cmp["bs0_vs_w1"].get("latent_max_abs_diff") is not None:
        c = cmp["bs0_vs_w1"]
        p()
        p(f"Latent (float16) batched vs one-by-one: {c['latent_share_values_differ'] * 100:.3f} % of values differ, largest difference {c['latent_max_abs_diff']:.2e}.")
    p(f"Codewords per level whose nearest other codeword lies within 1e-4 (L2) in this untrained codec: {' / '.join(map(str, dups))} (of 1024).")
    p()
    p(f"Benchmark total wall time: {total / 60:.1f} min.")
    p()
    p("`pipeline extract` commands run (measurement order: bare encoder, `--workers 1`, the tuning runs, `--workers 0`, naive loop, `--workers 2`, `--batch-seconds 0`, `--batch-seconds 64`, probes):")
    p()
    p("```")
    for r in [*runs.values(), *(t for _, t in tuning)]:
        p(r["command"])
    p("```")

    if probes:
        p()
        p(f"### 5. Where the CPU time goes: bare `BatchEncoder.encode` on the subset's first {args.probe_files} files ({probe_audio:.1f} audio s), one fresh process per setting, audio in RAM")
        p()
        p("| setting | wall (s) | audio s / wall s | user s | sys s | minor page faults | CPU | load avg before / after |")
        p("|---|---|---|---|---|---|---|---|")
        for r in probes:
            p(f"| {r['label']} | {r['wall_s']:.1f} | {probe_audio / r['wall_s']:.2f} | {r['user_s']:.1f} | {r['sys_s']:.1f} | {r['minflt']:,} | "
              f"{r['cpu_s'] / r['wall_s'] * 100:.0f} % | {r['load_before']} / {r['load_after']} |")
    raw = {"machine": info, "subset": {"split": args.split, "limit": args.limit, "files": len(table), "audio_s": audio},
           "size": {"codes_bps": codes_bps, "latent_bps": latent_bps, "raw_codes_bps": raw_codes_bps, "dense_bps": dense_bps, "store": full["bytes"], "audio_s": seconds_full, "frames": full["frames"]},
           "bare": bare, "decode": decode, "naive": naive, "probes": probes, "runs": runs, "tuning": [t for _, t in tuning], "compare": cmp, "near_duplicates": dups, "total_s": total}
    (work / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
