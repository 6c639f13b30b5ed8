"""SCALE.md's plan, computed: what ASVspoof 2019 LA and ASVspoof 5 cost end to end (bytes of each stream,
CPU core-hours, money) from measured per-audio-second figures and stated assumptions.

    python bench/scale_plan.py --store offla19.zarr [--codec-speed extract_offla19] \\
        [--ssl-speed ssl_stream_offla19_float16] [--result scale_plan]

Measured inputs:

* the bytes on disk per audio second of each stream of ``--store`` (`store.inspect.inspect_store`):
  the codec streams (codes, latent, energy) and every SSL stream it holds, each with the storage its
  source records (BENCHMARKS 18's store holds float16 and re-coded ones);
* the extraction speed of the whole command (audio s per wall s, on the machine's CPUs) from two raw
  results: ``--codec-speed`` (a store made from audio) and ``--ssl-speed`` (the SSL stream added to a
  finished store); a CPU core-hour per audio hour is then cpus / speed / 3600 x 3600.

Assumed (:data:`CORPORA`, :data:`PRICES`; written into the result, not measured): the corpora's hours
per split and the prices. Products, one place each (:func:`plan`): per stream the bytes per audio hour
and per corpus; core-hours of extraction; storage per month; the requests of extraction and of
training (:func:`requests`, from the store's chunk and shard sizes, `store/format.py`). Stale inputs
make a stale plan: the result declares the modules of its inputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import results as bench_results  # bench/results.py: the one stamp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CORPORA = {
    "LA19": {"title": "ASVspoof 2019 LA", "hours": {"train": 24.0, "dev": 23.5, "eval": 67.0},
             "files": {"train": 25_380, "dev": 24_844, "eval": 71_237},
             "why": "the protocols' line counts; train about 24 h (issue 21), so 3.4 s a file, taken for dev and eval"},
    "ASV5": {"title": "ASVspoof 5", "hours": {"train": 304.0, "dev": 235.0, "eval": 1_135.0},
             "files": {"train": 182_357, "dev": 140_950, "eval": 680_774},
             "why": "the protocols' line counts at an assumed 6 s a file (the mean duration is not known here)"},
}
"""Hours and files per split (assumed, with where they come from)."""
PRICES = {"storage_gb_month": 0.023, "put_list_per_1000": 0.005, "get_per_1000": 0.0004, "core_hour": 0.04,
          "gpu_hour": 3.0, "why": "public list prices of a large cloud, us-east, late 2026; check yours"}
"""Dollars (assumed)."""
CODEC_STREAMS = ("codes", "latent", "energy")
EPOCHS = 30
"""The paper grid's most epochs per trial (early stopping ends most sooner)."""
CROP_CHUNKS = 1.5
"""Chunks a training crop overlaps, on average (a 4 s crop in chunks of 3.4 to 6.8 s of SSL frames)."""
MODULES = ["store/format.py", "store/sslstorage.py", "store/writer.py", "extract/ssl_stream.py", "extract/codec_stream.py",
           "extract/driver.py"]


def gb(x: float) -> float:
    return round(x / 1e9, 3)


def human(n_bytes: float) -> str:
    """Decimal MB, GB or TB, as the plan's tables print them."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= size:
            value = n_bytes / size
            return f"{value:,.2f} {unit}" if value < 10 else f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.1f} {unit}"
    return f"{n_bytes:,.0f} B"


def month(n_bytes: float) -> float:
    """Dollars a month to keep ``n_bytes`` on the object store."""
    return n_bytes / 1e9 * PRICES["storage_gb_month"]


def money(x: float) -> str:
    return f"${x:,.2f}" if x < 10 else f"${x:,.0f}"


def streams(store_url: str) -> dict[str, dict]:
    """{stream: {"bytes_per_audio_s", "storage" (SSL streams), "chunk_bytes", "shard_bytes"}} of a finished store."""
    from store.inspect import inspect_store
    from store.reader import FeatureStore
    from store.sslstorage import SSLStorage

    info = inspect_store(store_url)
    store = FeatureStore(store_url)
    out = {}
    for name, stream in info["streams"].items():
        spec = store.streams[name]
        source = spec.source or {}
        out[name] = {"bytes_per_audio_s": float(stream["bytes_per_audio_second"]), "frame_rate": float(spec.frame_rate),
                     "storage": SSLStorage.from_source(source).name if source.get("kind") == "ssl" else None,
                     "frame_bytes": spec.frame_bytes, "chunk_frames": spec.chunk_frames()}
    return out


def requests(ssl: dict, hours: dict, files: dict) -> dict:
    """Requests of one SSL stream on an object store (the layout of `store/format.py`): extraction PUTs
    each byte twice (the work unit's part, then the finished shard), so parts + shards; training reads
    :data:`CROP_CHUNKS` chunk GETs per train utterance and epoch when the stream is read lazily, and
    one GET per chunk of the train split, once per process, when it is held in RAM."""
    from store.format import SHARD_CHUNKS

    chunk_s = ssl["chunk_frames"] / ssl["frame_rate"]  # audio seconds per chunk
    train_dev_s = (hours["train"] + hours["dev"]) * 3600
    shards = train_dev_s / (chunk_s * SHARD_CHUNKS)
    units = (files["train"] + files["dev"]) / 32  # 32 utterances a CPU work unit
    gets_epoch = files["train"] * CROP_CHUNKS
    return {"chunk_audio_s": round(chunk_s, 2), "shard_puts": round(shards), "unit_parts": round(units),
            "gets_per_epoch": round(gets_epoch), "gets_in_ram_train": round(hours["train"] * 3600 / chunk_s),
            "bytes_per_epoch_lazy": gets_epoch * ssl["chunk_frames"] * ssl["frame_bytes"],
            "gb_per_epoch_lazy": gb(gets_epoch * ssl["chunk_frames"] * ssl["frame_bytes"]),
            "get_dollars_per_epoch": round(gets_epoch / 1000 * PRICES["get_per_1000"], 4)}


def plan(store: dict[str, dict], codec_speed: float, ssl_speed: float, cpus: int) -> dict:
    """Every product of the plan from the measured inputs and the assumptions."""
    codec_bps = sum(store[s]["bytes_per_audio_s"] for s in CODEC_STREAMS if s in store)
    from extract.ssl_stream import DEFAULT_STORAGE

    ssl = {v["storage"]: {**v, "name": k} for k, v in store.items() if v["storage"]}
    default = DEFAULT_STORAGE if DEFAULT_STORAGE in ssl else "float16"  # the store may lack the default's stream
    if "float16" not in ssl:
        raise SystemExit(f"the store has no float16 SSL stream (it has {sorted(ssl) or 'none'}): the plan needs one")
    rows = [("codec streams (codes, latent, energy)", codec_bps), ("codec codes alone", store["codes"]["bytes_per_audio_s"])]
    rows += [(f"SSL {name}" + (" (default)" if name == DEFAULT_STORAGE else ""), v["bytes_per_audio_s"]) for name, v in ssl.items()]
    hours = {c: {**v["hours"], "all": sum(v["hours"].values()), "train_dev": v["hours"]["train"] + v["hours"]["dev"]}
             for c, v in CORPORA.items()}
    bytes_table = bench_results.table(
        ["stream", "bytes per audio s", "per audio hour", "LA19 train", "LA19 all", "ASVspoof 5 train", "ASVspoof 5 all"],
        [[label, f"{bps:,.0f}", human(bps * 3600), human(bps * 3600 * hours["LA19"]["train"]),
          human(bps * 3600 * hours["LA19"]["all"]), human(bps * 3600 * hours["ASV5"]["train"]),
          human(bps * 3600 * hours["ASV5"]["all"])] for label, bps in rows])
    core_h = {"codec": cpus / codec_speed, "ssl": cpus / ssl_speed}  # core-hours per audio hour
    figures: dict = {"codec_core_h_per_audio_h": round(core_h["codec"], 4), "ssl_core_h_per_audio_h": round(core_h["ssl"], 4),
                     "codec_speed": codec_speed, "ssl_speed": ssl_speed, "cpus": cpus, "corpora": {}}
    cost_rows, compute_rows = [], []
    ssl_default = ssl[default]
    for c, h in hours.items():
        f16, small = ssl["float16"]["bytes_per_audio_s"] * 3600, ssl_default["bytes_per_audio_s"] * 3600
        req = requests(ssl_default, CORPORA[c]["hours"], CORPORA[c]["files"])
        put_cost = (req["shard_puts"] + req["unit_parts"]) / 1000 * PRICES["put_list_per_1000"]
        get_cost = req["gets_per_epoch"] * EPOCHS / 1000 * PRICES["get_per_1000"]
        cpu_h = core_h["codec"] * h["all"] + core_h["ssl"] * h["train_dev"]
        figures["corpora"][c] = {
            "hours": h, "ssl_default_train_dev_bytes": small * h["train_dev"], "ssl_float16_all_bytes": f16 * h["all"],
            "codec_all_bytes": codec_bps * 3600 * h["all"], "cpu_core_h": round(cpu_h, 1),
            "cpu_dollars": round(cpu_h * PRICES["core_hour"], 2), "requests": req,
            "request_dollars": round(put_cost + get_cost, 2)}
        cost_rows.append([CORPORA[c]["title"], f"{human(small * h['train_dev'])} ({money(month(small * h['train_dev']))} a month)",
                          f"{human(f16 * h['all'])} ({money(month(f16 * h['all']))} a month)",
                          f"{human(codec_bps * 3600 * h['all'])} ({money(month(codec_bps * 3600 * h['all']))} a month)",
                          f"{money(put_cost + get_cost)}", f"{cpu_h:,.0f} core-h, {money(cpu_h * PRICES['core_hour'])}"])
        compute_rows.append([CORPORA[c]["title"], f"{h['all']:,.0f}", f"{core_h['codec'] * h['all']:,.0f}",
                             f"{h['train_dev']:,.0f}", f"{core_h['ssl'] * h['train_dev']:,.0f}",
                             money(cpu_h * PRICES["core_hour"])])
    figures["tables"] = {
        "bytes": bytes_table,
        "compute": bench_results.table(["corpus", "audio h (all)", "codec extraction, core-h", "audio h (train + dev)",
                                        "SSL extraction, core-h", "both, at the core price"], compute_rows),
        "cost": bench_results.table([
            "corpus", f"SSL cache, train + dev, {default}",
            "SSL cache, all splits, float16", "codec streams, all splits",
            f"requests, extraction + {EPOCHS} epochs read lazily", "extraction on CPUs (codec all, SSL train + dev)"],
            cost_rows),
    }
    figures["ssl_default_storage"] = default
    rates = {"codec": codec_bps, "codes": store["codes"]["bytes_per_audio_s"],
             **{f"ssl {name}": v["bytes_per_audio_s"] for name, v in ssl.items()}}
    figures["bytes_per_audio_s"] = {k: round(v) for k, v in rates.items()}
    figures["gb_per_audio_hour"] = {k: gb(v * 3600) for k, v in rates.items()}
    figures["gb"] = {k: {f"{c}_{part}": gb(v * 3600 * h[part]) for c, h in hours.items() for part in ("train", "train_dev", "all")}
                     for k, v in rates.items()}
    return figures


def speed(name: str) -> tuple[float, int]:
    """(audio s per wall s, the machine's CPUs) of a raw result made by `bench/timed.py`."""
    path = bench_results.RESULTS / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no such result (run its benchmark first)")
    result = json.loads(path.read_text())
    value = result["figures"].get("audio_s_per_wall_s")
    if not value:
        raise SystemExit(f"{path}: no audio_s_per_wall_s among its figures")
    return float(value), int(result["machine"]["cpus"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="a finished store with the codec streams and a float16 SSL stream")
    parser.add_argument("--codec-speed", default="extract_offla19", help="raw result of the codec extraction's speed")
    parser.add_argument("--ssl-speed", default="ssl_stream_offla19_float16", help="raw result of the SSL extraction's speed")
    args = parser.parse_args()
    codec_speed, cpus = speed(args.codec_speed)
    ssl_speed, ssl_cpus = speed(args.ssl_speed)
    if ssl_cpus != cpus:
        raise SystemExit(f"the two speeds were measured on {cpus} and {ssl_cpus} CPUs: measure them on one machine")
    figures = plan(streams(args.store), codec_speed, ssl_speed, cpus)
    bench_results.record(codec_weights=Path(args.store) / "codec_weights.th")
    figures["assumed"] = {"corpora": CORPORA, "prices": PRICES, "epochs": EPOCHS, "crop_chunks": CROP_CHUNKS}
    figures["inputs"] = {"store": args.store, "codec_speed": args.codec_speed, "ssl_speed": args.ssl_speed}
    for key, value in figures["tables"].items():
        print(f"\n{key}\n| " + " | ".join(value["columns"]) + " |")
        for row in value["rows"]:
            print("| " + " | ".join(str(x) for x in row) + " |")
    bench_results.record(**figures)
    return 0


if __name__ == "__main__":
    sys.exit(bench_results.run(main, "scale_plan", MODULES))
