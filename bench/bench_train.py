"""Benchmark of Stage 2 training on the CPU: an epoch from the feature cache against an epoch that
runs the frozen codec on the fly, end to end, and the data-loading share of the cached step.

    python bench/bench_train.py [--store /tmp/bench/offla19.zarr] [--splits train] [--n 128]
                                [--cached-epochs 3] [--profile-epochs 1] [--torch-profiler]
                                [--result NAME]   (bench/results.py; none: write nothing)

Setup, identical on both sides: the default ``TrainConfig`` (qaf-static weighting, the product's LSTM
head, batch 32, 4 s crops = 300 frames, ``pad = repeat``, AdamW) on the CPU in float32, built by the
training loop's own ``classify.train.TrainingRun``; the first ``--n`` ok utterances of ``--splits``
(table order); one torch thread (and one inter-op thread), so that both sides are comparable on a
shared machine. The run's ``torch.Generator`` is reset to the same state before every epoch, so every
epoch, cached or on the fly, trains on the same batches (order and crop positions). Each measurement
keeps its wall and process CPU time (with one thread the CPU time is the less load-sensitive) and the
load averages before and after.

1. Cached epoch: ``TrainingRun.run_epoch`` itself (``FrameSource.train_batches`` -> forward -> BCE
   -> backward -> AdamW). One warm-up epoch, then ``--cached-epochs`` timed epochs, half before and
   half after the on-the-fly epoch (the load drifts); the median is reported.
2. On-the-fly epoch, run end to end in one timed loop: per batch, ``load_audio`` of each file
   (decode, mono, 24 kHz), the crop's audio span (an utterance shorter than the crop is encoded whole
   and its codes tiled as ``pad = repeat`` tiles the cached frames), the frozen EnCodec encoder + RVQ
   on all crops of the batch at once (``extract.encoder.BatchEncoder``, the store's own
   ``codec_weights.th`` at the store's bandwidth, no latent), then the identical ``TrainingRun.step``
   with run_epoch's learning-rate schedule. One warm-up batch, then one timed epoch. Check: the share
   of on-the-fly code values equal to the cached ones (``FrameSource.gather`` of the same crops,
   compared after the timed epoch). A crop that does not start at frame 0 is encoded without the
   causal context the cache had, so only crops from frame 0 should agree fully.
3. Data-loading share of the cached step: the cached loop with ``time.perf_counter`` around (a) crop
   indices + gather, (b) forward + loss, (c) backward, (d) AdamW step, over ``--profile-epochs``
   epochs; ``--torch-profiler`` adds one epoch under ``torch.profiler`` as a cross-check.

Prints a markdown report; its "Epochs" table (``figures.tables.epochs``, also ``figures.epochs``) is
BENCHMARKS.md section 3's table; the raw numbers are ``figures.raw``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import results as bench_results  # noqa: E402  (bench/results.py: the raw result of this run)
import torch
import torch.nn.functional as F

from classify.config import TrainConfig
from classify.data import Batch, SplitData, crop_index, epoch_order
from classify.train import TrainingRun, lr_at
from extract.audio import load_audio
from extract.codec import HOP_LENGTH, load_weights_file
from extract.encoder import BatchEncoder
from store.format import WEIGHTS
from store.reader import FeatureStore

TARGET_SPEEDUP = 20.0
TARGET_LOAD_SHARE = 0.05
HEAD_LABEL = "LSTM over the padded batch, masked mean (the product's head)"
PHASES = ("gather", "forward", "backward", "optimizer")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Meter:
    """Wall and process CPU time, and the load averages, around one measurement."""

    def __enter__(self) -> Meter:
        self.load_before = loadavg()
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0
        self.load_after = loadavg()

    def row(self) -> dict:
        return {"wall_s": self.wall, "cpu_s": self.cpu, "cpu_share": self.cpu / self.wall,
                "load_before": self.load_before, "load_after": self.load_after}


def select(store: FeatureStore, splits: list[str], n: int) -> tuple[SplitData, list[str]]:
    """The first ``n`` ok utterances of ``splits`` (table order) as SplitData, and their audio paths."""
    table = store.utterances
    table = table[table["split"].isin(splits) & (table["status"] == "ok")].iloc[:n]
    rows = table.index.to_numpy()
    offsets = store.offsets
    data = SplitData(name="+".join(splits), utt_ids=table["utt_id"].astype(str).tolist(),
                     starts=offsets[rows].astype(np.int64), lengths=(offsets[rows + 1] - offsets[rows]).astype(np.int64),
                     is_bonafide=(table["label"] == "bonafide").to_numpy(), attacks=table["system"].astype(str).tolist(),
                     codecs=["-"] * len(table), n_failed=0, rows=rows.astype(np.int64))
    return data, table["path"].astype(str).tolist()


def make_run(store: FeatureStore, data: SplitData, split: str) -> TrainingRun:
    config = TrainConfig(device="cpu", epochs=1, train_split=split, dev_split=split)
    run = TrainingRun(config, store, Path(tempfile.mkdtemp(prefix="bench_train_")), log=lambda s: None)
    run.train_data = data
    run.steps_per_epoch = -(-len(data) // config.batch_size)
    run.total_steps = 1000  # only sets the learning-rate value; no effect on cost
    return run


def epoch_plan(run: TrainingRun, data: SplitData, state: torch.Tensor):
    """Per batch (chosen, unit [B, T], valid [B, T], n_units [B]), drawn from the generator exactly as
    ``FrameSource.train_batches`` draws them (codec variants: one unit = one codec frame)."""
    run.generator.set_state(state)
    order = epoch_order(data.is_bonafide, run.config.balance, run.generator)
    positions = torch.rand(order.size, generator=run.generator, dtype=torch.float64).numpy()
    units = run.source.units[data.rows]
    bs = run.config.batch_size
    for first in range(0, order.size, bs):
        chosen = order[first : first + bs]
        yield (chosen, *crop_index(np.zeros(chosen.size, dtype=np.int64), units[chosen], run.crop, run.config.pad,
                                   positions[first : first + bs]))


class OnTheFly:
    """Per batch: decode audio, cut each crop's span, encode with the frozen codec -> Batch."""

    def __init__(self, store: FeatureStore, paths: list[str]) -> None:
        self.weights = Path(store.url) / WEIGHTS
        self.encoder = BatchEncoder(load_weights_file(self.weights), store.codec.bandwidth, device="cpu", latent=False)
        self.paths, self.n_q = paths, store.codec.n_q

    def batch(self, chosen: np.ndarray, unit: np.ndarray, valid: np.ndarray, n_units: np.ndarray) -> Batch:
        wavs, firsts = [], unit.min(axis=1)
        for k, u in enumerate(chosen):
            last = int(unit[k].max()) + 1
            wavs.append(load_audio(self.paths[u])[:, firsts[k] * HOP_LENGTH : last * HOP_LENGTH])
        codes = np.zeros((len(chosen), unit.shape[1], self.n_q), dtype=np.int64)
        for k, enc in enumerate(self.encoder.encode(wavs)):
            codes[k] = enc.codes[np.minimum(unit[k] - firsts[k], enc.codes.shape[0] - 1)]  # last partial frame
        codes[~valid] = 0
        return Batch(torch.from_numpy(codes), torch.from_numpy(n_units.astype(np.int64)))


def on_the_fly_epoch(run: TrainingRun, data: SplitData, fly: OnTheFly, state: torch.Tensor,
                     max_batches: int | None = None) -> tuple[dict, list]:
    """run_epoch's loop with the gather replaced by decode + codec, timed as one epoch; returns the
    times (and the decode + codec share within it) and each batch's (rows, unit, valid, n_units, codes)."""
    run.model.train()
    kept, decode_s = [], 0.0
    with Meter() as m:
        for k, (chosen, unit, valid, n_units) in enumerate(epoch_plan(run, data, state)):
            if max_batches is not None and k >= max_batches:
                break
            t0 = time.perf_counter()
            batch = fly.batch(chosen, unit, valid, n_units)
            decode_s += time.perf_counter() - t0
            for group in run.optimizer.param_groups:  # as TrainingRun.run_epoch
                group["lr"] = lr_at(run.progress.step, run.total_steps, run.warmup, group["peak_lr"])
            run.step(batch, torch.from_numpy(data.is_bonafide[chosen]))
            run.progress.step += 1
            kept.append((data.rows[chosen], unit, valid, n_units, batch.codes))
    return {**m.row(), "decode_codec_s": decode_s, "batches": len(kept)}, kept


def codes_agree(run: TrainingRun, kept: list) -> tuple[float, float]:
    """Share of on-the-fly code values equal to the cached ones: all crops, crops from frame 0."""
    agree = total = agree0 = total0 = 0
    for rows, unit, valid, n_units, codes in kept:
        same = (run.source.gather(rows, unit, valid, n_units).codes == codes).flatten(1).numpy()
        from0 = unit.min(axis=1) == 0
        agree, total = agree + int(same.sum()), total + same.size
        agree0, total0 = agree0 + int(same[from0].sum()), total0 + same[from0].size
    return agree / max(1, total), agree0 / max(1, total0)


def cached_epoch(run: TrainingRun, state: torch.Tensor) -> dict:
    """The training loop's own epoch (classify.train.TrainingRun.run_epoch)."""
    run.generator.set_state(state)
    with Meter() as m:
        loss, _, load_s = run.run_epoch(0)
    return {**m.row(), "load_s": load_s, "loss": loss}


def instrumented_epochs(run: TrainingRun, data: SplitData, state: torch.Tensor, epochs: int) -> dict:
    """run_epoch + run.step unrolled, with perf_counter (and profiler ranges) around each phase."""
    from torch.profiler import record_function

    phases = dict.fromkeys(PHASES, 0.0)
    n = 0
    for _ in range(epochs):
        run.model.train()
        plan = epoch_plan(run, data, state)
        while True:
            t0 = time.perf_counter()
            with record_function("gather"):
                item = next(plan, None)
                if item is None:
                    break
                chosen, unit, valid, n_units = item
                batch = run.train_source.gather(data.rows[chosen], unit, valid, n_units)
                targets = torch.from_numpy(data.is_bonafide[chosen])
            t1 = time.perf_counter()
            with record_function("forward"):
                run.optimizer.zero_grad(set_to_none=True)
                logits = run.model(*batch.inputs())
                loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(),
                                                          weight=run.class_weight[targets.long()])
                float(loss.detach())
            t2 = time.perf_counter()
            with record_function("backward"):
                loss.backward()
            t3 = time.perf_counter()
            with record_function("optimizer"):
                run.optimizer.step()
            t4 = time.perf_counter()
            for name, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                phases[name] += dt
            n += 1
    return {"phases_s": phases, "batches": n}


def profiler_phases(run: TrainingRun, data: SplitData, state: torch.Tensor) -> dict:
    """One instrumented epoch under torch.profiler: CPU time of each record_function range (CPU
    autograd runs backward on the calling thread, inside the "backward" range)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        instrumented_epochs(run, data, state, 1)
    return {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages() if e.key in PHASES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="/tmp/bench/offla19.zarr")
    parser.add_argument("--splits", default="train", help="comma-separated splits to take the N utterances from")
    parser.add_argument("--n", type=int, default=128, help="training utterances (the first N ok ones of --splits)")
    parser.add_argument("--cached-epochs", type=int, default=3, help="timed cached epochs (median reported)")
    parser.add_argument("--profile-epochs", type=int, default=1, help="perf_counter-instrumented epochs")
    parser.add_argument("--torch-profiler", action="store_true", help="also one epoch under torch.profiler")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    started = time.perf_counter()
    store = FeatureStore(args.store)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    data, paths = select(store, splits, args.n)
    if len(data) < args.n:
        print(f"note: only {len(data)} ok utterances in {splits} of {args.store} (asked for {args.n})", file=sys.stderr)
    run = make_run(store, data, splits[0])
    state = torch.Generator().manual_seed(run.config.seed).get_state()
    fly = OnTheFly(store, paths)

    cached_epoch(run, state)  # warm-up (not timed): one cached epoch, one on-the-fly batch
    on_the_fly_epoch(run, data, fly, state, max_batches=1)
    half = max(1, args.cached_epochs // 2)
    cached = [cached_epoch(run, state) for _ in range(half)]
    fly_row, kept = on_the_fly_epoch(run, data, fly, state)
    cached += [cached_epoch(run, state) for _ in range(args.cached_epochs - half)]
    agree, agree0 = codes_agree(run, kept)
    with Meter() as m:
        inst = {**instrumented_epochs(run, data, state, args.profile_epochs)}
    inst.update(m.row())
    prof = profiler_phases(run, data, state) if args.torch_profiler else {}

    c = dataclasses.asdict(run.config)
    wall, cpu = statistics.median(e["wall_s"] for e in cached), statistics.median(e["cpu_s"] for e in cached)
    share = inst["phases_s"]["gather"] / sum(inst["phases_s"].values())
    r = {"store": args.store, "codec_weights": store.codec.weights_label, "n": len(data), "splits": splits,
         "crop_frames": run.crop, "short_utterances": int((data.lengths < run.crop).sum()),
         "audio_seconds_encoded_per_epoch": float(np.minimum(data.lengths, run.crop).sum()) / store.codec.frame_rate,
         "torch_threads": torch.get_num_threads(), "n_trainable": run.model.n_trainable(), "config": c,
         "cached_epochs": cached, "on_the_fly_epoch": fly_row, "instrumented": inst, "profiler_s": prof,
         "cached_median_wall_s": wall, "cached_median_cpu_s": cpu, "speedup_wall": fly_row["wall_s"] / wall,
         "speedup_cpu": fly_row["cpu_s"] / cpu, "data_loading_share": share, "codes_agree": agree,
         "codes_agree_from_frame0": agree0, "total_s": time.perf_counter() - started}
    epochs = bench_results.table(
        ["head implementation", "cached s/epoch", "codec on the fly s/epoch", "speed-up (target >= 20x)",
         "data loading share (target <= 5 %)"],
        [[HEAD_LABEL, f"{wall:.2f}", f"{fly_row['wall_s']:.1f}", f"**{r['speedup_wall']:.1f}x**", f"**{100 * share:.2f} %**"]])
    bench_results.record(codec_weights=fly.weights, epochs=epochs, raw=json.loads(json.dumps(r, default=str)))
    print_report(r, epochs)


def print_report(r: dict, epochs: dict) -> None:
    c = r["config"]
    print(f"## Training benchmark: cached vs codec on the fly, N = {r['n']} utterances ({', '.join(r['splits'])})\n")
    print(f"Store: `{r['store']}`; codec weights: {r['codec_weights']}  ")
    print(f"Model: {c['variant']} (level_norm {c['level_norm']}) + {c['head']} head, {r['n_trainable']:,} trainable "
          f"parameters; batch {c['batch_size']}, crops of {r['crop_frames']} frames ({c['crop_seconds']} s), "
          f"pad {c['pad']}, CPU float32, torch threads {r['torch_threads']}. {r['short_utterances']} of {r['n']} "
          f"utterances are shorter than the crop; audio encoded per on-the-fly epoch: "
          f"{r['audio_seconds_encoded_per_epoch']:.1f} s.\n")
    print("### Epochs\n")  # a stable heading: figures.tables.epochs is BENCHMARKS.md section 3's table
    print("| " + " | ".join(epochs["columns"]) + " |")
    print("|" + "---|" * len(epochs["columns"]))
    for row in epochs["rows"]:
        print("| " + " | ".join(row) + " |")
    fly = r["on_the_fly_epoch"]
    print("\n### Epoch times\n")
    print("| path | wall s / epoch | CPU s / epoch | CPU share | load avg before -> after |")
    print("|---|---|---|---|---|")
    for k, e in enumerate(r["cached_epochs"]):
        print(f"| cached, epoch {k + 1} | {e['wall_s']:.3f} | {e['cpu_s']:.3f} | {e['cpu_share']:.2f} | "
              f"{e['load_before']} -> {e['load_after']} |")
    print(f"| **cached, median** | **{r['cached_median_wall_s']:.3f}** | **{r['cached_median_cpu_s']:.3f}** | | |")
    print(f"| **on the fly, end to end** ({fly['batches']} batches; decode + codec {fly['decode_codec_s']:.1f} s "
          f"of it) | **{fly['wall_s']:.2f}** | **{fly['cpu_s']:.2f}** | {fly['cpu_share']:.2f} | "
          f"{fly['load_before']} -> {fly['load_after']} |")
    ok = "meets" if r["speedup_wall"] >= TARGET_SPEEDUP else "MISSES"
    print(f"\nSpeed-up of the cached epoch: **{r['speedup_wall']:.1f}x** by wall time, {r['speedup_cpu']:.1f}x by "
          f"CPU time ({ok} the >= {TARGET_SPEEDUP:.0f}x target).  ")
    print(f"Check: on-the-fly codes equal the cached ones for {100 * r['codes_agree']:.1f} % of the code values "
          f"({100 * r['codes_agree_from_frame0']:.1f} % for crops that start at frame 0, encoded with the cache's "
          f"causal context).\n")

    inst = r["instrumented"]
    ph = inst["phases_s"]
    total = sum(ph.values())
    print(f"### Phases of the cached step ({inst['batches']} steps, perf_counter)\n")
    print("| phase | s | share of step time |")
    print("|---|---|---|")
    labels = {"gather": "data loading: crop indices + FrameSource.gather", "forward": "forward + loss",
              "backward": "backward", "optimizer": "AdamW step"}
    for name in PHASES:
        print(f"| {labels[name]} | {ph[name]:.3f} | {100 * ph[name] / total:.2f} % |")
    print(f"| total | {total:.3f} | 100 % |")
    ok = "meets" if r["data_loading_share"] <= TARGET_LOAD_SHARE else "MISSES"
    print(f"\nData-loading share: **{100 * r['data_loading_share']:.2f} %** ({ok} the <= "
          f"{100 * TARGET_LOAD_SHARE:.0f} % target); {1000 * ph['gather'] / max(1, inst['batches']):.2f} ms per batch. "
          f"Load {inst['load_before']} -> {inst['load_after']}, CPU share {inst['cpu_share']:.2f}.  ")
    run_epoch_load = statistics.median(e["load_s"] / e["wall_s"] for e in r["cached_epochs"])
    print(f"`TrainingRun.run_epoch`'s own `load_seconds`: {100 * run_epoch_load:.2f} % of the epoch (median).  ")
    if r["profiler_s"]:
        prof = r["profiler_s"]
        parts = ", ".join(f"{k} {v:.3f} s ({100 * v / sum(prof.values()):.1f} %)" for k, v in prof.items())
        print(f"torch.profiler, one epoch, CPU time of the record_function ranges: {parts}.  ")
    print(f"\nTotal benchmark time: {r['total_s']:.0f} s.")


# The code whose figures this benchmark measures (bench/figures.py marks them stale when it changes)
MODULES = [
    "classify/train.py",
    "classify/heads.py",
    "classify/data.py",
    "classify/weighting.py",
    "classify/model.py",
    "extract/encoder.py",
    "extract/audio.py",
    "extract/codec.py",
    "classify/frames.py",
    "classify/sources.py",
]

if __name__ == "__main__":
    sys.exit(bench_results.run(main, "train", MODULES))
