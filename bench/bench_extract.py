"""Benchmark of `pipeline extract` on CPU: throughput against the bare encoder and a naive loop,
``--workers 0/1/2``, page faults, peak memory per process, decoding speed, an hour-long file,
cache size and code agreement.

    python bench/bench_extract.py --weights W.th [--root ../shared/data/offla19] [--split all]
        [--limit N] [--repeat 2] [--skip naive,workers0,workers1,workers2,agreement,probe,decode,hour,profile]
        [--store FULL.zarr] [--py-spy PATH] [--report RESULTS.md] [--device cuda]

``--weights``: a codec weights file (e.g. ``codec_weights.th`` of any store made with
``--weights untrained``), or ``untrained``: the untrained codec `pipeline extract --weights untrained`
makes for the corpus (seed 0, k-means on its audio), built once and kept as ``WORK/untrained.th``.
Every measurement uses that file, so no k-means runs in the timed commands. Untrained weights
saved by this tool keep their UNTRAINED label through a file; an untrained codec's cost is exactly
the real one's (same architecture), its codes are not real codec features.

Measured on the corpus (``--split all``: every split; ``--limit N``: N utterances evenly spaced
over the protocol, fed to the pipeline as a manifest), in this order, ``--repeat`` times (A B A B:
the machine is assumed shared, so the configurations alternate):

1. bare encoder: every file decoded into RAM first, then only ``BatchEncoder.encode`` timed over
   the pipeline's own batches (units of ``unit_size`` utterances in plan order, length-sorted
   batches of ``batch_seconds`` padded audio inside each unit), the pipeline's torch threads, in a
   fresh process;
2. ``pipeline extract --workers 0`` (in process: the CPU default), ``--workers 1`` and
   ``--workers 2`` (a LocalCluster): the whole command (interpreter start, imports, cluster, store
   creation, finishing), and inside ``extract()`` (its printed wall time);
3. a naive loop: per file soundfile read + ``convert_audio`` + ``EncodecModel.encode``, one at a
   time, no batching, no overlap (fresh process).

``--device cuda`` runs the same measurements on the GPU (the CUDA defaults: larger batches and
units, one worker per GPU, ``--workers 2`` only with 2 GPUs, decoding on all cores but one) and adds
hours of audio per GPU-minute.

Every row has user / system CPU time and minor page faults (the whole process tree, from
``/usr/bin/time`` or ``getrusage``), the peak RSS of each process (VmHWM, polled from /proc) and the
load averages before / after. Then: the decoder alone (read + resample, no encoding) on 1, 2 and
cores - 1 threads; one hour-long file (offla19's files concatenated) through the defaults, with its peak
RSS per process; ``MALLOC_TRIM_THRESHOLD_`` set vs unset for the bare encoder (what dask's nanny
did to every worker); the cache size of the default run's store; and whether the stores' codes
agree. A markdown report goes to stdout, raw numbers to ``WORK/results.json``.

Last, where the time goes: the defaults' command once more under py-spy
(``bench/profile_extract.py``; skipped with a note when py-spy is not installed). The report also
goes to ``--report`` (markdown).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's packages, not an installed copy

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from extract.audio import CODEC_SAMPLE_RATE, load_audio, probe  # noqa: E402
from extract.codec import load_weights_file  # noqa: E402
from extract.datasets import get_dataset  # noqa: E402
from extract.encoder import BatchEncoder  # noqa: E402
from extract.prefetch import prefetch  # noqa: E402
from extract.run import BATCH_SECONDS, UNIT_SIZE  # noqa: E402
from extract.sizing import available_memory_gb, choose_workers  # noqa: E402
from extract.unit import length_batches  # noqa: E402
from pipeline.cluster import threads_per_worker  # noqa: E402
from store.inspect import inspect_store  # noqa: E402
from store.reader import FeatureStore  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import profile_extract  # noqa: E402
import results as bench_results  # noqa: E402  (bench/results.py: the raw result of this run)
from timed import parse_time_v  # noqa: E402  (bench/timed.py: the one GNU time -v parser)

DENSE_BYTES_PER_FRAME_LEVEL = 128 * 4  # float32 x dim
TARGET_RATIO = 0.85
EMB_TOLERANCE = 1e-4
HOUR = 3600.0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def untrained_weights(root: str, work: Path) -> Path:
    """The untrained codec of `pipeline extract --weights untrained` on the corpus at ``root``, as a file."""
    from extract.run import ExtractConfig, _codec_for_new_store

    path = work / "untrained.th"
    if not path.exists():
        config = ExtractConfig(dataset="asv19", root=root, out=str(work / "unused.zarr"), weights="untrained")
        plan = get_dataset("asv19").load(Path(root), None).table.reset_index(drop=True)
        _, data, _ = _codec_for_new_store(config, plan, 8, lambda message: print(message, file=sys.stderr))
        path.write_bytes(data)
    return path


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), 0)
    versions = {"python": platform.python_version()}
    for name in ("torch", "torchaudio", "encodec", "zarr", "dask", "distributed", "numpy", "soundfile"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    git = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
    code = f"commit {git('rev-parse', '--short', 'HEAD') or '?'}" + (", extract/ or pipeline/ modified" if git("status", "--porcelain", "extract", "pipeline") else "")
    return {"code": code, "cpus": os.cpu_count(), "model": model, "mem_gib": round(mem / 2**20, 1), "versions": versions}


# ---------------------------------------------------------------------------------------- corpus


def corpus_table(root: str, split: str, limit: int | None) -> pd.DataFrame:
    table = get_dataset("asv19").load(Path(root), None if split == "all" else [split]).table.reset_index(drop=True)
    if limit and limit < len(table):  # evenly spaced over the protocol (which is grouped by label and speaker)
        table = table.iloc[np.unique(np.linspace(0, len(table) - 1, limit).round().astype(int))].reset_index(drop=True)
    table["duration"] = [probe(p).duration for p in table["path"]]
    return table


def pipeline_source(table: pd.DataFrame, root: str, split: str, limit: int | None, work: Path) -> list[str]:
    """The `pipeline extract` arguments that select the corpus: the dataset (and split), or a manifest."""
    if not limit:
        return ["--dataset", "asv19", "--root", root] + ([] if split == "all" else ["--split", split])
    manifest = work / "manifest.csv"
    table[["utt_id", "path", "label", "speaker", "system", "split"]].to_csv(manifest, index=False)
    return ["--dataset", "manifest", "--root", str(manifest)]


# ---------------------------------------------------------------------------------------- measuring


class PeakRSS:
    """Polls /proc for the process ``pid`` and its descendants; keeps each one's peak RSS (VmHWM)."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.pid, self.interval = pid, interval
        self.peaks: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        out, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += children.get(pid, [])
        return out

    def _poll(self) -> None:
        for pid in self._tree():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                cmd = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
            except OSError:
                continue
            m = re.search(r"VmHWM:\s+(\d+) kB", status)
            if m:
                kind = "worker" if "multiprocessing.spawn" in cmd else "tracker" if "resource_tracker" in cmd else "time" if cmd.startswith("/usr/bin/time") else "main"
                self.peaks[pid] = (kind, max(self.peaks.get(pid, ("", 0.0))[1], int(m.group(1)) / 1024))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def stop(self) -> dict[str, list[float]]:
        self._stop.set()
        self._thread.join()
        by_kind: dict[str, list[float]] = {}
        for kind, mb in self.peaks.values():
            if kind in ("main", "worker"):
                by_kind.setdefault(kind, []).append(round(mb))
        return by_kind


def run_measured(name: str, cmd: list[str], work: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` under /usr/bin/time -v in this checkout; wall, CPU, faults, peak RSS per process."""
    timefile = work / f"{name}.time"
    load_before = loadavg()
    started = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-v", "-o", str(timefile), *cmd], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    peaks = PeakRSS(proc.pid)
    output, _ = proc.communicate()
    wall = time.perf_counter() - started
    rss = peaks.stop()
    (work / f"{name}.log").write_text(output)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: {' '.join(cmd)} failed (exit {proc.returncode}); see {work / (name + '.log')}")
    tv = parse_time_v(timefile.read_text())
    user, system = tv.get("user_s", 0.0), tv.get("system_s", 0.0)
    return {"name": name, "command": " ".join([*(f"{k}={v}" for k, v in (env or {}).items()), *cmd]), "output": output,
            "wall_s": wall, "cpu_s": user + system, "user_s": user, "sys_s": system,
            "minflt": int(tv.get("minor_faults", 0)), "rss_mb": rss,
            "load_before": load_before, "load_after": loadavg()}


def run_pipeline(name: str, source: list[str], weights: str, work: Path, extra: list[str], env: dict | None = None) -> dict:
    """One `pipeline extract` into a fresh store."""
    out = work / f"{name}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    r = run_measured(name, [sys.executable, "-m", "pipeline", "extract", *source, "--out", str(out), "--weights", weights, *extra], work, env)
    summary = re.search(r"([\d.]+) audio seconds; (\d+) frames; .*; ([\d.]+) s\s*$", r.pop("output"), re.M)
    return {**r, "store": str(out), "extract_wall_s": float(summary.group(3)) if summary else None,
            "audio_s": float(summary.group(1)) if summary else None}


def run_child(name: str, mode: str, spec: dict, work: Path, env: dict | None = None) -> dict:
    """This script in a fresh process (``--child MODE``); its last stdout line is a JSON result."""
    path = work / f"{name}.json"
    path.write_text(json.dumps(spec))
    r = run_measured(name, [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(path)], work, env)
    return {**json.loads(r.pop("output").strip().splitlines()[-1]), "process": r}


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


# ---------------------------------------------------------------------------------------- children


def child_bare(spec: dict) -> dict:
    """Decode everything into RAM, then time only BatchEncoder.encode over the pipeline's batches
    (after an untimed 1 s warm-up forward)."""
    torch.set_num_threads(spec["threads"])
    encoder = BatchEncoder(load_weights_file(spec["weights"]), 6.0, device=spec["device"], latent=True,
                           batch_seconds=spec["batch_seconds"])
    paths = spec["paths"]
    with Meter() as decode:
        wavs = [load_audio(p) for p in paths]
    lengths = [w.shape[-1] for w in wavs]
    budget = max(1, int(spec["batch_seconds"] * CODEC_SAMPLE_RATE))
    batches = []
    for start in range(0, len(paths), spec["unit_size"]):
        batches += length_batches({r: lengths[r] for r in range(start, min(len(paths), start + spec["unit_size"]))}, budget)
    encoder.encode([wavs[0][:, :CODEC_SAMPLE_RATE]])  # warm-up (oneDNN set-up, thread pool), not timed
    codes: dict[int, list] = {}
    with Meter() as encode:
        for batch in batches:
            for row, enc in zip(batch, encoder.encode([wavs[r] for r in batch])):
                codes[row] = enc.codes
    np.savez(spec["codes"], **{str(r): c for r, c in codes.items()})
    return {**encode.result, "batches": len(batches), "decode": decode.result}


def child_naive(spec: dict) -> dict:
    """The obvious loop: read, convert_audio, EncodecModel.encode, one file at a time."""
    from encodec.utils import convert_audio

    torch.set_num_threads(spec["threads"])
    model = load_weights_file(spec["weights"]).to(spec["device"])
    model.set_target_bandwidth(6.0)
    with Meter() as m, torch.no_grad():
        for path in spec["paths"]:
            data, sr = sf.read(path, dtype="float32", always_2d=True)
            wav = convert_audio(torch.from_numpy(data.T.copy()), sr, model.sample_rate, model.channels)
            model.encode(wav[None].to(spec["device"]))[0][0].cpu()
    return m.result


def child_decode(spec: dict) -> dict:
    """The pipeline's decoder alone (read + mix down + resample), on ``threads`` helper threads."""
    paths = spec["paths"]
    with Meter() as m:
        jobs = (((lambda p=p: load_audio(p)), 1) for p in paths)
        samples = sum(w.shape[-1] for w in prefetch(jobs, threads=spec["threads"], depth=4 * spec["threads"]))
    return {**m.result, "audio_s": samples / CODEC_SAMPLE_RATE}


CHILDREN = {"bare": child_bare, "naive": child_naive, "decode": child_decode}


# ---------------------------------------------------------------------------------------- comparisons


def bare_codes(path: Path, ids: list[str]) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {ids[int(r)]: data[r] for r in data.files}


def store_codes(url: str) -> dict[str, np.ndarray]:
    store = FeatureStore(url)
    table = store.utterances
    return {u: store.utterance_codes(i) for i, u in enumerate(table["utt_id"]) if table["status"].iloc[i] == "ok"}


def compare_codes(a: dict, b: dict, codebooks: np.ndarray) -> dict:
    """Share of codes that differ; share of frames whose summed embedding sum_q C_q[code_q] differs
    by more than EMB_TOLERANCE (max abs over dims)."""
    keys = [k for k in a if k in b]
    ca = np.concatenate([a[k] for k in keys]).astype(np.int64)
    cb = np.concatenate([b[k] for k in keys]).astype(np.int64)
    if ca.shape != cb.shape:
        raise SystemExit(f"frame counts differ: {ca.shape} vs {cb.shape}")
    levels = np.arange(ca.shape[1])
    diff = ca != cb
    frames = np.flatnonzero(diff.any(1))
    gap = np.abs(codebooks[levels[None], ca[frames]].astype(np.float64).sum(1)
                 - codebooks[levels[None], cb[frames]].astype(np.float64).sum(1)).max(1) if len(frames) else np.zeros(0)
    return {"frames": int(ca.shape[0]), "codes": int(ca.size), "codes_differ": int(diff.sum()),
            "share_codes_differ": float(diff.mean()), "share_frames_emb_differ": float((gap > EMB_TOLERANCE).sum() / ca.shape[0]),
            "max_emb_gap": float(gap.max()) if len(gap) else 0.0, "utterances_identical": int(sum(np.array_equal(a[k], b[k]) for k in keys)),
            "utterances": len(keys)}


# ---------------------------------------------------------------------------------------- hour-long file


def hour_file(table: pd.DataFrame, work: Path, seconds: float = HOUR) -> Path:
    """One FLAC of exactly ``seconds`` (an hour) at 16 kHz: the corpus's files, in protocol order, repeated."""
    path = work / "hour.flac"
    if path.exists() and sf.info(str(path)).duration == seconds:
        return path
    target = int(seconds * 16000)
    with sf.SoundFile(str(path), "w", samplerate=16000, channels=1, subtype="PCM_16") as out:
        written = 0
        while written < target:
            for p in table["path"]:
                data, sr = sf.read(p, dtype="int16")
                if sr != 16000:
                    continue
                data = data[: target - written]
                out.write(data)
                written += len(data)
                if written >= target:
                    break
    return path


# ---------------------------------------------------------------------------------------- report


def row(label: str, r: dict, audio: float, wall: float | None = None) -> str:
    wall = wall if wall is not None else r["wall_s"]
    rss = r.get("rss_mb") or r.get("process", {}).get("rss_mb") or {}
    rss_text = "; ".join(f"{k} {', '.join(str(int(v)) for v in vs)}" for k, vs in sorted(rss.items())) or "-"
    return (f"| {label} | {wall:.1f} | **{audio / wall:.2f}** | {r['user_s']:.1f} | {r['sys_s']:.1f} | {audio / r['cpu_s']:.2f} | "
            f"{r['minflt'] / 1e6:.2f} M | {rss_text} | {r['load_before']} / {r['load_after']} |")


HEADER = ("| what | wall s | audio s / wall s | user s | sys s | audio s / CPU s | minor faults | peak RSS MB per process | load before / after |\n"
          "|---|---|---|---|---|---|---|---|---|")


def gpu_text(device: str) -> str:
    if device != "cuda":
        return "no GPU used" + (" (CUDA present)" if torch.cuda.is_available() else "")
    return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"


def median(values: list[float]) -> float:
    return float(np.median(values))


def main(argv: list[str] | None = None) -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(CHILDREN[sys.argv[2]](json.loads(Path(sys.argv[3]).read_text()))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="codec weights file used by every measurement, or untrained (built once)")
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "offla19"))
    parser.add_argument("--split", default="all", help="a split, or all (the whole corpus)")
    parser.add_argument("--limit", type=int, default=None, help="N utterances, evenly spaced over the protocol")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the configurations, interleaved (A B A B)")
    parser.add_argument("--store", default=None, help="store whose size to report (default: the first default run's store, kept)")
    parser.add_argument("--work", default="/tmp/bench/bench_extract", help="temp stores, logs, results.json")
    parser.add_argument("--skip", default="", help="comma-separated: naive, workers0, workers1, workers2 (never the default), agreement, probe, decode, hour, profile")
    parser.add_argument("--py-spy", default=None, help="py-spy executable for the breakdown (default: on PATH or beside this Python)")
    parser.add_argument("--hour-seconds", type=float, default=HOUR, help="length of the long file (an hour; less for a quick check)")
    parser.add_argument("--report", default=None, help="also write the markdown report to this file")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where every measurement encodes")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    weights = str((untrained_weights(args.root, work) if args.weights == "untrained" else Path(args.weights)).resolve())
    started = time.perf_counter()
    info = machine()
    threads1 = threads_per_worker(1)
    device = args.device
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    if device == "cuda" and not gpus:
        raise SystemExit("--device cuda: no CUDA device here")
    batch = BATCH_SECONDS[device]
    unit_size = UNIT_SIZE[device]
    if device == "cuda" and gpus < 2:
        skip.add("workers2")  # a second worker would have no GPU of its own

    table = corpus_table(args.root, args.split, args.limit)
    audio = float(table["duration"].sum())
    source = pipeline_source(table, args.root, args.split, args.limit, work)
    ids = table["utt_id"].tolist()
    paths = table["path"].tolist()
    base_spec = {"weights": weights, "paths": paths, "threads": threads1, "batch_seconds": batch, "unit_size": unit_size, "device": device}
    on = ["--device", device]
    # the configuration `pipeline extract` runs without --workers (one per GPU on CUDA)
    default = "w1" if device.startswith("cuda") else f"w{min(2, choose_workers(audio / 3600, available_memory_gb(), os.cpu_count() or 1)[0])}"

    # throughput, interleaved -------------------------------------------------------------------
    rounds: list[dict[str, dict]] = []
    for k in range(args.repeat):
        runs: dict[str, dict] = {}
        runs["bare"] = run_child(f"bare{k}", "bare", {**base_spec, "codes": str(work / f"bare{k}.npz")}, work)
        for n in (0, 1, 2):
            if f"w{n}" == default or f"workers{n}" not in skip:
                runs[f"w{n}"] = run_pipeline(f"w{n}_{k}", source, weights, work, [*on, "--workers", str(n)])
        if "naive" not in skip:
            runs["naive"] = run_child(f"naive{k}", "naive", base_spec, work)
        rounds.append(runs)
        for name, r in runs.items():
            print(f"round {k + 1}: {name} {audio / r['wall_s']:.2f} audio s / wall s (load {r['load_before']})", file=sys.stderr)
    probes = []
    if "probe" not in skip:  # what dask's nanny did to every worker: any malloc threshold turns off glibc's adaptive one
        n = min(len(paths), 64)
        for label, env in (("unset (glibc's adaptive mmap threshold)", {}), ("MALLOC_TRIM_THRESHOLD_=65536 (dask's nanny default)", {"MALLOC_TRIM_THRESHOLD_": "65536"}),
                           ("MALLOC_TRIM_THRESHOLD_=1073741824 (what this tool set before)", {"MALLOC_TRIM_THRESHOLD_": str(1 << 30)})):
            probes.append((label, run_child(f"probe{len(probes)}", "bare", {**base_spec, "paths": paths[:n], "codes": str(work / "probe.npz")}, work, env)))
        probe_audio = float(table["duration"].iloc[:n].sum())
    decode = []
    if "decode" not in skip:
        for threads in sorted({1, 2, max(1, (os.cpu_count() or 1) - 1)}):
            decode.append((threads, run_child(f"decode{threads}", "decode", {"paths": paths, "threads": threads}, work)))
    hour = None
    if "hour" not in skip:
        hour_path = hour_file(table, work, args.hour_seconds)
        manifest = work / "hour.csv"
        pd.DataFrame([{"utt_id": "hour", "path": str(hour_path), "label": "bonafide"}]).to_csv(manifest, index=False)
        hour = run_pipeline("hour", ["--dataset", "manifest", "--root", str(manifest)], weights, work, on)
    profile = None
    if "profile" not in skip:  # the defaults' command once more, under py-spy
        try:
            py_spy = profile_extract.find_py_spy(args.py_spy)
        except SystemExit as err:
            profile = {"missing": str(err)}
        else:
            shutil.rmtree(work / "profile.zarr", ignore_errors=True)
            load_before = loadavg()
            cmd, wall = profile_extract.record([*source, "--out", str(work / "profile.zarr"), "--weights", weights, *on],
                                               work / "profile.txt", 25, py_spy)
            profile = {"command": " ".join(cmd), "wall_s": wall, "load_before": load_before, "load_after": loadavg(),
                       "table": profile_extract.report(work / "profile.txt")}
            shutil.rmtree(work / "profile.zarr", ignore_errors=True)

    # agreement and size ------------------------------------------------------------------------
    first = rounds[0]
    default_codes = store_codes(first[default]["store"])
    codebooks = FeatureStore(first[default]["store"]).codebooks
    cmp = {}
    if "agreement" not in skip:
        cmp[f"bare vs `--workers {default[1:]}` (the default)"] = compare_codes(bare_codes(work / "bare0.npz", ids), default_codes, codebooks)
        for name in ("w0", "w1", "w2"):
            if name in first and name != default:
                label = f"`--workers {name[1:]}` ({threads_per_worker(max(1, int(name[1:])))} torch threads each) vs the default"
                cmp[label] = compare_codes(store_codes(first[name]["store"]), default_codes, codebooks)
    size_store = args.store or first[default]["store"]
    full = inspect_store(size_store)
    total = time.perf_counter() - started
    for runs in rounds:
        for name, r in runs.items():
            if "store" in r and r["store"] != size_store:
                shutil.rmtree(r["store"], ignore_errors=True)

    # report ------------------------------------------------------------------------------------
    lines: list[str] = []

    def p(text: str = "") -> None:
        print(text)
        lines.append(text)

    v = info["versions"]
    what = f"offla19 {'whole corpus' if args.split == 'all' else args.split + ' split'}" + (f", {len(table)} utterances evenly spaced (--limit {args.limit})" if args.limit else "")
    p(f"## Extraction benchmark: {what}, {len(table)} files, {audio:.1f} s of audio ({audio / 60:.1f} min)")
    p()
    p(f"Codec weights `{weights}` (an UNTRAINED EnCodec 24 kHz unless stated otherwise: the real codec's cost, not its codes), 6 kbps, latent and energy on. "
      f"Defaults: {batch:g} s batches, units of {unit_size}, {threads1} torch threads per process (`--workers 2`: {threads_per_worker(2)} each).")
    p(f"Code: {info['code']}. Machine: {info['cpus']} CPUs ({info['model']}), {info['mem_gib']} GiB RAM, {gpu_text(device)}. Python {v['python']}, torch {v['torch']}, "
      f"torchaudio {v['torchaudio']}, encodec {v['encodec']}, zarr {v['zarr']}, dask {v['dask']}, numpy {v['numpy']}.")
    p()
    p(f"### Throughput ({args.repeat} round(s), configurations interleaved in this order)")
    p()
    p("CPU time and faults cover the whole process tree (dask workers included); 'audio s / CPU s' does not depend on how much of the machine the run got. "
      "The bare encoder row times only `BatchEncoder.encode` (no decoding, no writing, no start-up).")
    p()
    p(HEADER)
    labels = {"bare": f"bare `BatchEncoder.encode`, same batches, audio in RAM ({threads1} threads)",
              **{f"w{n}": f"`pipeline extract --workers {n}`{' (the default)' if f'w{n}' == default else ''}, whole command" for n in (0, 1, 2)},
              "naive": f"naive loop: sf.read + convert_audio + EncodecModel.encode per file ({threads1} threads)"}
    for k, runs in enumerate(rounds):
        for name, r in runs.items():
            p(row(f"{k + 1}: {labels[name]}", r, audio))
            if name.startswith("w"):
                p(f"| {k + 1}: ... inside `extract()` | {r['extract_wall_s']:.1f} | {audio / r['extract_wall_s']:.2f} | | | | | | |")
    p()
    ratio = {name: [audio / runs[name]["wall_s"] / (audio / runs["bare"]["wall_s"]) for runs in rounds] for name in rounds[0] if name != "bare"}
    cpu_ratio = {name: [runs["bare"]["cpu_s"] / runs[name]["cpu_s"] for runs in rounds] for name in rounds[0] if name != "bare"}
    for name in ratio:
        p(f"* {labels[name]}: **{median(ratio[name]):.2f}** of the bare encoder's throughput (wall, median over rounds: "
          f"{', '.join(f'{x:.2f}' for x in ratio[name])}); bare CPU time / its CPU time {median(cpu_ratio[name]):.2f}.")
    if device == "cuda":
        for name in ("bare", default):
            r = rounds[0][name]
            p(f"* {labels[name]}: **{audio / 3600 / (r['wall_s'] / 60):.2f} h of audio per GPU-minute** "
              f"(goal: ASVspoof 2019 LA train, about 24 h, in under a minute on one H200).")
    p(f"* in `extract()` only, the default: {median([runs['bare']['wall_s'] / runs[default]['extract_wall_s'] for runs in rounds]):.2f} of the bare encoder.")
    if "w2" in ratio and "w1" in ratio:
        p(f"* `--workers 2` / `--workers 1` throughput: {median([runs['w1']['wall_s'] / runs['w2']['wall_s'] for runs in rounds]):.2f} (target >= 1).")
    p(f"* Target: the defaults at >= {TARGET_RATIO} of the bare encoder, whole command: {'met' if median(ratio[default]) >= TARGET_RATIO else 'NOT met'} on this run.")
    if probes:
        p()
        p(f"### glibc's malloc thresholds: bare encoder, first {min(len(paths), 64)} files ({probe_audio:.1f} s), fresh process each")
        p()
        p(HEADER)
        for label, r in probes:
            p(row(label, r, probe_audio))
    if decode:
        p()
        p("### Decoding alone (soundfile read + mix-down + EnCodec's resampler; what a GPU run needs from the CPUs)")
        p()
        p(HEADER)
        for threads, r in decode:
            p(row(f"{threads} helper thread(s), one torch thread each", r, r["audio_s"]))
    if hour is not None:
        p()
        p(f"### One {args.hour_seconds:g} s file (offla19's files concatenated; 60 s windows, packed into the batch budget)")
        p()
        p(HEADER)
        p(row("`pipeline extract` defaults, whole command", hour, args.hour_seconds))
    p()
    p(f"### Cache size per audio second (`{size_store}`: {full['ok']} utterances, {full['audio_seconds']:.1f} s, {full['frames']} frames)")
    p()
    seconds_full = full["audio_seconds"]
    dense = 75 * full["codec"]["n_q"] * DENSE_BYTES_PER_FRAME_LEVEL
    p("| what | bytes on disk | bytes per audio second | vs dense float32 |")
    p("|---|---|---|---|")
    for name in ("codes", "latent", "energy"):
        if full["bytes"].get(name):
            p(f"| {name} | {full['bytes'][name]:,} | {full['bytes'][name] / seconds_full:,.0f} | {dense / (full['bytes'][name] / seconds_full):.0f}x smaller |")
    p(f"| whole store (with codebooks and codec weights) | {full['bytes']['total']:,} | {full['bytes']['total'] / seconds_full:,.0f} | - |")
    if cmp:
        p()
        p("### Code agreement")
        p()
        p("| comparison | frames | share of codes differing | frames whose summed embedding differs by > 1e-4 | utterances identical |")
        p("|---|---|---|---|---|")
        for label, c in cmp.items():
            p(f"| {label} | {c['frames']} | {c['share_codes_differ'] * 100:.3f} % | {c['share_frames_emb_differ'] * 100:.3f} % | {c['utterances_identical']} of {c['utterances']} |")
    if profile is not None:
        p()
        p("### Where the time goes: the defaults' command under py-spy (25 samples/s, every process)")
        p()
        if "missing" in profile:
            p(f"Not measured: {profile['missing']}")
        else:
            p(f"{profile['wall_s']:.1f} s wall under py-spy (load {profile['load_before']} / {profile['load_after']}). "
              "Each busy sample goes to the first stage matching its stack from the innermost frame out (bench/profile_extract.py); "
              "C/C++ time counts for the Python call above it; with 2 cores busy, 50 % of the samples is one core.")
            p()
            p(profile["table"])
            p()
            p(f"`{profile['command']}`")
    p()
    p(f"Benchmark total wall time: {total / 60:.1f} min. Commands (in this checkout, `PYTHONPATH` = the checkout):")
    p()
    p("```")
    for r in [*rounds[0].values(), *([hour] if hour else [])]:
        p(r.get("command") or r["process"]["command"])  # a child's own command is in its "process"
    p("```")
    if args.report:
        Path(args.report).write_text("\n".join(lines) + "\n")
    raw = {"machine": info, "corpus": {"split": args.split, "limit": args.limit, "files": len(table), "audio_s": audio},
           "rounds": rounds, "probes": probes, "decode": decode, "hour": hour, "profile": profile, "compare": cmp, "size": full, "total_s": total}
    (work / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    bench_results.record(codec_weights=weights, raw=json.loads(json.dumps(raw, default=str)))
    return 0


# The code whose figures this benchmark measures (bench/figures.py marks them stale when it changes)
MODULES = [
    "extract/encoder.py",
    "extract/codec.py",
    "extract/lsuv.py",
    "extract/run.py",
    "extract/audio.py",
    "extract/prefetch.py",
    "extract/committer.py",
    "common/malloc.py",
    "extract/unit.py",
    "store/writer.py",
    "store/format.py",
    "pipeline/cluster.py",
    "pipeline/commands/extract.py",
    "extract/driver.py",
    "extract/backend.py",
    "extract/codec_stream.py",
    "extract/sizing.py",
]

if __name__ == "__main__":
    sys.exit(bench_results.run(main, "extract", MODULES))
