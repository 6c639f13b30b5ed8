"""How often the out-of-distribution warning (classify.ood) fires on in-domain data and on the shifts
that can be made here, for one trained run.

    python bench/bench_ood.py [--work DIR] [--per-group 150] [--epochs 6] [--json bench/results/ood.json]

1. Extract offla19 (/work/shared/data/offla19, ASVspoof 2019 LA layout) train and dev with the
   UNTRAINED codec (no weights are downloadable here), and train a small model (the tests' tiny
   config, ``--epochs``): the OOD record is fitted at the end of training (train split: mean and
   covariance; dev: the 99th-percentile threshold).
2. The rate of flagged recordings, per group (at most ``--per-group`` files each, spread over the list):
   ``dev`` (in-domain, where the threshold was set: about 1 % by construction), ``train`` (in-domain,
   where the mean and covariance were fitted), ``offla19 eval bona fide`` (other speakers and
   languages), ``offla19 eval spoof`` (other voices and synthesizers), ``offla5 eval`` (another
   corpus: other attacks, and codec-coded copies), dev files through codecs
   (`extract.avio.round_trip`: MP3 16 kbit/s, Opus 6 kbit/s, AMR-NB 12.2 kbit/s, G.711 A-law), and
   the synthetic demo corpus (`extract.datasets.generate_demo_corpus`).

Every figure names the codec weights (UNTRAINED): the shifts a real model meets differ.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import stamp  # noqa: E402

DATA = Path("/work/shared/data")
ROUND_TRIPS = (("mp3", 16_000, 16_000), ("opus", 6_000, 16_000), ("amrnb", 12_200, 8_000), ("alaw", None, 8_000))


def spread(items: list, n: int) -> list:
    if len(items) <= n:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def offla5_eval() -> list[str]:
    rows = [line.split() for line in (DATA / "offla5" / "ASVspoof5.eval.track_1.tsv").read_text().splitlines() if line]
    return [str(DATA / "offla5" / "flac_E_eval" / f"{r[1]}.flac") for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_ood"))
    parser.add_argument("--per-group", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "ood.json")
    args = parser.parse_args()
    import soundfile as sf
    import torch

    from classify import ood
    from classify.detector import Detector
    from classify.train import train
    from extract import avio
    from extract.datasets import generate_demo_corpus, get_dataset
    from extract.run import ExtractConfig, extract
    from store.reader import FeatureStore
    from tests.synthetic import tiny_config

    torch.set_num_threads(2)
    load_before, started = stamp.load(), time.time()
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.work / "offla19.zarr"
    extract(ExtractConfig(dataset="asv19", root=str(DATA / "offla19"), out=str(store), splits=["train", "dev"],
                          weights="untrained", kmeans_frames=4096, kmeans_iters=10, device="cpu", batch_seconds=0,
                          torch_threads=2, energy=False), log=lambda m: print(m, flush=True))
    run = args.work / "run"
    if not (run / "best.pt").is_file() or "ood" not in torch.load(run / "best.pt", weights_only=True):
        train(tiny_config(epochs=args.epochs, lr=3e-3, max_eval_seconds=4.0), FeatureStore(str(store)), run,
              log=print, resume=False)
    detector = Detector.load(run, batch_seconds=0)
    record = detector.model_file.state["ood"]
    table = get_dataset("asv19").load(DATA / "offla19", ["train", "dev", "eval"]).table
    paths = {split: table.loc[table["split"] == split, "path"].tolist() for split in ("train", "dev")}
    ev = table[table["split"] == "eval"]
    demo = generate_demo_corpus(args.work / "demo", n_per_split={"train": 0, "dev": 0, "eval": 40}, seed=5)
    groups = {"dev (in-domain; threshold fitted here)": spread(paths["dev"], args.per_group),
              "train (in-domain; mean and covariance fitted here)": spread(paths["train"], args.per_group),
              "offla19 eval bona fide (other speakers, languages)": spread(ev.loc[ev["label"] == "bonafide", "path"].tolist(), args.per_group),
              "offla19 eval spoof (other voices and synthesizers)": spread(ev.loc[ev["label"] == "spoof", "path"].tolist(), args.per_group),
              "offla5 eval (another corpus, coded copies)": spread(offla5_eval(), args.per_group),
              "demo corpus (synthetic signals)": sorted(str(p) for p in Path(demo).rglob("*.flac"))}
    figures: dict = {"codec_weights": detector.codec_label, "threshold": record["threshold"],
                     "quantile": record["quantile"], "method": record["method"], "groups": {}}

    def measure(name: str, features_list: list) -> None:
        scores = [ood.check(detector, f)[0]["score"] for f in features_list]
        flagged = float(np.mean(np.array(scores) > record["threshold"]))
        figures["groups"][name] = {"files": len(scores), "flagged_rate": flagged,
                                   "median_distance": float(np.median(scores))}
        print(f"{name}: {len(scores)} files, flagged {100 * flagged:.1f} %, median distance {np.median(scores):.2f} "
              f"(threshold {record['threshold']:.2f})", flush=True)

    for name, files in groups.items():
        measure(name, [f for batch in detector.front_end.encode_files(files, 0) for _, f in batch if not f.error])
    for codec, bitrate, rate in ROUND_TRIPS:
        if codec not in avio.available():
            continue
        feats = []
        for path in spread(paths["dev"], args.per_group // 2):
            wav, sr = sf.read(path, dtype="float32")
            feats.append(detector._encode_waveform(avio.round_trip(wav, sr, codec, bitrate, rate), sr)[0])
        measure(f"dev through {codec} ({bitrate or 'fixed'} bit/s at {rate} Hz)", feats)
    figures["seconds"] = time.time() - started
    result = stamp.result("ood", sys.argv, load_before, ["classify/ood.py", "classify/train.py"], figures,
                          codec_sha256=detector.codec.weights_sha256)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
