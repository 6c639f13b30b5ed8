"""Benchmark of the untrained codec (`--weights untrained`): the LSUV variance-normalised random
encoder ("new", the default) against the plain seeded random encoder of earlier versions ("old",
``lsuv=False``), on a corpus in the ASVspoof 2019 LA layout (default: ``../shared/data/offla19``).

    python bench/bench_codec.py --weights STORE/codec_weights.th [--root DIR] [--work /tmp/codec-work/bench]
                                [--probe-train 500] [--probe-eval 500] [--flip-utts 200] [--flip-kmeans 32]
                                [--seed 0] [--codecs new,old] [--report FILE]
    python bench/bench_codec.py --partial STORE   # while STORE is still being extracted: measures 1 and 2

"new" is the codec a whole-corpus ``pipeline extract --weights untrained`` of ``--root`` built and
saved in its store (``--weights``: that store's ``codec_weights.th``; refused unless it is marked
untrained and made with LSUV). "old" is built here as the extraction builds its codec
(`extract.codec.build_untrained` with `ExtractConfig`'s default seed, k-means frames and
iterations, on the same audio: the training split first, in protocol order) with ``lsuv=False``,
and saved to ``WORK/old_codec_weights.th`` (marked UNTRAINED; reused when there). For each codec the
utterances measured (the same for both) are extracted with its weights file through a manifest
(`extract.run.extract`, the ``--weights FILE`` path, 8 s batches, units of 32) into
``WORK/NAME.zarr`` (resumed when there). Then:

1. frames: on the probe's eval utterances, from the stored latent (the encoder output, float16):
   standard deviation over time per dimension (mean over the 128 dims, then over utterances), the
   norm of the mean frame (mean over utterances), and their ratio std / (norm / sqrt(128));
2. near-duplicate codewords per level: codewords whose nearest other codeword (L2) is closer than
   1e-3 x the level's median nearest-neighbour distance (scale-free), and, for comparison with
   BENCHMARKS.md section 1, closer than 1e-4 (absolute); also the codewords used on the probe's
   eval utterances;
3. code flips, on ``--flip-utts`` eval utterances evenly spaced over the protocol, and on the
   first ``--flip-kmeans`` train utterances (the audio the codebooks were fit on: their frames can
   sit exactly on codewords), encoded with `extract.encoder.BatchEncoder` and the store's saved
   weights (`extract.codec.read_weights`): one utterance at a time with 1 torch thread (the
   reference) against (a) 8 s batches (units of 32 utterances in protocol order, longest first, as
   the extraction batches them), 1 thread, and (b) one at a time with 2 threads; and the store's
   own codes (the extraction as run) against the reference. Share of frames with any level's code
   different, and share of codes;
4. probe EERs: ``--probe-train`` train and ``--probe-eval`` eval utterances drawn at random (seed
   ``--seed``). Per utterance, the mean and standard deviation over time of a [frames, 128]
   feature; the features standardised on train (StandardScaler), logistic regression (sklearn,
   C=1, lbfgs), its decision function scored on eval; EER by `classify.metrics.compute_eer` (bona
   fide positive). Features: "mean of levels" (per frame, the mean over the levels of each level's
   embedding C_q[code_q] standardised as the training's level_norm does: (C_q - mean codeword) /
   rms), "latent" (the stored encoder output), "level 1" and "level 8" (C_q[code_q]).

Every number is for an UNTRAINED codec and is labelled with its weights' sha256 prefix. offla19 has
few voices (3 train, 5 eval speakers) and synthesized pauses cleaner than real ones (its README):
with 500 eval utterances and 5 speakers, an EER is good to about +-4 pp. Prints a markdown report
(and writes it to ``--report``); raw numbers go to ``WORK/results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import results as bench_results  # noqa: E402  (bench/results.py: the raw result of this run)
from bench_extract import loadavg  # noqa: E402  (bench/ is on the path of a script run from it)
from bench_extract import machine as extract_machine  # noqa: E402

from classify.metrics import compute_eer  # noqa: E402
from extract.audio import CODEC_SAMPLE_RATE, load_audio  # noqa: E402
from extract.calibration import describe, draw_sample  # noqa: E402
from extract.codec import build_untrained, n_quantizers, read_weights, untrained_seconds  # noqa: E402
from extract.datasets import get_dataset  # noqa: E402
from extract.encoder import BatchEncoder  # noqa: E402
from extract.run import ExtractConfig, extract  # noqa: E402
from extract.unit import length_batches  # noqa: E402
from store.format import WEIGHTS  # noqa: E402
from store.reader import FeatureStore  # noqa: E402

CODECS = {"old": False, "new": True}  # name -> lsuv
BATCH_SECONDS = 8.0
UNIT_SIZE = 32
NEAR_DUP_RELATIVE = 1e-3
NEAR_DUP_ABSOLUTE = 1e-4


def machine() -> dict:
    """`bench_extract.machine` (CPUs, memory, versions, commit), with scikit-learn's version (the probe)."""
    info = extract_machine()
    info["versions"]["scikit-learn"] = metadata.version("scikit-learn")
    return info


# ---------------------------------------------------------------------------------------- store


def old_weights(root: str, work: Path) -> Path:
    """The plain random codec, built as `pipeline extract --weights untrained` builds its codec
    (default settings), but without LSUV; saved (marked untrained) to ``WORK/old_codec_weights.th``."""
    path = work / "old_codec_weights.th"
    if not path.is_file():
        defaults = ExtractConfig(dataset="asv19", root=root, out="-")
        plan = get_dataset("asv19").load(Path(root), None).table.reset_index(drop=True)
        sample = draw_sample(plan, defaults.seed, untrained_seconds(defaults.kmeans_frames, lsuv=False), defaults.max_seconds,
                             defaults.window_seconds)  # the balanced calibration sample of `extract`
        data = build_untrained(sample.clips, n_quantizers(defaults.bandwidth), seed=defaults.seed, kmeans_frames=defaults.kmeans_frames,
                               kmeans_iters=defaults.kmeans_iters, lsuv=False, dataset="asv19", sample=describe(sample.record))[1]
        path.write_bytes(data)
    return path


def subset_store(name: str, weights: Path, table: pd.DataFrame, work: Path) -> tuple[FeatureStore, dict]:
    """The utterances of ``table`` extracted with the codec of ``weights`` into ``WORK/NAME.zarr``."""
    manifest, out = work / f"{name}_manifest.csv", work / f"{name}.zarr"
    table[["utt_id", "path", "label", "speaker", "system", "split"]].to_csv(manifest, index=False)
    load_before = loadavg()
    config = ExtractConfig(dataset="manifest", root=str(manifest), out=str(out), weights=str(weights), device="cpu",
                           batch_seconds=BATCH_SECONDS, unit_size=UNIT_SIZE, energy=False)
    result = extract(config, log=lambda m: print(f"  [{name}] {m}", file=sys.stderr))
    run = {"extract_s": result.wall_seconds, "ran_units": result.ran_units, "load": f"{load_before} / {loadavg()}"}
    return FeatureStore(str(out)), run


def rows_of(store: FeatureStore, utt_ids: np.ndarray) -> np.ndarray:
    """Row numbers of ``utt_ids`` in ``store`` (in the given order)."""
    index = store.utterances.reset_index(drop=True)
    return index.reset_index().set_index("utt_id").loc[utt_ids, "index"].to_numpy()


# ---------------------------------------------------------------------------------------- measures


def frame_stats(store: FeatureStore, rows: np.ndarray) -> dict:
    stds, norms = [], []
    for row in rows:
        latent = store.utterance_latent(int(row)).astype(np.float32)  # [frames, 128]
        stds.append(float(latent.std(axis=0).mean()))
        norms.append(float(np.linalg.norm(latent.mean(axis=0))))
    std, norm = float(np.mean(stds)), float(np.mean(norms))
    return {"std_over_time": std, "mean_frame_norm": norm, "relative": std / (norm / np.sqrt(store.codec.dim))}


def nearest_other(book: np.ndarray) -> np.ndarray:
    """[K, D] -> [K] L2 distance of each codeword to its nearest other codeword (float64)."""
    book = book.astype(np.float64)
    sq = (book**2).sum(1)
    d2 = np.maximum(sq[:, None] - 2 * book @ book.T + sq[None], 0)
    np.fill_diagonal(d2, np.inf)
    return np.sqrt(d2.min(1))


def codeword_stats(store: FeatureStore, eval_rows: np.ndarray) -> dict:
    near_rel, near_abs, median = [], [], []
    for book in store.codebooks:
        nn = nearest_other(book)
        med = float(np.median(nn))
        median.append(med)
        near_rel.append(int((nn < NEAR_DUP_RELATIVE * med).sum()))
        near_abs.append(int((nn < NEAR_DUP_ABSOLUTE).sum()))
    codes = np.concatenate([store.utterance_codes(int(r)) for r in eval_rows])
    used = [int(np.unique(codes[:, q]).size) for q in range(codes.shape[1])]
    return {"near_dup_relative": near_rel, "near_dup_absolute": near_abs, "median_nn": median, "used_on_eval": used}


def unit_batches(lengths: list[int]) -> list[list[int]]:
    """Indices in units of UNIT_SIZE, each cut into batches as the extraction cuts a unit (`length_batches`)."""
    budget = int(BATCH_SECONDS * CODEC_SAMPLE_RATE)
    return [batch for start in range(0, len(lengths), UNIT_SIZE)
            for batch in length_batches({i: lengths[i] for i in range(start, min(len(lengths), start + UNIT_SIZE))}, budget)]


def encode(encoder: BatchEncoder, wavs: list[torch.Tensor], threads: int, batched: bool) -> list[np.ndarray]:
    torch.set_num_threads(threads)
    out: list[np.ndarray | None] = [None] * len(wavs)
    groups = unit_batches([w.shape[-1] for w in wavs]) if batched else [[i] for i in range(len(wavs))]
    for group in groups:
        for i, result in zip(group, encoder.encode([wavs[i] for i in group])):
            out[i] = result.codes
    return out  # type: ignore[return-value]


def differ(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    frames = sum(int((x != y).any(axis=1).sum()) for x, y in zip(a, b))
    codes = sum(int((x != y).sum()) for x, y in zip(a, b))
    total = sum(x.shape[0] for x in a)
    return {"frames": frames, "codes": codes, "total_frames": total, "frame_share": frames / total, "code_share": codes / (total * a[0].shape[1])}


def flips(store: FeatureStore, rows: np.ndarray, work: Path, name: str) -> tuple[dict, str]:
    weights = work / f"{name}_{WEIGHTS}"
    weights.write_bytes(store.files.read_bytes(WEIGHTS))
    model, _, info = read_weights(weights)
    encoder = BatchEncoder(model, store.codec.bandwidth, device="cpu", latent=False)
    wavs = [load_audio(p) for p in store.utterances.loc[rows, "path"]]
    threads = torch.get_num_threads()
    try:
        reference = encode(encoder, wavs, 1, batched=False)
        batched = encode(encoder, wavs, 1, batched=True)
        two = encode(encoder, wavs, 2, batched=False)
    finally:
        torch.set_num_threads(threads)
    stored = [store.utterance_codes(int(r)) for r in rows]
    return {"batched_vs_alone": differ(batched, reference), "threads_2_vs_1": differ(two, reference),
            "store_vs_alone": differ(stored, reference), "n_utts": len(rows)}, info.label


def pooled(frames: np.ndarray) -> np.ndarray:
    """[frames, dim] -> [2 * dim]: mean and standard deviation over time."""
    return np.concatenate([frames.mean(0), frames.std(0)])


def probe_features(store: FeatureStore, rows: np.ndarray) -> dict[str, np.ndarray]:
    books = store.codebooks.astype(np.float32)  # [Q, K, D]
    shift = books.mean(1, keepdims=True)
    rms = np.sqrt(((books - shift) ** 2).mean(axis=(1, 2), keepdims=True))
    normed = (books - shift) / np.maximum(rms, 1e-12)  # a level of identical codewords (a tiny corpus) stays 0
    levels = np.arange(books.shape[0])
    feats: dict[str, list[np.ndarray]] = {"mean of levels": [], "latent": [], "level 1": [], "level 8": []}
    for row in rows:
        codes = store.utterance_codes(int(row)).astype(np.int64)  # [frames, Q]
        feats["mean of levels"].append(pooled(normed[levels[None], codes].mean(1)))
        feats["latent"].append(pooled(store.utterance_latent(int(row)).astype(np.float32)))
        feats["level 1"].append(pooled(books[0][codes[:, 0]]))
        feats["level 8"].append(pooled(books[7][codes[:, 7]]))
    return {k: np.stack(v) for k, v in feats.items()}


def probe(store: FeatureStore, train_rows: np.ndarray, eval_rows: np.ndarray) -> dict[str, float]:
    train, test = probe_features(store, train_rows), probe_features(store, eval_rows)
    y = (store.utterances.loc[train_rows, "label"] == "bonafide").to_numpy()
    bona = (store.utterances.loc[eval_rows, "label"] == "bonafide").to_numpy()
    eers = {}
    for name in train:
        scaler = StandardScaler().fit(train[name])
        clf = LogisticRegression(C=1.0, max_iter=5000).fit(scaler.transform(train[name]), y)
        scores = clf.decision_function(scaler.transform(test[name]))
        eers[name] = compute_eer(scores[bona], scores[~bona])[0]
    return eers


# ---------------------------------------------------------------------------------------- main


def partial(path: str) -> str:
    """Frame variation on the committed work units of a store still being extracted, and the
    near-duplicate codewords of its (final) codebooks: what can be measured before it is finished."""
    import zarr

    stds, norms = [], []
    for part in sorted((Path(path) / "parts").glob("u*")):
        group = zarr.open_group(str(part), mode="r")
        records = [r for r in group.attrs.get("records") or [] if r.get("status") == "ok"]
        latent, start = (group["latent"][...].astype(np.float32) if records else None), 0
        for record in records:
            frames = latent[start : start + record["n_frames"]]  # [frames, 128]
            start += record["n_frames"]
            stds.append(float(frames.std(axis=0).mean()))
            norms.append(float(np.linalg.norm(frames.mean(axis=0))))
    books = zarr.open_array(str(Path(path) / "codebooks"), mode="r")[...]
    lines = [f"{len(stds)} utterances of the committed units: std over time {np.mean(stds):.4g}, norm of the mean frame "
             f"{np.mean(norms):.4g}, ratio {np.mean(stds) / (np.mean(norms) / np.sqrt(books.shape[-1])):.4g}"]
    for q, book in enumerate(books):
        nn = nearest_other(book)
        zero = int((np.abs(book).max(axis=1) == 0).sum())
        lines.append(f"level {q + 1}: median nearest-neighbour distance {np.median(nn):.3g}; nearest other < "
                     f"{NEAR_DUP_RELATIVE:g} x median: {int((nn < NEAR_DUP_RELATIVE * np.median(nn)).sum())}; exactly zero: {zero}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="codec_weights.th of a whole-corpus store made by pipeline extract --weights untrained")
    parser.add_argument("--partial", metavar="STORE", help="only: frame variation and codewords of a store still being extracted")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "offla19"))
    parser.add_argument("--work", default="/tmp/codec-work/bench")
    parser.add_argument("--probe-train", type=int, default=500)
    parser.add_argument("--probe-eval", type=int, default=500)
    parser.add_argument("--flip-utts", type=int, default=200)
    parser.add_argument("--flip-kmeans", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--codecs", default="new,old")
    parser.add_argument("--report", default=None)
    args = parser.parse_args(argv)
    if args.partial:
        print(partial(args.partial))
        return 0
    if not args.weights:
        parser.error("--weights is required (or --partial STORE)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not Path(args.root).is_dir():
        parser.error(f"{args.root}: no corpus here (--root)")
    info = read_weights(args.weights)[2]
    if info.trained or "LSUV" not in info.origin:
        parser.error(f"{args.weights}: not this code's untrained (LSUV) codec: {info.label}")
    started, load_start = time.strftime("%Y-%m-%d %H:%M"), loadavg()

    # the utterances measured, chosen on the corpus's protocols, the same for both codecs
    utts = get_dataset("asv19").load(Path(args.root), None).table.reset_index(drop=True)
    train_all, eval_all = np.flatnonzero(utts["split"] == "train"), np.flatnonzero(utts["split"] == "eval")
    rng = np.random.default_rng(args.seed)
    picks = {
        "probe_train": np.sort(rng.choice(train_all, min(args.probe_train, len(train_all)), replace=False)),
        "probe_eval": np.sort(rng.choice(eval_all, min(args.probe_eval, len(eval_all)), replace=False)),
        "flip": eval_all[np.unique(np.linspace(0, len(eval_all) - 1, min(args.flip_utts, len(eval_all))).round().astype(int))],
        "flip_kmeans": train_all[: args.flip_kmeans],
    }
    ids = {k: utts.loc[v, "utt_id"].to_numpy() for k, v in picks.items()}
    table = utts.loc[np.unique(np.concatenate(list(picks.values())))]

    results: dict[str, dict] = {}
    for name in args.codecs.split(","):
        print(f"{name} codec (lsuv={CODECS[name]})", file=sys.stderr)
        t = time.perf_counter()
        weights = Path(args.weights) if name == "new" else old_weights(args.root, work)
        build_s = time.perf_counter() - t
        store, run = subset_store(name, weights, table, work)
        run["codec_build_s"] = build_s
        rows = {k: rows_of(store, v) for k, v in ids.items()}
        r: dict = {"run": run, "label": store.codec.weights_label, "sha256": store.codec.weights_sha256,
                   "origin": store.attrs["weights"]["origin"]}
        results[name] = r
        t = time.perf_counter()
        steps = (("frames", lambda: frame_stats(store, rows["probe_eval"])),
                 ("codewords", lambda: codeword_stats(store, rows["probe_eval"])),
                 ("flips", lambda: flips(store, rows["flip"], work, name)),
                 ("flips_kmeans", lambda: flips(store, rows["flip_kmeans"], work, name)),
                 ("probe", lambda: probe(store, rows["probe_train"], rows["probe_eval"])))
        for step, measure in steps:  # results.json is rewritten after each, so a long run shows what it has
            print(f"{name}: {step}", file=sys.stderr)
            r[step] = measure()
            if step.startswith("flips"):
                r[step], r["label_from_file"] = r[step]
            r["measure_s"], r["load_end"] = time.perf_counter() - t, loadavg()
            (work / "results.json").write_text(json.dumps({"args": vars(args), "machine": machine(), "results": results}, indent=1))

    text = report(args, results, machine(), started, load_start)
    print(text)
    bench_results.record(codec_weights=args.weights, raw=json.loads(json.dumps(results, default=str)))
    if args.report:
        Path(args.report).write_text(text)
    return 0


def report(args: argparse.Namespace, results: dict, mach: dict, started: str, load_start: str) -> str:
    names = list(results)
    head = "| | " + " | ".join(f"{n} ({'LSUV' if CODECS[n] else 'plain random'} encoder), sha256 {results[n]['sha256'][:12]}" for n in names) + " |"
    sep = "|---|" + "---|" * len(names)
    row = lambda label, f: "| " + label + " | " + " | ".join(f(results[n]) for n in names) + " |"  # noqa: E731
    pct = lambda x: f"{100 * x:.3f} %"  # noqa: E731
    lines = [
        "## Untrained codec: plain random encoder (old) vs LSUV (new)",
        "",
        f"Command: `python bench/bench_codec.py --weights {args.weights} --root {args.root} --work {args.work} "
        f"--probe-train {args.probe_train} --probe-eval {args.probe_eval} --flip-utts {args.flip_utts} --flip-kmeans {args.flip_kmeans} "
        f"--seed {args.seed} --codecs {args.codecs}`",
        "",
        f"Machine: {mach['cpus']} CPUs ({mach['model']}), {mach['mem_gib']} GiB RAM, shared with other jobs; no GPU. "
        f"Code: {mach['code']}. Versions: " + ", ".join(f"{k} {v}" for k, v in mach["versions"].items()) + ".",
        f"Started {started}, load average (1/5/15 min) {load_start}; per codec below.",
        "",
        "**Every number is for an UNTRAINED codec** (seeded random EnCodec 24 kHz encoder, k-means codebooks on the corpus's audio): nothing here is a result of EnCodec or of the method.",
        "",
    ]
    for n in names:
        r = results[n]
        made = (f"codec built here in {r['run']['codec_build_s']:.0f} s, " if r["run"]["codec_build_s"] > 1 else "") + (
                f"the measured utterances extracted in {r['run']['extract_s']:.0f} s ({r['run']['ran_units']} units run; load {r['run']['load']})")
        lines.append(f"* {n}: `{r['label']}`; made as: {r['origin']}; {made}; measurements {r['measure_s']:.0f} s, load at the end {r['load_end']}. "
                     f"Weights read back from the store's file are labelled: `{r['label_from_file']}`.")
    lines += ["", head, sep]
    lines.append(row("frames (probe eval utterances): std over time, mean over dims", lambda r: f"{r['frames']['std_over_time']:.4g}"))
    lines.append(row("norm of the mean frame", lambda r: f"{r['frames']['mean_frame_norm']:.4g}"))
    lines.append(row("std over time / (mean-frame norm / sqrt(128))", lambda r: f"{r['frames']['relative']:.4g}"))
    lines.append(row(f"near-duplicate codewords per level (nearest other < {NEAR_DUP_RELATIVE:g} x median), levels 1-8", lambda r: " ".join(map(str, r["codewords"]["near_dup_relative"]))))
    lines.append(row(f"codewords within {NEAR_DUP_ABSOLUTE:g} (absolute) of another, levels 1-8", lambda r: " ".join(map(str, r["codewords"]["near_dup_absolute"]))))
    lines.append(row("median nearest-neighbour distance, levels 1 / 8", lambda r: f"{r['codewords']['median_nn'][0]:.3g} / {r['codewords']['median_nn'][-1]:.3g}"))
    lines.append(row("codewords used on the probe eval utterances, levels 1-8", lambda r: " ".join(map(str, r["codewords"]["used_on_eval"]))))
    for key, label in (("batched_vs_alone", "frames whose codes differ: 8 s batches vs one at a time (1 thread)"),
                       ("threads_2_vs_1", "frames whose codes differ: 2 vs 1 torch threads (one at a time)"),
                       ("store_vs_alone", "frames whose codes differ: the store (as extracted) vs one at a time, 1 thread")):
        for part, where in (("flips", "eval"), ("flips_kmeans", "k-means train utterances")):
            lines.append(row(f"{label}, {where}", lambda r, k=key, p=part: f"{pct(r[p][k]['frame_share'])} ({r[p][k]['frames']} of {r[p][k]['total_frames']}); codes {pct(r[p][k]['code_share'])}"))
    for feat in ("mean of levels", "latent", "level 1", "level 8"):
        lines.append(row(f"probe EER, {feat}", lambda r, f=feat: f"{100 * r['probe'][f]:.1f} %"))
    n_flip = results[names[0]]["flips"]["n_utts"]
    n_km = results[names[0]]["flips_kmeans"]["n_utts"]
    lines += ["", f"Flips: {n_flip} eval utterances evenly spaced over the protocol, and the first {n_km} train utterances (k-means audio). Probe: {args.probe_train} train / {args.probe_eval} eval "
              f"utterances drawn with seed {args.seed}; one seed, 5 eval speakers: about +-4 pp."]
    return "\n".join(lines) + "\n"


# The code whose figures this benchmark measures (bench/figures.py marks them stale when it changes)
MODULES = [
    "extract/codec.py",
    "extract/lsuv.py",
    "extract/run.py",
    "extract/encoder.py",
    "extract/calibration.py",
    "extract/driver.py",
    "extract/codec_stream.py",
]

if __name__ == "__main__":
    sys.exit(bench_results.run(main, "codec", MODULES))
