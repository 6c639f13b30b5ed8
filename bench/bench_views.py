"""What an augmented view costs to extract: audio seconds per second and bytes per audio second.

    python bench/bench_views.py [--train 12] [--dev 6] [--eval 6] [--views configs/views/train.toml ...]
                                [--threads 2] [--result views]

A generated demo corpus (`extract.datasets.demo`, 16 kHz) is extracted into a store with the
UNTRAINED codec (offline; the encoder's cost does not depend on its weights), timed as the clean
baseline; then each view of each views file is added to the finished store on its own
(``extract(..., views=FILE, views_only=NAME)``: the same driver, one codec pass for codes, latent and
energy), timed from its start to its finish. Per view: the audio seconds of its splits, the wall
seconds, audio s per s, the bytes it adds on disk (``views/NAME``) per audio second, and what the
printed estimate (`extract.augment.estimate`) predicted. Writes ``bench/results/RESULT.json`` (the
HELPERS.md stamp, ``figures``: ``clean`` and ``views`` {file: {view: {...}}}) and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from results import Recorder  # noqa: E402

from extract.augment import estimate, load_views  # noqa: E402
from extract.datasets import generate_demo_corpus  # noqa: E402
from extract.run import ExtractConfig, extract  # noqa: E402
from store.format import StoreFiles  # noqa: E402
from store.reader import FeatureStore  # noqa: E402
from store.views import view_group  # noqa: E402

MODULES = ["extract/views.py", "extract/driver.py", "extract/codec_stream.py", "extract/augment/", "store/views.py",
           "store/writer.py"]


def quiet(_: str) -> None:
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=12)
    parser.add_argument("--dev", type=int, default=6)
    parser.add_argument("--eval", type=int, default=6)
    parser.add_argument("--views", nargs="+", default=["configs/views/train.toml", "configs/views/robustness.toml"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the encoder")
    parser.add_argument("--work", default=None, help="folder for the corpus and store (default: a temporary one)")
    parser.add_argument("--result", default="views", help="bench/results/RESULT.json; none: write nothing")
    args = parser.parse_args()
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        rec = Recorder(args.result, MODULES)
        root = generate_demo_corpus(Path(work) / "demo", n_per_split={"train": args.train, "dev": args.dev,
                                                                       "eval": args.eval}, seed=5)
        out = str(Path(work) / "store.zarr")
        settings = dict(dataset="asv19", root=str(root), out=out, weights="untrained", device="cpu",
                        torch_threads=args.threads, kmeans_frames=4096, kmeans_iters=10)
        started = time.perf_counter()
        extract(ExtractConfig(**settings), log=quiet)
        clean_s = time.perf_counter() - started
        store = FeatureStore(out)
        rec.codec_weights(None, store.codec.weights_sha256)
        table = store.utterances[store.utterances["status"] == "ok"]
        seconds = table.groupby("split")["duration"].sum().to_dict()
        counts = table.groupby("split")["duration"].count().to_dict()
        files = StoreFiles(out)
        clean_bytes = sum(files.size(n) for n in ("codes", "latent", "energy"))
        audio = float(table["duration"].sum())
        rec.figures["clean"] = {"audio_seconds": audio, "wall_seconds": clean_s, "audio_s_per_s": audio / clean_s,
                                "bytes_per_audio_second": clean_bytes / audio,
                                "note": "includes the untrained codec's LSUV and k-means (once per store)"}
        print(f"corpus: demo, {len(table)} utterances, {audio:.1f} audio s ({', '.join(f'{k} {v:.1f}' for k, v in seconds.items())}); "
              f"codec: {store.codec.weights_label}; machine load {rec.stamp['load_before']}")
        print(f"clean store (codes+latent+energy, with LSUV and k-means): {audio / clean_s:.2f} audio s per s, "
              f"{clean_bytes / audio:,.0f} B per audio s\n")
        print("## Cost per view\n")
        print("| views file | view | chain | audio s | wall s | audio s per s | B per audio s | estimate: wall s, B per audio s |")
        print("|---|---|---|---|---|---|---|---|")
        rec.figures["views"] = {}
        for path in args.views:
            views = load_views(REPO / path)
            rec.figures["views"][path] = {}
            for name, view in views.items():
                cost = estimate({name: view}, seconds, utterances=counts)[0]
                started = time.perf_counter()
                extract(ExtractConfig(**settings, views=str(REPO / path), views_only=name), log=quiet)
                wall = time.perf_counter() - started
                size = files.size(view_group(name))
                row = {"chain": " -> ".join(s.name for s in view.chain), "audio_seconds": cost.audio_seconds,
                       "wall_seconds": wall, "audio_s_per_s": cost.audio_seconds / wall,
                       "bytes": size, "bytes_per_audio_second": size / cost.audio_seconds,
                       "estimate_wall_seconds": cost.seconds,
                       "estimate_bytes_per_audio_second": cost.total_bytes / cost.audio_seconds}
                rec.figures["views"][path][name] = row
                print(f"| {Path(path).name} | {name} | {row['chain']} | {row['audio_seconds']:.1f} | {wall:.1f} | "
                      f"{row['audio_s_per_s']:.2f} | {row['bytes_per_audio_second']:,.0f} | "
                      f"{cost.seconds:.1f}, {row['estimate_bytes_per_audio_second']:,.0f} |")
        rec.finish()  # writes nothing when --result none


if __name__ == "__main__":
    main()
