"""Cross-corpus benchmark: train on offla19, test on offla19's eval voices in the 2021 LA, 2021 DF and
In-the-Wild layouts, as one train x test matrix (`pipeline matrix`).

    python bench/bench_cross.py --work /tmp/crossbench [--source /work/shared/data/offla19] \
        [--train 240] [--dev 120] [--eval 160] [--variants qaf-static] [--seeds 0,1] [--epochs 4] \
        [--codec-set kmeans_frames=4096] [--bootstrap 200] [--result cross]

Steps (each skipped when ``WORK/steps.json`` says it finished, so an interrupted run resumes; the
extraction and training commands resume themselves too):

1. ``train``: a manifest (absolute paths) of a class-balanced random draw (``--seed-data``) of
   ``--train`` offla19 train and ``--dev`` dev utterances -> ``pipeline extract --dataset manifest
   --weights untrained`` into ``WORK/train.zarr`` (the UNTRAINED codec: seeded LSUV random encoder,
   k-means codebooks on this store's audio; ``--codec-set`` are extra ``--set`` of that extraction).
2. ``layout``: ``--eval`` offla19 eval trials (half bona fide, half spoof with every attack in
   proportion, shuffled) laid out by `bench/layout_cross.py` in the 2021 LA, 2021 DF and In-the-Wild
   layouts (real codec round trips through `extract.avio`; LA C3/PSTN not simulated, GSM replaced by
   AMR-NB), the same trials in each.
3. ``clean``: the same trials, untouched, as a manifest with split ``eval`` (the in-domain column).
4. one ``pipeline extract`` per test corpus with ``--weights WORK/train.zarr/codec_weights.th``.
5. ``pipeline train`` for each variant x seed (default head), ``--epochs``.
6. ``pipeline matrix --runs ... --features clean la df itw``.

The result (``bench/results/NAME.json``) holds the matrix (mean EER per setting x test corpus, the
spread over seeds, the intervals, pooled and average columns), the per-condition EERs of the LA and
DF layouts (eval phase, mean over seeds), and each step's wall time and size. Every EER is for an
UNTRAINED codec: it says nothing about EnCodec or about the method.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import layout_cross  # noqa: E402  (bench/layout_cross.py)
import results as bench_results  # noqa: E402

PROTOCOLS = "LA/ASVspoof2019_LA_cm_protocols"
AUDIO = {"train": "LA/ASVspoof2019_LA_train/flac", "dev": "LA/ASVspoof2019_LA_dev/flac",
         "eval": "LA/ASVspoof2019_LA_eval/flac"}
TESTS = (("clean", "manifest", "eval_manifest.csv"), ("la", "asv21la", "layout/asv21la"),
         ("df", "asv21df", "layout/asv21df"), ("itw", "itw", "layout/itw"))
"""test store name, dataset, root under WORK."""
COLUMN_NAMES = {"manifest": "offla19 eval, clean (in-domain)", "asv21la": "2021 LA layout",
                "asv21df": "2021 DF layout", "itw": "In-the-Wild layout", "pooled": "pooled", "average": "average"}


def protocol(source: Path, split: str) -> list[dict]:
    name = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}[split]
    rows = []
    for line in (source / PROTOCOLS / f"ASVspoof2019.LA.cm.{name}.txt").read_text().splitlines():
        speaker, utt, _, system, key = line.split()
        rows.append({"path": str((source / AUDIO[split] / f"{utt}.flac").resolve()), "label": key, "utt_id": utt,
                     "speaker": speaker, "system": system, "split": split})
    return rows


def balanced(rows: list[dict], n: int, rng: random.Random) -> list[dict]:
    """n rows, half bona fide, half spoof drawn at random (spoof stratified by attack, in proportion)."""
    bona = [r for r in rows if r["label"] == "bonafide"]
    spoof = [r for r in rows if r["label"] == "spoof"]
    n_spoof = n - n // 2
    picked = rng.sample(bona, min(n // 2, len(bona)))
    attacks = sorted({r["system"] for r in spoof})
    for k, attack in enumerate(attacks):  # largest-remainder share per attack
        mine = [r for r in spoof if r["system"] == attack]
        share = round(n_spoof * sum(len([r for r in spoof if r["system"] == a]) for a in attacks[:k + 1]) / len(spoof)) \
            - round(n_spoof * sum(len([r for r in spoof if r["system"] == a]) for a in attacks[:k]) / len(spoof))
        picked += rng.sample(mine, min(share, len(mine)))
    rng.shuffle(picked)
    return picked


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


class Steps:
    """WORK/steps.json: each finished step's wall time and facts; a finished step is not run again."""

    def __init__(self, work: Path):
        self.path = work / "steps.json"
        self.done: dict = json.loads(self.path.read_text()) if self.path.exists() else {}

    def run(self, name: str, body) -> dict:
        if name in self.done:
            print(f"[{name}] done before ({self.done[name]['seconds']} s), skipped", flush=True)
            return self.done[name]
        print(f"[{name}] ...", flush=True)
        start = time.perf_counter()
        facts = body() or {}
        self.done[name] = {"seconds": round(time.perf_counter() - start, 1), **facts}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.done, indent=1) + "\n")
        os.replace(tmp, self.path)
        print(f"[{name}] {self.done[name]['seconds']} s", flush=True)
        return self.done[name]


def pipeline(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "pipeline", *args]
    print("  $ " + " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, env=env, cwd=REPO)


def write_manifest(rows: list[dict], path: Path) -> None:
    pd.DataFrame(rows, columns=["path", "label", "utt_id", "speaker", "system", "split"]).to_csv(path, index=False)


def audio_seconds(rows: list[dict]) -> float:
    import soundfile as sf  # noqa: PLC0415

    return round(sum(sf.info(r["path"]).duration for r in rows), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="stores, layouts, runs (resumed when there)")
    parser.add_argument("--source", type=Path, default=Path("/work/shared/data/offla19"))
    parser.add_argument("--train", type=int, default=240)
    parser.add_argument("--dev", type=int, default=120)
    parser.add_argument("--eval", type=int, default=160)
    parser.add_argument("--variants", default="qaf-static", help="comma-separated training variants (default head)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed-data", type=int, default=0, help="seed of the utterance draws")
    parser.add_argument("--codec-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra --set of the training store's extraction (repeatable)")
    parser.add_argument("--workers", default="0", help="--workers of every extraction")
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    steps = Steps(work)
    rng = random.Random(args.seed_data)
    train_rows = balanced(protocol(args.source, "train"), args.train, rng) + balanced(protocol(args.source, "dev"),
                                                                                      args.dev, rng)
    eval_rows = balanced(protocol(args.source, "eval"), args.eval, rng)
    train_store = work / "train.zarr"
    weights = train_store / "codec_weights.th"

    def build_train() -> dict:
        write_manifest(train_rows, work / "train_manifest.csv")
        pipeline("extract", "--dataset", "manifest", "--root", str(work / "train_manifest.csv"), "--out", str(train_store),
                 "--weights", "untrained", "--workers", args.workers, *[a for s in args.codec_set for a in ("--set", s)])
        return {"utterances": len(train_rows), "audio_s": audio_seconds(train_rows), "bytes": size(train_store)}

    steps.run("train_store", build_train)

    def layout() -> dict:
        by_utt = {t["utt"]: t for t in layout_cross.eval_trials(args.source, None)}
        trials = [by_utt[r["utt_id"]] for r in eval_rows]
        audio = []
        for t in trials:
            wav, rate = layout_cross.sf.read(t["path"], dtype="float32")
            if rate != layout_cross.RATE:
                raise SystemExit(f"{t['path']}: {rate} Hz, expected {layout_cross.RATE}")
            audio.append(wav)
        facts = {"trials": len(trials), "audio_s": round(sum(len(a) for a in audio) / layout_cross.RATE, 1)}
        out = work / "layout"
        for name, write in (("asv21la", lambda o: layout_cross.write_2021(o, "LA", trials, audio, layout_cross.LA_CHANNELS,
                                                                          layout_cross.la_line)),
                            ("asv21df", lambda o: layout_cross.write_2021(o, "DF", trials, audio, layout_cross.DF_CHANNELS,
                                                                          layout_cross.df_line)),
                            ("itw", lambda o: layout_cross.write_itw(o, trials, audio))):
            start = time.perf_counter()
            write(out / name)
            facts[name] = {"seconds": round(time.perf_counter() - start, 1), "bytes": size(out / name)}
        write_manifest(eval_rows, work / "eval_manifest.csv")
        return facts

    steps.run("layout", layout)
    stores = []
    for name, dataset, root in TESTS:
        store = work / f"{name}.zarr"
        stores.append(store)

        def extract(dataset=dataset, root=root, store=store) -> dict:
            pipeline("extract", "--dataset", dataset, "--root", str(work / root), "--out", str(store), "--weights", str(weights),
                     "--workers", args.workers)
            return {"dataset": dataset, "bytes": size(store)}

        steps.run(f"extract_{name}", extract)
    runs = []
    for variant in args.variants.split(","):
        for seed in args.seeds.split(","):
            run = work / "runs" / f"{variant}_s{seed}"
            runs.append(run)
            steps.run(f"train_{variant}_s{seed}", lambda variant=variant, seed=seed, run=run: pipeline(
                "train", "--features", str(train_store), "--out", str(run), "--variant", variant, "--seed", seed,
                "--epochs", str(args.epochs)))
    matrix = work / "matrix"
    steps.run(f"matrix_{args.variants}_s{args.seeds}", lambda: pipeline("matrix", "--runs", *map(str, runs), "--features", *map(str, stores), "--out",
                                         str(matrix), "--bootstrap", str(args.bootstrap)))
    figures = collect(matrix, steps.done, args)
    figures["clean_eval_phase"] = clean_on_eval_phase(matrix, eval_rows)
    print((matrix / "matrix.md").read_text())
    bench_results.record(codec_weights=weights, **figures)
    return 0


def clean_on_eval_phase(matrix: Path, eval_rows: list[dict]) -> dict:
    """The clean store's EER on the trials of the 2021 layouts' eval phase only (the matrix's 2021
    columns score that phase, the clean column every trial): per setting (variant), mean over seeds, %."""
    from classify.metrics import compute_eer  # noqa: PLC0415
    from classify.scorefiles import read_scores  # noqa: PLC0415

    phase = layout_cross.phases([{"key": r["label"]} for r in eval_rows])
    keep = {r["utt_id"]: r["label"] == "bonafide" for r, p in zip(eval_rows, phase, strict=True) if p == "eval"}
    per_variant: dict[str, list[float]] = {}
    for run in sorted((matrix / "cells").iterdir()):
        read = read_scores(json.loads((run / "manifest" / "metrics.json").read_text())["scores_file"])
        scores = dict(zip(read.utt_ids, map(float, read.scores), strict=True))
        bona = [scores[u] for u, b in keep.items() if b]
        spoof = [scores[u] for u, b in keep.items() if not b]
        per_variant.setdefault(run.name.rsplit("_s", 1)[0], []).append(100 * compute_eer(bona, spoof)[0])
    return {"trials": len(keep), "bonafide": sum(keep.values()),
            **{v: f"{sum(e) / len(e):.2f}" for v, e in per_variant.items()}}


def pct(x) -> str:
    return "-" if x is None or pd.isna(x) else f"{100 * float(x):.1f}"


def collect(matrix: Path, done: dict, args: argparse.Namespace) -> dict:
    """The figures: the matrix (from matrix.md's table and matrix.parquet), per-condition EERs, steps."""
    md = (matrix / "matrix.md").read_text()
    table = bench_results.markdown_tables(md)
    main_table = next(iter(table.values()))
    columns = [COLUMN_NAMES.get(c, c) for c in main_table["columns"]]
    rows = pd.read_parquet(matrix / "matrix.parquet")
    figures: dict = {"matrix": bench_results.table(columns, main_table["rows"]), "matrix_md": md}
    short = {"manifest": "clean", "asv21la": "la", "asv21df": "df", "itw": "itw", "pooled": "pooled", "average": "average"}
    figures["eer"] = {}  # variant -> test -> mean EER % (the matrix cell's first number)
    for row in main_table["rows"]:
        variant = row[0].split("/", 1)[0]
        figures["eer"][variant] = {short.get(c, c): cell.split(" ", 1)[0]
                                   for c, cell in zip(main_table["columns"][1:], row[1:], strict=True)}
    ok = rows[rows["empty"].fillna("") == ""]
    pooled = ok[(ok["condition"] == "pooled") & (ok["phase"].isin(["eval", "all"]))]
    means = pooled.groupby(["setting", "corpus"])["eer"].agg(["mean", "std", "count"]).reset_index()
    figures["cells"] = {f"{r.setting} | {r.corpus}": {"mean": r.mean, "sd": r.std, "seeds": int(r.count)}
                        for r in means.itertuples()}
    for corpus, title in (("asv21la", "LA condition (codec) EER %"), ("asv21df", "DF condition (compression) EER %")):
        part = ok[(ok["corpus"] == corpus) & (ok["phase"] == "eval") & (ok["condition"] != "pooled")]
        if part.empty:
            continue
        grouped = part.groupby(["setting", "condition"], sort=False).agg(eer=("eer", "mean"), sd=("eer", "std"),
                                                                         n_b=("n_bonafide", "first"), n_s=("n_spoof", "first"))
        present = part.groupby("condition", sort=False)[["n_bonafide", "n_spoof"]].first().sum(axis=1)
        conditions = [c for c in dict.fromkeys(part["condition"]) if present[c] > 0]  # LA C3 (PSTN): not simulated
        body = []
        for setting in dict.fromkeys(part["setting"]):
            body.append([setting, *[f"{pct(grouped.loc[(setting, c), 'eer'])} ± {pct(grouped.loc[(setting, c), 'sd'])}"
                                    for c in conditions]])
        sizes = ["trials (bona fide / spoof)",
                 *[f"{int(grouped.loc[(next(iter(part['setting'])), c), 'n_b'])} / "
                   f"{int(grouped.loc[(next(iter(part['setting'])), c), 'n_s'])}" for c in conditions]]
        figures[f"conditions_{corpus}"] = bench_results.table([title, *conditions], [*body, sizes])
    layout = done.get("layout", {})
    steps_rows = []
    for name, facts in done.items():
        what = {"train_store": f"{facts.get('utterances')} utterances, {facts.get('audio_s')} audio s",
                "layout": f"{facts.get('trials')} trials x 3 layouts, {facts.get('audio_s')} audio s each"}.get(name, "")
        if name.startswith("extract_"):
            what = f"--dataset {facts.get('dataset')}"
        nbytes = facts.get("bytes") or sum(facts.get(k, {}).get("bytes", 0) for k in ("asv21la", "asv21df", "itw"))
        steps_rows.append([name, what, f"{facts['seconds']:,.0f}", f"{nbytes / 1e6:,.1f}" if nbytes else "-"])
    figures["steps"] = bench_results.table(["step", "what", "wall s", "MB"], steps_rows)
    figures["steps_raw"] = done
    figures["total_wall_min"] = round(sum(f["seconds"] for f in done.values()) / 60, 1)
    figures["eval_trials"] = layout.get("trials")
    figures["train_utterances"] = done.get("train_store", {}).get("utterances")
    figures["settings"] = {"train": args.train, "dev": args.dev, "eval": args.eval, "variants": args.variants,
                           "seeds": args.seeds, "epochs": args.epochs, "codec_set": args.codec_set,
                           "seed_data": args.seed_data, "bootstrap": args.bootstrap}
    return figures


MODULES = [
    "bench/layout_cross.py",
    "extract/avio.py",
    "extract/codec.py",
    "extract/datasets/asv21la.py",
    "extract/datasets/asv21df.py",
    "extract/datasets/itw.py",
    "extract/datasets/manifest.py",
    "classify/train.py",
    "classify/evaluate.py",
    "classify/tables.py",
    "classify/matrix.py",
]

if __name__ == "__main__":
    sys.exit(bench_results.run(main, "cross", MODULES))
