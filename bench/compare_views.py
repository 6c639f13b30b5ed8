"""Does training with codec views lower the EER on coded eval conditions? A paired comparison over seeds.

    python bench/compare_views.py --root /work/shared/data/offla5 --work /tmp/views_offla5 \\
        [--seeds 0 1 2] [--epochs 5] [--views codecs,telephony] [--weights untrained] [--result views_paired]

On an ASVspoof 5 layout corpus (offla5: its eval holds Opus, MP3 and Codec2 copies of uncoded eval
files, conditions C01-C03): the store is extracted (``--weights``: untrained by default, offline, and
then every figure is labelled UNTRAINED), with the codec views below added to its train split; then
for each seed two runs with every other setting equal, one on the clean train split only and one with
``views=all`` (each utterance drawn clean with probability ``--clean-share``), both dev-selected on the
clean dev split (best.pt); both are evaluated on the clean eval split. Figures: per seed and arm, the
EER on all of eval, on its coded utterances (CODEC != "-") and per condition; the mean over seeds of
the paired difference (views - clean) on the coded utterances, with a 95 % interval of a two-way
cluster bootstrap (speakers and attacks, `classify.bootstrap`: the same draws for both arms and every
seed), and on the uncoded utterances.

The views (train split only): ``codecs``: MP3 or Opus (drawn per utterance) at 16-64 kbit/s, 16 kHz;
``telephony``: the 8 kHz telephone band with AMR-NB at 4.75-12.2 kbit/s (the narrowband stand-in for
Codec2, which FFmpeg does not encode).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from results import Recorder  # noqa: E402

from classify.bootstrap import cluster_counts, percentile_interval, replicate_eers  # noqa: E402
from classify.config import TrainConfig  # noqa: E402
from classify.evaluate import evaluate  # noqa: E402
from classify.metrics import compute_eer  # noqa: E402
from classify.scorefiles import read_scores  # noqa: E402
from classify.train import train  # noqa: E402
from extract.run import ExtractConfig, extract  # noqa: E402
from store.reader import FeatureStore  # noqa: E402

VIEWS = """
[view.codecs]
description = "MP3 or Opus round trip (drawn), 16-64 kbit/s, 16 kHz"
seed = 301
splits = ["train"]
chain = [{augment = "codec", codec = ["mp3", "opus"], bitrate = [16000, 64000], rates = [16000]}]

[view.telephony]
description = "telephone channel: 8 kHz, 300-3400 Hz, AMR-NB 4.75-12.2 kbit/s"
seed = 302
splits = ["train"]
chain = [{augment = "telephony", codec = "amrnb", bitrate = [4750, 12200]}]
"""
MODULES = ["classify/views.py", "classify/train.py", "extract/views.py", "extract/augment/"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def eer(scores: np.ndarray, bona: np.ndarray) -> float:
    return float(compute_eer(scores[bona], scores[~bona])[0]) if bona.any() and (~bona).any() else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/work/shared/data/offla5")
    parser.add_argument("--work", required=True, help="folder for the store and the runs (kept: re-running resumes)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--views", default="codecs,telephony", help="views of this script's file to extract and train on")
    parser.add_argument("--clean-share", type=float, default=0.5)
    parser.add_argument("--weights", default="untrained")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--boot", type=int, default=2000)
    parser.add_argument("--result", default="views_paired")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "views.toml").write_text(VIEWS)
    rec = Recorder(args.result, MODULES)
    started = time.perf_counter()
    out = str(work / "store.zarr")
    extract(ExtractConfig(dataset="asv5", root=args.root, out=out, weights=args.weights, device="cpu",
                          torch_threads=args.threads, views=str(work / "views.toml"), views_only=args.views), log=log)
    rec.figures["extract_seconds"] = time.perf_counter() - started
    store = FeatureStore(out)
    rec.codec_weights(None, store.codec.weights_sha256)
    label = store.codec.weights_label
    table = store.utterances.set_index("utt_id")
    runs: dict[str, dict[int, dict]] = {"clean": {}, "views": {}}
    scores: dict[str, dict[int, np.ndarray]] = {"clean": {}, "views": {}}
    ids = None
    for seed in args.seeds:
        for arm, views in (("clean", ""), ("views", "all")):
            config = TrainConfig(seed=seed, epochs=args.epochs, device="cpu", views=views,
                                 view_clean_share=args.clean_share, patience=0)
            run_dir = work / f"{arm}-s{seed}"
            t0 = time.perf_counter()
            result = train(config, store, run_dir, log=log)
            metrics = evaluate(run_dir / "best.pt", store, "eval", work / f"eval-{arm}-s{seed}", log=log)
            read = read_scores(metrics["scores_file"])
            ids = ids or read.utt_ids
            assert read.utt_ids == ids
            s = np.asarray(read.scores)
            scores[arm][seed] = s
            bona = (table.loc[ids, "label"] == "bonafide").to_numpy()
            coded = (table.loc[ids, "codec"].astype(str) != "-").to_numpy()
            runs[arm][seed] = {"best_dev_eer": result.best_dev_eer, "best_epoch": result.best_epoch,
                               "eval_eer": metrics["eer"], "eval_eer_coded": eer(s[coded], bona[coded]),
                               "eval_eer_uncoded": eer(s[~coded], bona[~coded]),
                               "per_codec": {k: v["eer"] for k, v in metrics["per_codec"].items()},
                               "seconds": time.perf_counter() - t0}
            log(f"{arm} seed {seed}: {runs[arm][seed]}")
    bona = (table.loc[ids, "label"] == "bonafide").to_numpy()
    coded = (table.loc[ids, "codec"].astype(str) != "-").to_numpy()
    speakers = table.loc[ids, "speaker"].astype(str).tolist()
    attacks = table.loc[ids, "system"].astype(str).tolist()
    paired = {}
    for name, subset in (("coded", coded), ("uncoded", ~coded)):
        rng = np.random.default_rng(0)
        counts = cluster_counts([speakers[i] for i in np.flatnonzero(subset)],
                                [attacks[i] for i in np.flatnonzero(subset)], bona[subset], args.boot, rng)
        diffs = np.mean([replicate_eers(scores["views"][s][subset], bona[subset], counts)
                         - replicate_eers(scores["clean"][s][subset], bona[subset], counts) for s in args.seeds], axis=0)
        point = float(np.mean([runs["views"][s][f"eval_eer_{name}"] - runs["clean"][s][f"eval_eer_{name}"]
                               for s in args.seeds]))
        low, high = percentile_interval(diffs)
        paired[name] = {"mean_difference": point, "interval_95": [low, high], "seeds": args.seeds,
                        "utterances": int(subset.sum())}
    rec.figures.update(codec_weights=label, views=args.views, clean_share=args.clean_share, epochs=args.epochs,
                       runs={arm: {str(s): r for s, r in v.items()} for arm, v in runs.items()}, paired=paired,
                       config=dataclasses.asdict(TrainConfig(epochs=args.epochs, views="all")))
    print(f"## Paired: views - clean, eval EER ({label})\n")
    print("| eval subset | utterances | mean EER difference (pp) | 95 % interval (pp) | seeds |")
    print("|---|---|---|---|---|")
    for name, p in paired.items():
        print(f"| {name} | {p['utterances']} | {100 * p['mean_difference']:+.2f} | "
              f"[{100 * p['interval_95'][0]:+.2f}, {100 * p['interval_95'][1]:+.2f}] | {len(args.seeds)} |")
    print("\n## Per seed\n")
    print("| arm | seed | dev EER % | eval EER % | coded % | uncoded % |")
    print("|---|---|---|---|---|---|")
    for arm, v in runs.items():
        for s, r in v.items():
            print(f"| {arm} | {s} | {100 * r['best_dev_eer']:.2f} | {100 * r['eval_eer']:.2f} | "
                  f"{100 * r['eval_eer_coded']:.2f} | {100 * r['eval_eer_uncoded']:.2f} |")
    rec.finish()


if __name__ == "__main__":
    main()
