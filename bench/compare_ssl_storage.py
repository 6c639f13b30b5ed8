"""Does a smaller storage of the SSL stream change the EER? A paired comparison over seeds against float16.

    python bench/compare_ssl_storage.py --store STORE --work DIR [--storages int8,pca:256] [--seeds 0 1 2] \\
        [--workers 2] [--ssl-layers 1-12] [--ssl-proj-dim 64] [--ssl-norm true] [--set KEY=VALUE ...] \\
        [--boot 2000] [--result ssl_storage_eer]

STORE is a finished store that already holds a float16 SSL stream ``ssl`` (``pipeline extract --ssl MODEL
--ssl-storage float16``: float16 is not the default storage of a new stream)
beside its codec streams. Steps (each resumes on a re-run):

1. each storage S of ``--storages`` is re-coded from ``ssl`` into the stream ``ssl_<slug>`` (``ssl_int8``,
   ``ssl_pca256``) by the product command ``pipeline extract --ssl-from ssl --ssl-storage S`` (no SSL
   model run; a stream already there is left as it is); timed (WORK/recode.json keeps the first
   time of each across re-runs), and every stream's bytes on disk per
   audio second read from ``pipeline inspect --json``;
2. one sweep (``pipeline sweep``, under ``/usr/bin/time -v``) of configs/sweeps/paper.toml's [base]
   with ``variant = ssl+qaf-static``, the seeds, and ``ssl_kwargs`` as a grid axis: one table per
   stream (float16 and each storage), every other setting equal; ``--set`` overrides go to the sweep.
   Its user and system CPU seconds, system share, minor faults and wall time are recorded (issue 21
   item 4: a sweep whose SSL stream exceeds ``ssl_kwargs.ram_mb`` should spend < 10 % in system time);
3. per storage and seed: dev EER (best epoch, and the best checkpoint re-scored) and eval EER; the
   mean over seeds of the paired difference (S - float16) of the dev and the eval EER, with a 95 %
   interval of a two-way cluster bootstrap (speakers x attacks, `classify.bootstrap`: the same draws
   for every storage and seed), and whether 0 lies inside it.

Every figure names the codec and SSL weights of the store (UNTRAINED when so).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from results import Recorder  # noqa: E402
from timed import parse_time_v  # noqa: E402  (bench/timed.py: the one GNU time -v parser)

from classify.bootstrap import cluster_counts, percentile_interval, replicate_eers  # noqa: E402
from classify.metrics import compute_eer  # noqa: E402
from classify.scorefiles import read_scores  # noqa: E402
from classify.ssloptions import SSLOptions  # noqa: E402
from classify.sweep import OK, expand, load_sweep, read_results, store_identity  # noqa: E402
from common.config import parse_overrides  # noqa: E402
from extract.run import ExtractConfig  # noqa: E402
from store.reader import FeatureStore  # noqa: E402
from store.sslstorage import SSLStorage  # noqa: E402

# the sweep's system time depends on the workers' allocator settings (pipeline/cluster.py, common/malloc.py)
MODULES = ["store/sslstorage.py", "extract/ssl_recode.py", "extract/ssl_stream.py", "classify/fusion.py",
           "classify/train.py", "classify/sweep.py", "classify/frames.py", "classify/sources.py",
           "pipeline/cluster.py", "common/malloc.py"]
PAPER = REPO / "configs" / "sweeps" / "paper.toml"
SOURCE = "ssl"
VARIANT = "ssl+qaf-static"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def slug(storage: str) -> str:
    """``int8`` -> ``int8``, ``pca:256`` -> ``pca256``, ``pca:256:int8`` -> ``pca256_int8``."""
    return re.sub(r":(\d)", r"\1", storage).replace(":", "_")


def pipeline(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def env() -> dict[str, str]:
    """This checkout first on the path of every command it runs."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def inspect(store: str) -> dict:
    done = subprocess.run(pipeline("inspect", "--json", store), capture_output=True, text=True, env=env(), check=True)
    return json.loads(done.stdout)


def toml_value(value) -> str:
    """A TOML literal of a str, bool, number, list or table (what a sweep file needs)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML literal for {value!r}")


def sweep_file(streams: list[str], seeds: list[int], layers: str | None, proj_dim: int | None,
               norm: bool | None) -> tuple[str, dict]:
    """The sweep file's text and the float16 stream's ssl_kwargs table: paper.toml's [base] with
    ``ssl_kwargs`` (one table per stream, else equal) and the seeds as grid axes."""
    base = dict(tomllib.loads(PAPER.read_text())["base"])
    table = dict(base.pop("ssl_kwargs", {}))
    table.update({k: v for k, v in (("layers", layers), ("proj_dim", proj_dim), ("norm", norm)) if v is not None})
    tables = [{"stream": s, **{k: v for k, v in table.items() if k != "stream"}} for s in streams]
    lines = ["# written by bench/compare_ssl_storage.py: configs/sweeps/paper.toml's [base], one ssl_kwargs table",
             "# per storage of the SSL stream", f'baseline = "{VARIANT}"', "", "[base]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in base.items()]
    lines += ["", "[grid]", f"variant = {toml_value([VARIANT])}", f"seed = {toml_value(seeds)}",
              f"ssl_kwargs = {toml_value(tables)}", ""]
    return "\n".join(lines), tables[0]


def eer(scores: np.ndarray, bona: np.ndarray) -> float:
    return float(compute_eer(scores[bona], scores[~bona])[0]) if bona.any() and (~bona).any() else float("nan")


def trial_scores(trial_dir: str, role: str, ids: pd.Index) -> np.ndarray:
    """A trial's scores of ``role`` (its best checkpoint) aligned to ``ids``."""
    for name in ("scores.txt", "scores.tsv"):
        path = Path(trial_dir) / role / name
        if path.exists():
            read = read_scores(path)
            aligned = pd.Series(read.scores, index=read.utt_ids).reindex(ids).to_numpy(dtype=np.float64)
            if np.isnan(aligned).any():
                raise SystemExit(f"{path}: scores missing for {int(np.isnan(aligned).sum())} {role} utterances")
            return aligned
    raise SystemExit(f"{trial_dir}/{role}: no score file")


def paired(split: str, store: FeatureStore, rows: dict, arms: list[str], seeds: list[int], boot: int) -> dict:
    """Per arm (not float16): the mean over seeds of (arm - float16) EER on ``split``, with its
    bootstrap interval; one set of speaker x attack draws for every arm and seed."""
    table = store.utterances
    table = table[(table["split"] == split) & (table["status"] == "ok")].set_index("utt_id")
    ids = table.index
    bona = (table["label"] == "bonafide").to_numpy()
    counts = cluster_counts(table["speaker"].astype(str).tolist(), table["system"].astype(str).tolist(), bona,
                            boot, np.random.default_rng(0))
    reps, points = {}, {}
    for arm in [SOURCE, *arms]:
        for seed in seeds:
            s = trial_scores(rows[arm][seed]["trial_dir"], split, ids)
            reps[arm, seed] = replicate_eers(s, bona, counts)
            points[arm, seed] = eer(s, bona)
    out = {}
    for arm in arms:
        diffs = np.mean([reps[arm, s] - reps[SOURCE, s] for s in seeds], axis=0)
        point = float(np.mean([points[arm, s] - points[SOURCE, s] for s in seeds]))
        low, high = percentile_interval(diffs)
        out[arm] = {"mean_difference": point, "interval_95": [low, high], "zero_inside": bool(low <= 0 <= high),
                    "per_seed_eer": {str(s): points[arm, s] for s in seeds},
                    "float16_per_seed_eer": {str(s): points[SOURCE, s] for s in seeds},
                    "invalid_replicates": int((~np.isfinite(diffs)).sum()), "utterances": len(ids)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="finished store with a float16 SSL stream 'ssl' (kept; streams are added)")
    parser.add_argument("--work", required=True, help="folder for the sweep (kept: re-running resumes)")
    parser.add_argument("--storages", default="int8,pca:256", help="storages compared with float16 (store.sslstorage)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dataset", help="default: the store's recorded dataset")
    parser.add_argument("--root", help="default: the store's recorded corpus root")
    parser.add_argument("--ssl-layers", help="ssl_kwargs.layers (default: paper.toml's, 1-12)")
    parser.add_argument("--ssl-proj-dim", type=int, help="ssl_kwargs.proj_dim (default: paper.toml's, 512)")
    parser.add_argument("--ssl-norm", choices=["true", "false"], help="ssl_kwargs.norm (default: paper.toml's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="training setting passed to the sweep (repeatable)")
    parser.add_argument("--boot", type=int, default=2000)
    parser.add_argument("--result", default="ssl_storage_eer")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    storages = [s.strip() for s in args.storages.split(",") if s.strip() and s.strip() != "float16"]
    streams = {s: f"ssl_{slug(s)}" for s in storages}
    if any(k.split(".")[0] in ("variant", "seed", "ssl_kwargs") for k in parse_overrides(args.overrides)):
        raise SystemExit("--set: variant, seed and ssl_kwargs are this script's grid axes; use --seeds and --ssl-* options")
    rec = Recorder(args.result, MODULES)
    info = inspect(args.store)
    dataset = args.dataset or info["dataset"]["name"]
    root = args.root or info["dataset"]["root"]
    weights = info["config"].get("weights") or "untrained"
    store = FeatureStore(args.store)
    if SOURCE not in store.streams:
        raise SystemExit(f"{args.store}: no SSL stream {SOURCE!r} to compare against (pipeline extract --ssl MODEL "
                         "--ssl-storage float16 first)")
    source = store.streams[SOURCE].source or {}
    if SSLStorage.from_source(source).name != "float16":
        raise SystemExit(f"{args.store}: stream {SOURCE!r} is stored as {SSLStorage.from_source(source).name}, "
                         "not float16: the comparison needs the float16 stream as its stream 'ssl'")

    recorded = info.get("config") or {}
    same = [a for key in ExtractConfig.FINGERPRINT if key not in ("dataset", "root") and recorded.get(key) is not None
            for a in ("--set", f"{key}={toml_value(recorded[key])}")]  # the store's settings, which a resume checks
    timings = work / "recode.json"  # the first (real) re-coding time of each stream, kept across re-runs
    recode = json.loads(timings.read_text()) if timings.exists() else {}
    for storage, name in streams.items():
        had = name in store.streams
        t0 = time.perf_counter()
        command = pipeline("extract", "--dataset", dataset, "--root", root, "--out", args.store, "--weights", weights,
                           "--ssl-from", SOURCE, "--ssl-storage", storage, "--set", f"ssl_stream={name}", *same)
        log(f"re-coding {SOURCE} -> {name} ({storage}){' (already there)' if had else ''}: {' '.join(command[1:])}")
        subprocess.run(command, env=env(), check=True)
        seconds = time.perf_counter() - t0
        if not had or storage not in recode:
            recode[storage] = {"stream": name, "seconds": None if had else seconds, "already_there": had}
            timings.write_text(json.dumps(recode, indent=1))
    info = inspect(args.store)
    store = FeatureStore(args.store)
    ssl_spec = store.streams[SOURCE].source or {}
    ssl_weights = ssl_spec.get("weights") or {}
    codec_label = store.codec.weights_label
    ssl_label = ssl_weights.get("label") or str(ssl_weights)
    rec.codec_weights(None, store.codec.weights_sha256)
    rec.stamp["ssl_sha256"] = ssl_weights.get("sha256")
    untrained = (not store.codec.trained) or ssl_weights.get("trained") is False
    banner = f"codec: {codec_label}; SSL: {ssl_label}" + ("; UNTRAINED weights: not a real result" if untrained else "")
    per_stream = info.get("bytes_per_audio_second", {})
    audio_s = float(info["audio_seconds"])
    size = {name: int(info["streams"][name]["bytes"]) if name in info.get("streams", {}) else None
            for name in [SOURCE, *streams.values()]}
    bps = {name: per_stream.get(name, size[name] / audio_s if size[name] else None) for name in size}

    text, table = sweep_file([SOURCE, *streams.values()], args.seeds, args.ssl_layers, args.ssl_proj_dim,
                             None if args.ssl_norm is None else args.ssl_norm == "true")
    config = work / "sweep.toml"
    config.write_text(text)
    out = work / "sweep"
    command = ["/usr/bin/time", "-v", *pipeline("sweep", "--features", args.store, "--config", str(config), "--out",
                                                 str(out), "--workers", str(args.workers))]
    for pair in args.overrides:
        command += ["--set", pair]
    log(f"sweep: {' '.join(command)}")
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env(), stderr=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - t0
    sys.stderr.write(done.stderr)
    io = {"user_s": float("nan"), "system_s": float("nan"), "system_share": float("nan"), **parse_time_v(done.stderr)}
    ram_mb = SSLOptions(**{k: v for k, v in table.items() if k in SSLOptions.__dataclass_fields__}).ram_mb
    io.update(wall_seconds_measured=wall, exit_status=done.returncode, ram_mb=ram_mb,
              ssl_stream_mb={n: (b / 1e6 if b else None) for n, b in size.items()},
              exceeds_ram_mb={n: bool(b and b / 2 ** 20 > ram_mb) for n, b in size.items()},
              workers=args.workers)

    spec = load_sweep(config, parse_overrides(args.overrides))
    trials = expand(spec, store_identity(store))
    results = read_results(out).set_index("trial_id")
    rows: dict[str, dict[int, dict]] = {}
    for trial in trials:
        name = trial.params["ssl_kwargs"]["stream"]
        if trial.trial_id not in results.index or results.loc[trial.trial_id, "status"] != OK:
            raise SystemExit(f"trial {trial.trial_id} ({name}, seed {trial.params['seed']}) did not finish ok "
                             f"(see {out}/trials/{trial.trial_id}/); re-run to resume")
        r = results.loc[trial.trial_id]
        rows.setdefault(name, {})[trial.params["seed"]] = {
            "trial_id": trial.trial_id, "trial_dir": r["trial_dir"], "best_dev_eer": float(r["best_dev_eer"]),
            "dev_eer": float(r["dev_eer"]), "eval_eer": float(r["eval_eer"]), "best_epoch": int(r["best_epoch"])}
    arms = list(streams.values())
    dev = paired("dev", store, rows, arms, args.seeds, args.boot)
    evl = paired("eval", store, rows, arms, args.seeds, args.boot)

    figures = {}
    for storage, name in [("float16", SOURCE), *streams.items()]:
        figures[storage] = {"stream": name, "bytes": size[name], "bytes_per_audio_s": bps[name],
                            "recode_seconds": recode.get(storage, {}).get("seconds"),
                            "recode_already_there": recode.get(storage, {}).get("already_there"),
                            "runs": {str(s): rows[name][s] for s in args.seeds}}
        if name != SOURCE:
            figures[storage]["paired_dev"] = dev[name]
            figures[storage]["paired_eval"] = evl[name]
    rec.figures.update(codec_weights=codec_label, ssl_weights=ssl_label, untrained=untrained, store=args.store,
                       audio_seconds=audio_s, seeds=args.seeds, variant=VARIANT, overrides=args.overrides,
                       ssl_kwargs=table, storages=figures, sweep_io=io, boot=args.boot, sweep_file=text)

    print(f"### Paired EER per storage\n\n{banner}\n")
    print("| storage | stream | bytes per audio s | vs float16 | split | mean EER difference (pp) | 95 % interval (pp) "
          "| 0 inside | seeds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for storage, name in streams.items():
        for split, p in (("dev", dev[name]), ("eval", evl[name])):
            low, high = p["interval_95"]
            print(f"| {storage} | {name} | {bps[name]:.0f} | {bps[SOURCE] / bps[name]:.2f}x smaller | {split} | "
                  f"{100 * p['mean_difference']:+.2f} | [{100 * low:+.2f}, {100 * high:+.2f}] | "
                  f"{'yes' if p['zero_inside'] else 'no'} | {len(args.seeds)} |")
    print(f"\n### Per seed\n\n{banner}\n")
    print("| storage | seed | best dev EER % | dev EER % (best.pt) | eval EER % | best epoch |")
    print("|---|---|---|---|---|---|")
    for storage, name in [("float16", SOURCE), *streams.items()]:
        for s in args.seeds:
            r = rows[name][s]
            print(f"| {storage} | {s} | {100 * r['best_dev_eer']:.2f} | {100 * r['dev_eer']:.2f} | "
                  f"{100 * r['eval_eer']:.2f} | {r['best_epoch']} |")
    print(f"\n### Streams on disk\n\n{banner}\n")
    print("| storage | stream | MB | bytes per audio s | re-code s |")
    print("|---|---|---|---|---|")
    for storage, name in [("float16", SOURCE), *streams.items()]:
        seconds = recode.get(storage, {}).get("seconds")
        print(f"| {storage} | {name} | {size[name] / 1e6:.1f} | {bps[name]:.0f} | "
              f"{'-' if seconds is None else f'{seconds:.1f}'} |")
    print(f"\n### Sweep CPU and page faults\n\n{banner}\n")
    print("| workers | wall s | user s | system s | system share | minor faults | ram_mb | float16 stream MB |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.workers} | {io.get('wall_s', wall):.0f} | {io['user_s']:.0f} | {io['system_s']:.0f} | "
          f"{100 * io['system_share']:.1f} % | {io.get('minor_faults', '?')} | {ram_mb:.0f} | "
          f"{size[SOURCE] / 1e6:.0f} |")
    if done.returncode:
        raise SystemExit(f"the sweep exited with status {done.returncode}")
    rec.finish()


if __name__ == "__main__":
    main()
