"""How often the out-of-distribution warning (classify.ood) fires on in-domain data and on the shifts
that can be made here, for one trained model whose training fitted the OOD record.

    python bench/bench_ood.py [--model RUN|BUNDLE] [--train-files 60] [--per-group 30] [--result ood]

Without ``--model``, a small workflow is built in a temporary folder: the generated demo corpus
(``--train-files`` train, ``--per-group`` dev files; `extract.datasets.generate_demo_corpus`),
extracted with the UNTRAINED codec as the tests extract (`tests.scoring.extract_config`), and a
tiny model trained on it (`tests.synthetic.tiny_config`, 4 epochs): its OOD record is fitted on the
train split and thresholded at the dev split's 99th percentile. The groups (``--per-group`` files
each):

* ``in-domain held out``: the dev split of the same generator with another seed (the same attack
  systems and kinds of voices; never seen in training or in fitting the threshold);
* ``demo eval``: the generator's eval split (unseen attacks A05, A06 and other speakers);
* ``offla19 eval bona fide`` / ``offla19 eval spoof`` / ``offla5 eval`` (/work/shared/data): real voices
  and real synthesizers (other voices, other synthesizers, another corpus with coded copies);
* the in-domain held-out files through codecs (`extract.avio.round_trip`: MP3 16 kbit/s, Opus 6 kbit/s,
  AMR-NB 12.2 kbit/s at 8 kHz, G.711 A-law at 8 kHz).

(A first version extracted offla19 and trained on it; on the shared 2-core machine at load 15-18 its
extraction did 96 files in 25 minutes, so the model is trained on the generated corpus instead.)
Every figure names the codec weights (UNTRAINED): the shifts a real model meets differ. The result is
``bench/results/ood.json`` (`bench/results.py`; ``--result NAME`` for another name, ``none`` for none).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import results as bench_results  # noqa: E402  (bench/results.py: the raw result of this run)

MODULES = ["classify/ood.py", "classify/train.py"]

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
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--per-group", type=int, default=30)
    parser.add_argument("--train-files", type=int, default=60)
    bench_results.add_argument(parser, "ood")
    args = parser.parse_args()
    rec = bench_results.Recorder(args.result, MODULES, tee=False, interval_s=2.0)
    scratch = Path(tempfile.mkdtemp(prefix="bench_ood_"))
    try:
        measure_all(args, rec, scratch)
    except BaseException:
        rec.abort()  # a half run is not a result
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rec.finish()  # bench/results/NAME.json (nothing for --result none)


def measure_all(args: argparse.Namespace, rec: bench_results.Recorder, scratch: Path) -> None:
    import soundfile as sf
    import torch

    from classify import ood
    from classify.detector import Detector
    from extract import avio
    from extract.datasets import generate_demo_corpus, get_dataset

    torch.set_num_threads(1)
    started = time.time()
    model = args.model
    if model is None:
        from classify.train import train
        from extract.run import extract
        from store.reader import FeatureStore
        from tests.scoring import extract_config, quiet
        from tests.synthetic import tiny_config

        corpus = generate_demo_corpus(scratch / "corpus", seed=3, n_per_split={
            "train": args.train_files, "dev": args.per_group, "eval": args.per_group})
        store = scratch / "traindev.zarr"
        print(f"extracting {args.train_files} train and {args.per_group} dev files (UNTRAINED codec) ...", flush=True)
        extract(extract_config(corpus, store, splits=["train", "dev"]), log=quiet)
        model = scratch / "run"
        train(tiny_config(epochs=4, lr=3e-2, max_eval_seconds=1.0), FeatureStore(str(store)), model, log=print)
    detector = Detector.load(model, batch_seconds=0)
    record = detector.model_file.state.get("ood")
    if not record:
        raise SystemExit(f"{model}: has no OOD record (train it with this version)")
    held = generate_demo_corpus(scratch / "held", n_per_split={"train": 2, "dev": args.per_group, "eval": args.per_group},
                                seed=11)
    held_files = get_dataset("asv19").load(held, ["dev"]).table["path"].tolist()
    demo_eval = get_dataset("asv19").load(held, ["eval"]).table["path"].tolist()
    table = get_dataset("asv19").load(DATA / "offla19", ["eval"]).table
    groups = {"in-domain held out (the generator's dev split, new seed)": held_files,
              "demo eval (unseen attacks and speakers)": demo_eval,
              "offla19 eval bona fide (real voices)": spread(table.loc[table["label"] == "bonafide", "path"].tolist(),
                                                             args.per_group),
              "offla19 eval spoof (real synthesizers)": spread(table.loc[table["label"] == "spoof", "path"].tolist(),
                                                               args.per_group),
              "offla5 eval (another corpus, coded copies)": spread(offla5_eval(), args.per_group)}
    figures: dict = rec.figures
    figures |= {"codec_weights": detector.codec_label, "threshold": record["threshold"],
                     "quantile": record["quantile"], "n_train": record["n_train"], "n_dev": record["n_dev"],
                     "method": record["method"], "groups": {}}

    def measure(name: str, features_list: list) -> None:
        scores = np.array([ood.check(detector, f)[0]["score"] for f in features_list])
        flagged = float(np.mean(scores > record["threshold"]))
        figures["groups"][name] = {"files": int(scores.size), "flagged_rate": flagged,
                                   "median_distance": float(np.median(scores))}
        print(f"{name}: {scores.size} files, flagged {100 * flagged:.1f} %, median distance {np.median(scores):.2f} "
              f"(threshold {record['threshold']:.2f})", flush=True)

    for name, files in groups.items():
        measure(name, [f for batch in detector.front_end.encode_files(files, 0) for _, f in batch if not f.error])
    for codec, bitrate, rate in ROUND_TRIPS:
        if codec not in avio.available():
            continue
        feats = []
        for path in held_files:
            wav, sr = sf.read(path, dtype="float32")
            feats.append(detector._encode_waveform(avio.round_trip(wav, sr, codec, bitrate, rate), sr)[0])
        measure(f"held out through {codec} ({bitrate or 64000} bit/s at {rate} Hz)", feats)
    figures["seconds"] = round(time.time() - started, 1)
    rec.codec_weights(None, sha256=detector.codec.weights_sha256)


if __name__ == "__main__":
    main()
