"""Benchmark of Stage 2 training on CPU: an epoch from the feature cache against an epoch that runs
the frozen codec on the fly, and the data-loading share of the cached training step.

    python bench/bench_train.py [--store /tmp/bench/offla19.zarr] [--splits train] [--n 128]
                                [--cached-epochs 2] [--fast-epochs 4] [--profile-epochs 1]
                                [--torch-profiler unpacked] [--json FILE]

Both sides run with ``torch.set_num_threads(1)`` (and one inter-op thread), so that they are
comparable on a shared machine; the load averages (``/proc/loadavg``) before and after every
measurement, and the CPU share each one got (process CPU time / wall time), are printed with it.

Setup, identical for both sides: the default ``TrainConfig`` (qaf-static weighting with level_norm,
LSTM head, batch 32, 4 s crops = 300 frames, ``pad = repeat``, AdamW) on the CPU (float32: autocast
is CUDA-only), built by the training loop's own ``classify.train.TrainingRun``; the same N utterances (the
first ``--n`` ok utterances of ``--splits``, in table order); the same epoch order and crop positions
(the run's ``torch.Generator`` is reset to the same state before every epoch of either side).

1. Cached epoch: ``TrainingRun.run_epoch`` itself, the real training path: ``FrameSource.train_batches`` (crop
   indices, ``FrameSource.gather`` from the codes in RAM) -> model forward -> BCE -> backward ->
   AdamW step. One warm-up step, then ``--cached-epochs`` timed epochs, half before and half after
   the on-the-fly epoch (the machine's load drifts); the median is reported.
2. On-the-fly epoch: the same loop, with the gather replaced, per batch, by: ``load_audio`` of each
   utterance's file (soundfile decode, mono, resample to 24 kHz), the crop's audio span (offset x 320
   samples, crop x 320 samples; an utterance shorter than the crop is encoded whole, and its codes
   are tiled as ``pad = repeat`` tiles the cached frames), then the frozen EnCodec encoder + RVQ
   quantizer on all crops of the batch at once (``extract.encoder.BatchEncoder``, the extractor's
   padded, per-item exact batching; no latent), at the store's bandwidth, with the store's own
   ``codec_weights.th`` (loaded with weights_only=True). Then the identical ``TrainingRun.step``. One batch
   of warm-up, then one timed epoch. Codes of a crop encoded alone differ from the cached
   whole-file codes where the encoder's causal context differs (crops that do not start at frame 0);
   the share that agrees is printed as a check that the right codec was loaded.
3. Data-loading share of the cached step: the cached loop instrumented with ``time.perf_counter``
   around (a) crop indices + gather, (b) forward + loss, (c) backward, (d) AdamW step, summed over
   ``--profile-epochs`` epochs; and one epoch under ``torch.profiler`` with ``record_function``
   ranges for the same phases, as a cross-check (``--torch-profiler``).
4. The same with the LSTM head run on the padded tensor instead of a PackedSequence (a bench-only
   patch of the head's forward, proposed for ``classify/heads.py``): on the CPU the packed LSTM's
   backward allocates and zero-fills a full-size gradient for every time step (``SliceBackward0``,
   O(T^2) memory traffic), which dominates the default step. Its on-the-fly epoch is composed from
   the on-the-fly epoch's measured decode + codec time plus its own measured steps on the same batches (the
   codec is not run twice). Both wall and CPU time are given; with one torch thread, CPU time is
   the less load-sensitive of the two.

Prints a markdown report on stdout; raw numbers also go to ``--json`` if given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import types
from importlib import metadata
from pathlib import Path

import numpy as np
import results as bench_results  # noqa: E402  (bench/results.py: the raw result of this run)
import torch
import torch.nn.functional as F

from classify.config import TrainConfig
from classify.data import Batch, SplitData, crop_index, epoch_order
from classify.heads import frame_mask
from classify.train import TrainingRun, lr_at
from extract.audio import load_audio
from extract.codec import HOP_LENGTH, load_weights_file
from extract.encoder import BatchEncoder
from store.format import WEIGHTS
from store.reader import FeatureStore

TARGET_SPEEDUP = 20.0
TARGET_LOAD_SHARE = 0.05


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    versions = {"python": platform.python_version()}
    for name in ("torch", "torchaudio", "encodec", "numpy", "zarr", "soundfile"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return {"nproc": os.cpu_count(), "model": model, "versions": versions}


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
    data = SplitData(
        name="+".join(splits),
        utt_ids=table["utt_id"].astype(str).tolist(),
        starts=offsets[rows].astype(np.int64),
        lengths=(offsets[rows + 1] - offsets[rows]).astype(np.int64),
        is_bonafide=(table["label"] == "bonafide").to_numpy(),
        attacks=table["system"].astype(str).tolist(),
        codecs=["-"] * len(table),
        n_failed=0,
        rows=rows.astype(np.int64),
    )
    return data, table["path"].astype(str).tolist()


# ------------------------------------------------------------------------------------- on the fly


class OnTheFly:
    """Per batch: decode audio, cut each crop's span, encode with the frozen codec -> Batch."""

    def __init__(self, store: FeatureStore, data: SplitData, paths: list[str], source_codes: np.ndarray) -> None:
        self.source_codes = source_codes  # the cached codes [F, Q], for the agreement check only
        weights = Path(store.url) / WEIGHTS
        codec = load_weights_file(weights)
        self.encoder = BatchEncoder(codec, store.codec.bandwidth, device="cpu", latent=False)
        self.data, self.paths, self.store = data, paths, store
        self.agree = 0
        self.total = 0
        self.agree_whole = 0
        self.total_whole = 0

    def batch(self, chosen: np.ndarray, position: np.ndarray, crop: int, pad: str) -> Batch:
        starts, lengths = self.data.starts[chosen], self.data.lengths[chosen]
        index, valid, crop_lengths = crop_index(starts, lengths, crop, pad, position)
        relative = index - starts[:, None]  # frame numbers within each utterance
        wavs, firsts = [], []
        for k, u in enumerate(chosen):
            wav = load_audio(self.paths[u])
            first = int(relative[k].min())
            last = int(relative[k].max()) + 1
            wavs.append(wav[:, first * HOP_LENGTH : last * HOP_LENGTH])
            firsts.append(first)
        encoded = self.encoder.encode(wavs)
        codes = np.zeros((len(chosen), crop, self.store.codec.n_q), dtype=np.int64)
        for k, enc in enumerate(encoded):
            local = relative[k] - firsts[k]
            local = np.minimum(local, enc.codes.shape[0] - 1)  # last partial frame, if any
            codes[k] = enc.codes[local]
            cached = self.source_codes[index[k]]
            same = int((codes[k] == cached).sum())
            self.agree += same
            self.total += cached.size
            if firsts[k] == 0:
                self.agree_whole += same
                self.total_whole += cached.size
        codes[~valid] = 0
        return Batch(torch.from_numpy(codes), torch.from_numpy(crop_lengths.astype(np.int64)))


def epoch_plan(run: TrainingRun, data: SplitData, state: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Epoch order and crop positions exactly as ``train_batches`` draws them from the generator."""
    run.generator.set_state(state)
    order = epoch_order(data.is_bonafide, run.config.balance, run.generator)
    positions = torch.rand(order.size, generator=run.generator, dtype=torch.float64).numpy()
    return order, positions


def on_the_fly_epoch(run: TrainingRun, data: SplitData, fly: OnTheFly, state: torch.Tensor,
                     max_batches: int | None = None) -> dict:
    """run_epoch's loop with the gather replaced by decode + codec; returns phase times."""
    run.model.train()
    order, positions = epoch_plan(run, data, state)
    bs = run.config.batch_size
    codec_s = codec_cpu = step_s = step_cpu = 0.0
    n_batches = 0
    for first in range(0, order.size, bs):
        if max_batches is not None and n_batches >= max_batches:
            break
        chosen = order[first : first + bs]
        t0, c0 = time.perf_counter(), time.process_time()
        batch = fly.batch(chosen, positions[first : first + bs], run.crop, run.config.pad)
        targets = torch.from_numpy(data.is_bonafide[chosen])
        t1, c1 = time.perf_counter(), time.process_time()
        for group in run.optimizer.param_groups:  # as TrainingRun.run_epoch: each group on its own peak rate
            group["lr"] = lr_at(run.progress.step, run.total_steps, run.warmup, group["peak_lr"])
        run.step(batch, targets)
        run.progress.step += 1
        step_s += time.perf_counter() - t1
        step_cpu += time.process_time() - c1
        codec_s += t1 - t0
        codec_cpu += c1 - c0
        n_batches += 1
    return {"decode_codec_s": codec_s, "decode_codec_cpu_s": codec_cpu, "step_s": step_s, "step_cpu_s": step_cpu,
            "batches": n_batches}


# ------------------------------------------------------------------------------------- proposed head


def unpacked_lstm_forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """What `classify.heads.LSTMHead.forward` computes, without pack_padded_sequence: the LSTM is
    unidirectional and padding sits after each row's last valid frame, so outputs at valid frames
    do not depend on the padding; masking them before the mean gives the same logits (to float
    rounding). On the CPU the packed path's backward costs O(T^2) (one full-size zero tensor per
    time step, ``SliceBackward0``); this one is O(T). BENCH-ONLY proposal, not the product's head."""
    hidden, _ = self.lstm(self.proj(x))
    mask = frame_mask(lengths.to(x.device), x.shape[1]).unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / lengths.to(hidden.device, hidden.dtype).unsqueeze(1)
    return self.out(pooled).squeeze(1)


def make_run(config: TrainConfig, store: FeatureStore, data: SplitData, unpacked: bool) -> TrainingRun:
    run = TrainingRun(config, store, Path(tempfile.mkdtemp(prefix="bench_train_")), log=lambda s: None)
    run.train_data = data
    run.steps_per_epoch = -(-len(data) // config.batch_size)
    run.total_steps = 1000  # only sets the learning-rate value; no effect on cost
    if unpacked:
        run.model.head.forward = types.MethodType(unpacked_lstm_forward, run.model.head)
    return run


def step_seconds(run: TrainingRun, data: SplitData, state: torch.Tensor, max_batches: int | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of run.step alone (no data loading) over one epoch's cached batches."""
    run.generator.set_state(state)
    wall = cpu = 0.0
    for k, (batch, targets) in enumerate(run.source.train_batches(data, run.config.batch_size, run.crop,
                                                       run.config.pad, run.config.balance, run.generator)):
        if max_batches is not None and k >= max_batches:
            break
        t0, c0 = time.perf_counter(), time.process_time()
        run.step(batch, torch.from_numpy(targets))
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    return wall, cpu


def logits_agree(a: TrainingRun, b: TrainingRun, data: SplitData, state: torch.Tensor) -> float:
    """Max |logit difference| of the packed and unpacked heads with equal weights on one batch."""
    b.model.load_state_dict(a.model.state_dict())
    a.generator.set_state(state)
    batch, _ = next(a.source.train_batches(data, a.config.batch_size, a.crop, "zero", a.config.balance,
                                  a.generator))
    a.model.eval(), b.model.eval()
    with torch.no_grad():
        return float((a.model(batch.codes, batch.lengths) - b.model(batch.codes, batch.lengths)).abs().max())


# ------------------------------------------------------------------------------------- cached


def cached_epoch(run: TrainingRun, state: torch.Tensor) -> dict:
    """The training loop's own epoch (classify.train.TrainingRun.run_epoch)."""
    run.generator.set_state(state)
    with Meter() as m:
        loss, _, load_s = run.run_epoch(0)
    return {**m.row(), "load_s": load_s, "loss": loss}


def instrumented_epochs(run: TrainingRun, data: SplitData, state: torch.Tensor, epochs: int,
                        profile_ranges: bool = False) -> dict:
    """run_epoch + run.step unrolled, with perf_counter around each phase."""
    from torch.profiler import record_function

    phases = dict(gather=0.0, forward=0.0, backward=0.0, optimizer=0.0)
    n = 0
    bs = run.config.batch_size
    for _ in range(epochs):
        run.model.train()
        order, positions = epoch_plan(run, data, state)
        for first in range(0, order.size, bs):
            t0 = time.perf_counter()
            with record_function("gather"):
                chosen = order[first : first + bs]
                index, valid, lengths = crop_index(data.starts[chosen], data.lengths[chosen], run.crop,
                                                   run.config.pad, positions[first : first + bs])
                batch = run.source.gather(data.rows[chosen], index - data.starts[chosen][:, None], valid, lengths)
                targets = torch.from_numpy(data.is_bonafide[chosen])
            t1 = time.perf_counter()
            with record_function("forward"):
                run.optimizer.zero_grad(set_to_none=True)
                logits = run.model(batch.codes, batch.lengths, batch.latent)
                weight = run.class_weight[targets.long()]
                loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), weight=weight)
                float(loss.detach())
            t2 = time.perf_counter()
            with record_function("backward"):
                loss.backward()
            t3 = time.perf_counter()
            with record_function("optimizer"):
                run.optimizer.step()
            t4 = time.perf_counter()
            phases["gather"] += t1 - t0
            phases["forward"] += t2 - t1
            phases["backward"] += t3 - t2
            phases["optimizer"] += t4 - t3
            n += 1
    return {"phases_s": phases, "batches": n}


def profiler_phases(run: TrainingRun, data: SplitData, state: torch.Tensor) -> dict:
    """One instrumented epoch under torch.profiler: CPU time of each record_function range."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        instrumented_epochs(run, data, state, 1)
    out = {}
    for event in prof.key_averages():
        if event.key in ("gather", "forward", "backward", "optimizer"):
            out[event.key] = event.cpu_time_total / 1e6
    # CPU autograd runs the backward ops on the calling thread, inside the "backward" range.
    # The perf_counter numbers are the primary ones; these are a cross-check.
    return out


# ------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="/tmp/bench/offla19.zarr")
    parser.add_argument("--splits", default="train", help="comma-separated splits to take the N utterances from")
    parser.add_argument("--n", type=int, default=128, help="training utterances (the first N ok ones of --splits)")
    parser.add_argument("--cached-epochs", type=int, default=2, help="timed cached epochs, default head")
    parser.add_argument("--fast-epochs", type=int, default=4, help="timed cached epochs, unpacked head")
    parser.add_argument("--profile-epochs", type=int, default=1, help="perf_counter-instrumented epochs")
    parser.add_argument("--torch-profiler", choices=("packed", "unpacked", "both", "none"), default="unpacked",
                        help="which head gets one epoch under torch.profiler")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    started = time.perf_counter()
    info = machine()
    store = FeatureStore(args.store)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    data, paths = select(store, splits, args.n)
    if len(data) < args.n:
        print(f"note: only {len(data)} ok utterances in {splits} of {args.store} (asked for {args.n})", file=sys.stderr)

    config = TrainConfig(device="cpu", epochs=1)
    run = make_run(config, store, data, unpacked=False)
    state = torch.Generator().manual_seed(config.seed).get_state()
    audio_s = float(np.minimum(data.lengths, run.crop).sum()) / store.codec.frame_rate
    short = int((data.lengths < run.crop).sum())

    fly = OnTheFly(store, data, paths, run.source.reader("codes").data)
    report: dict = {"machine": info, "store": args.store, "codec_weights": store.codec.weights_label,
                    "n": len(data), "splits": splits, "batch_size": config.batch_size, "crop_frames": run.crop,
                    "short_utterances": short, "audio_seconds_encoded_per_epoch": audio_s,
                    "torch_threads": torch.get_num_threads(), "n_trainable": run.model.n_trainable(),
                    "config": dataclasses.asdict(config)}

    # warm-up (not timed): one step on one cached batch, one on-the-fly batch
    step_seconds(run, data, state, max_batches=1)
    on_the_fly_epoch(run, data, fly, state, max_batches=1)
    fly.agree = fly.total = fly.agree_whole = fly.total_whole = 0

    half = max(1, args.cached_epochs // 2)
    cached = [cached_epoch(run, state) for _ in range(half)]
    with Meter() as m:
        fly_phases = on_the_fly_epoch(run, data, fly, state)
    fly_row = {**m.row(), **fly_phases}
    cached += [cached_epoch(run, state) for _ in range(args.cached_epochs - half)]

    with Meter() as m:
        inst = instrumented_epochs(run, data, state, args.profile_epochs)
    inst_row = {**m.row(), **inst}
    prof = profiler_phases(run, data, state) if args.torch_profiler in ("packed", "both") else {}

    # proposed head (bench-only patch): cached epochs, phases, and its step time on the same batches
    fast = make_run(config, store, data, unpacked=True)
    step_seconds(fast, data, state, max_batches=1)  # warm-up
    fast_cached = [cached_epoch(fast, state) for _ in range(args.fast_epochs)]
    with Meter() as m:
        fast_inst = instrumented_epochs(fast, data, state, args.profile_epochs)
    fast_inst = {**m.row(), **fast_inst}
    fast_prof = profiler_phases(fast, data, state) if args.torch_profiler in ("unpacked", "both") else {}
    fast_step, fast_step_cpu = step_seconds(fast, data, state)
    fast_diff = logits_agree(run, fast, data, state)
    fast_wall = statistics.median(c["wall_s"] for c in fast_cached)
    fast_cpu = statistics.median(c["cpu_s"] for c in fast_cached)
    fast_fly = fly_row["decode_codec_s"] + fast_step
    fast_fly_cpu = fly_row["decode_codec_cpu_s"] + fast_step_cpu

    cached_wall = statistics.median(c["wall_s"] for c in cached)
    cached_cpu = statistics.median(c["cpu_s"] for c in cached)
    report.update(cached_epochs=cached, on_the_fly_epoch=fly_row, instrumented=inst_row, profiler_s=prof,
                  cached_median_wall_s=cached_wall, cached_median_cpu_s=cached_cpu,
                  speedup_wall=fly_row["wall_s"] / cached_wall, speedup_cpu=fly_row["cpu_s"] / cached_cpu,
                  codes_agree=fly.agree / max(1, fly.total),
                  codes_agree_from_frame0=fly.agree_whole / max(1, fly.total_whole),
                  proposed={"cached_epochs": fast_cached, "cached_median_wall_s": fast_wall,
                            "cached_median_cpu_s": fast_cpu, "instrumented": fast_inst, "profiler_s": fast_prof,
                            "step_s_on_the_fly_batches": fast_step, "step_cpu_s_on_the_fly_batches": fast_step_cpu,
                            "on_the_fly_estimate_s": fast_fly, "on_the_fly_estimate_cpu_s": fast_fly_cpu,
                            "speedup_wall": fast_fly / fast_wall, "speedup_cpu": fast_fly_cpu / fast_cpu,
                            "max_logit_diff_vs_packed": fast_diff},
                  total_s=time.perf_counter() - started)
    bench_results.record(raw=json.loads(json.dumps(report, default=str)))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_report(report)


def print_report(r: dict) -> None:
    m = r["machine"]
    v = m["versions"]
    print(f"## Training benchmark: cached vs on-the-fly codec, N = {r['n']} utterances ({', '.join(r['splits'])})\n")
    print(f"Store: `{r['store']}`  ")
    print(f"Codec weights: {r['codec_weights']}  ")
    print(f"Machine: {m['model']}, nproc {m['nproc']}; torch threads {r['torch_threads']} (both sides); "
          f"Python {v['python']}, torch {v['torch']}, torchaudio {v['torchaudio']}, encodec {v['encodec']}, "
          f"numpy {v['numpy']}, zarr {v['zarr']}  ")
    c = r["config"]
    print(f"Model: {c['variant']} (level_norm {c['level_norm']}) + {c['head']} head, {r['n_trainable']:,} trainable "
          f"parameters; batch {c['batch_size']}, crops of {r['crop_frames']} frames ({c['crop_seconds']} s), "
          f"pad {c['pad']}, CPU float32. {r['short_utterances']} of {r['n']} utterances are shorter than the crop; "
          f"audio encoded per on-the-fly epoch: {r['audio_seconds_encoded_per_epoch']:.1f} s.\n")

    fly = r["on_the_fly_epoch"]
    print("### 1. Epoch time\n")
    print("| path | wall s / epoch | CPU s / epoch | CPU share | load avg before -> after |")
    print("|---|---|---|---|---|")
    for k, e in enumerate(r["cached_epochs"]):
        print(f"| cached, epoch {k + 1} | {e['wall_s']:.3f} | {e['cpu_s']:.3f} | {e['cpu_share']:.2f} | "
              f"{e['load_before']} -> {e['load_after']} |")
    print(f"| **cached, median** | **{r['cached_median_wall_s']:.3f}** | **{r['cached_median_cpu_s']:.3f}** | | |")
    print(f"| **on the fly** (decode + codec {fly['decode_codec_s']:.1f} s wall / {fly['decode_codec_cpu_s']:.1f} s CPU, "
          f"model steps {fly['step_s']:.1f} s wall / {fly['step_cpu_s']:.1f} s CPU) | "
          f"**{fly['wall_s']:.2f}** | **{fly['cpu_s']:.2f}** | {fly['cpu_share']:.2f} | "
          f"{fly['load_before']} -> {fly['load_after']} |")
    ok = "meets" if r["speedup_wall"] >= TARGET_SPEEDUP else "MISSES"
    print(f"\nSpeed-up of the cached epoch: **{r['speedup_wall']:.1f}x** by wall time, {r['speedup_cpu']:.1f}x by "
          f"CPU time ({ok} the >= {TARGET_SPEEDUP:.0f}x target).  ")
    print(f"Check: on-the-fly codes equal the cached codes for {100 * r['codes_agree']:.1f} % of the code values "
          f"({100 * r['codes_agree_from_frame0']:.1f} % for crops that start at frame 0, i.e. encoded with the "
          f"same causal context as the cache).\n")

    inst = r["instrumented"]
    ph = inst["phases_s"]
    total = sum(ph.values())
    print(f"### 2. Phases of the cached step ({inst['batches']} steps, perf_counter)\n")
    print("| phase | s | share of step time |")
    print("|---|---|---|")
    for name in ("gather", "forward", "backward", "optimizer"):
        label = {"gather": "data loading: crop indices + FrameSource.gather", "forward": "forward + loss",
                 "backward": "backward", "optimizer": "AdamW step"}[name]
        print(f"| {label} | {ph[name]:.3f} | {100 * ph[name] / total:.2f} % |")
    print(f"| total | {total:.3f} | 100 % |")
    share = ph["gather"] / total
    ok = "meets" if share <= TARGET_LOAD_SHARE else "MISSES"
    print(f"\nData-loading share: **{100 * share:.2f} %** ({ok} the <= {100 * TARGET_LOAD_SHARE:.0f} % target); "
          f"{1000 * ph['gather'] / inst['batches']:.2f} ms per batch. "
          f"Load {inst['load_before']} -> {inst['load_after']}, CPU share {inst['cpu_share']:.2f}.  ")
    run_epoch_load = statistics.median(e["load_s"] / e["wall_s"] for e in r["cached_epochs"])
    print(f"The training loop's own `load_seconds` (time in `next(batches)` in `TrainingRun.run_epoch`): "
          f"{100 * run_epoch_load:.2f} % of the epoch (median of the timed cached epochs).  ")
    print_profiler(r["profiler_s"], "default (packed) head")
    p = r["proposed"]
    pi = p["instrumented"]
    pph = pi["phases_s"]
    ptot = sum(pph.values())
    print("\n### 3. The same with an unpacked LSTM head (bench-only patch, proposed for classify/heads.py)\n")
    print("| path | wall s / epoch | CPU s / epoch | CPU share | load avg before -> after |")
    print("|---|---|---|---|---|")
    for k, e in enumerate(p["cached_epochs"]):
        print(f"| cached, unpacked head, epoch {k + 1} | {e['wall_s']:.3f} | {e['cpu_s']:.3f} | {e['cpu_share']:.2f} | "
              f"{e['load_before']} -> {e['load_after']} |")
    print(f"| **cached, unpacked head, median** | **{p['cached_median_wall_s']:.3f}** | "
          f"**{p['cached_median_cpu_s']:.3f}** | | |")
    print(f"| **on the fly, unpacked head** = decode + codec of 1. ({fly['decode_codec_s']:.1f} s / "
          f"{fly['decode_codec_cpu_s']:.1f} s CPU) + unpacked-head steps on the same batches "
          f"({p['step_s_on_the_fly_batches']:.2f} s / {p['step_cpu_s_on_the_fly_batches']:.2f} s CPU) | "
          f"**{p['on_the_fly_estimate_s']:.2f}** | **{p['on_the_fly_estimate_cpu_s']:.2f}** | | |")
    ok = "meets" if min(p["speedup_wall"], p["speedup_cpu"]) >= TARGET_SPEEDUP else "check against"
    print(f"\nSpeed-up with the unpacked head: **{p['speedup_wall']:.1f}x** by wall time, "
          f"**{p['speedup_cpu']:.1f}x** by CPU time ({ok} the >= {TARGET_SPEEDUP:.0f}x target).  ")
    print(f"Phases ({pi['batches']} steps, perf_counter): gather {pph['gather']:.3f} s "
          f"(**{100 * pph['gather'] / ptot:.2f} %** of step time), forward + loss {pph['forward']:.3f} s, "
          f"backward {pph['backward']:.3f} s, AdamW {pph['optimizer']:.3f} s; load {pi['load_before']} -> "
          f"{pi['load_after']}, CPU share {pi['cpu_share']:.2f}.  ")
    fast_load = statistics.median(e["load_s"] / e["wall_s"] for e in p["cached_epochs"])
    print(f"`TrainingRun.run_epoch`'s own `load_seconds`: {100 * fast_load:.2f} % of the epoch (median).  ")
    print_profiler(p["profiler_s"], "unpacked head")
    print(f"Max |logit| difference to the packed head with the same weights, on a zero-padded batch of mixed "
          f"lengths: {p['max_logit_diff_vs_packed']:.2e}.")
    print(f"\nTotal benchmark time: {r['total_s']:.0f} s.")


def print_profiler(prof: dict, what: str) -> None:
    if prof:
        total = sum(prof.values())
        parts = ", ".join(f"{k} {v:.3f} s ({100 * v / total:.1f} %)" for k, v in prof.items())
        print(f"torch.profiler, one epoch, {what}, CPU time of the record_function ranges: {parts}.  ")


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
