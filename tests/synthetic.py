"""Synthetic finished feature stores for tests, written through the real store writer (no codec).

Codes at the first ``informative`` levels are drawn from the lower half of each codebook for bona
fide utterances and from the upper half for spoofs, with ``noise`` of the frames drawn uniformly
instead; every other level is uniform for both classes. A model can therefore learn the task, and
only through the informative levels. The latent (optional) is the sum of the codes' embeddings plus
Gaussian noise, so it carries the same signal; the energy stream (optional) is Gaussian noise.

Codebooks are random. With ``real_weights`` the codebooks are those of a real EnCodec 24 kHz state
dict (1024 x 128, random), saved as the store's weights file, so that the store is self-consistent
for `pipeline verify`; otherwise they are small (``codebook_size`` x ``dim``) and there is no
weights file.

Also here: :func:`tiny_config`, a training config small enough for tests on these stores.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from classify.config import TrainConfig
from extract.codec import (
    BANDWIDTHS,
    CODEBOOK_SIZE,
    CODEC_NAME,
    DIM,
    WeightsInfo,
    new_model,
)
from extract.datasets import COLUMNS, DATASETS
from store import format as sf
from store.writer import PartData, create_store, create_stream, finish_store, finish_stream, write_part

SPLITS = ("train", "dev", "eval")
_PREFIX = {"train": "T", "dev": "D", "eval": "E"}
ATTACKS = ("A01", "A02", "A03")
CODECS = ("-", "C01")
FAILURE_REASON = "synthetic: audio cannot be decoded"
PARAMETERS = 14_851_810
"""EnCodec 24 kHz's parameter count, recorded as the codec's in the attributes."""


@lru_cache(maxsize=4)
def real_weights(n_q: int, seed: int) -> tuple[bytes, np.ndarray]:
    """(state dict bytes, codebooks [n_q, 1024, 128]) of a real EnCodec model with random codebooks."""
    torch.manual_seed(seed)
    model = new_model()
    generator = torch.Generator().manual_seed(seed)
    for layer in model.quantizer.vq.layers:
        layer._codebook.embed.copy_(torch.randn(CODEBOOK_SIZE, DIM, generator=generator))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue(), np.stack([layer._codebook.embed.numpy() for layer in model.quantizer.vq.layers[:n_q]])


def _utterances(rng, splits, n_per_split, bonafide_share, spoof_only, failed_per_split, frames):
    rows = []
    for split in splits:
        n_bona = 0 if split in spoof_only else int(round(bonafide_share * n_per_split))
        labels = ["bonafide"] * n_bona + ["spoof"] * (n_per_split - n_bona) + ["spoof"] * failed_per_split
        for i, label in enumerate(labels):
            failed = i >= n_per_split
            n = 0 if failed else int(rng.integers(frames[0], frames[1] + 1))
            k = len(rows)
            rows.append({
                "utt_id": f"LA_{_PREFIX.get(split, split)}_{k:07d}",
                "speaker": f"LA_{9000 + i % 4:04d}",
                "system": "bonafide" if label == "bonafide" else ATTACKS[i % len(ATTACKS)],
                "codec": CODECS[i % len(CODECS)],
                "label": label,
                "split": split,
                "path": f"/synthetic/{split}/{k:07d}.flac",
                "duration": np.nan,
                "n_frames": n,
                "failed": failed,
            })
    return rows


def synthetic_store(
    path: str,
    n_per_split: int = 24,
    n_q: int = 8,
    latent: bool = True,
    seed: int = 0,
    *,
    codebook_size: int = 64,
    dim: int = 16,
    frames: tuple[int, int] = (30, 120),
    informative: int = 2,
    noise: float = 0.3,
    bonafide_share: float = 0.4,
    splits: tuple[str, ...] = SPLITS,
    spoof_only: tuple[str, ...] = (),
    failed_per_split: int = 0,
    problems: int = 0,
    energy: bool = False,
    dataset: str = "asv19",
    weights_seed: int = 0,
    real_codec_weights: bool = False,
    unit_size: int = 8,
    chunk_frames: dict[str, int] | None = None,
    shard_chunks: int = sf.SHARD_CHUNKS,
    metadata: bool = False,
) -> str:
    """Write a synthetic finished store at ``path`` through `store.writer` and return ``path``.

    ``n_per_split`` ok utterances per split (``round(bonafide_share * n)`` bona fide, except in
    the ``spoof_only`` splits), plus ``failed_per_split`` failed ones (no frames, a failure row);
    ``problems`` protocol problems (failures.parquet only); lengths uniform in ``frames``
    (inclusive). ``weights_seed`` sets the codebooks and the weights sha256 (stores with different
    values look like different codecs). ``dataset`` is the dataset name in the attributes (it decides
    the official score format). ``real_codec_weights``: 1024 x 128 codebooks of a real EnCodec state
    dict, saved as the weights file. ``unit_size``, ``chunk_frames`` and ``shard_chunks`` set the
    writer's work units and array layout (tiny chunks make a small store span many). ``metadata``:
    the ``dataset``'s metadata columns as its reader writes them (:func:`cross_metadata`)."""
    path = str(path)
    rng = np.random.default_rng(seed)
    if real_codec_weights:
        weights, codebooks = real_weights(n_q, weights_seed)
        codebook_size, dim = CODEBOOK_SIZE, DIM
        sha = hashlib.sha256(weights).hexdigest()
        info = WeightsInfo("untrained", sha, False, f"seed={weights_seed}, synthetic test store (random codebooks)")
        label = info.label
    else:
        weights = None
        codebooks = np.random.default_rng(weights_seed).standard_normal((n_q, codebook_size, dim)).astype(np.float32)
        sha = hashlib.sha256(codebooks.tobytes()).hexdigest()
        info = WeightsInfo("synthetic", sha, False, "synthetic test codebooks")
        label = f"SYNTHETIC test codebooks, weights sha256 {sha[:12]}"
    rows = _utterances(rng, splits, n_per_split, bonafide_share, spoof_only, failed_per_split, frames)
    extra = cross_metadata(dataset, rows, np.random.default_rng(seed + 1)) if metadata else []
    plan = pd.DataFrame([{c: r[c] for c in (*COLUMNS, *extra)} for r in rows])
    problem_rows = pd.DataFrame([(None, "/synthetic/protocol.txt", "dataset", f"/synthetic/protocol.txt:{k + 1}: bad line")
                                 for k in range(problems)], columns=list(sf.FAILURE_COLUMNS))
    codec = {"name": CODEC_NAME, "sample_rate": 24000, "frame_rate": 75, "n_q": n_q,
             "bandwidth": {q: b for b, q in BANDWIDTHS.items()}.get(n_q, 0.75 * n_q), "codebook_size": codebook_size,
             "dim": dim, "parameters": PARAMETERS}
    attrs = {
        "codec": codec,
        "weights": {**asdict(info), "label": label, **({"file": sf.WEIGHTS} if weights else {})},
        "dataset": {"name": dataset, "root": "/synthetic", "splits": sorted(splits), "description": "synthetic test store",
                    "score_format": DATASETS[dataset].score_format if dataset in DATASETS else None,
                    **({"metadata": extra} if metadata else {})},
        "config": {"latent": latent, "energy": energy, "unit_size": unit_size},
        "versions": {"torch": torch.__version__},
    }
    streams = sf.codec_stream_specs(codec, latent, energy)
    create_store(path, attrs, plan, problem_rows, streams, {sf.CODEBOOKS: codebooks}, weights)

    half = codebook_size // 2
    units = [rows[k : k + unit_size] for k in range(0, len(rows), unit_size)]
    for unit, members in enumerate(units):
        records, arrays = [], {s.name: [] for s in streams}
        for k, row in enumerate(members, start=unit * unit_size):
            if row["failed"]:
                records.append({"row": k, "status": "failed", "n_frames": 0, "stage": "audio", "reason": FAILURE_REASON})
                continue
            n = row["n_frames"]
            utt = rng.integers(0, codebook_size, size=(n, n_q))
            low = 0 if row["label"] == "bonafide" else half
            signal = rng.random((n, informative)) >= noise
            utt[:, :informative] = np.where(signal, rng.integers(low, low + half, size=(n, informative)),
                                            utt[:, :informative])
            arrays[sf.CODES].append(utt.astype(np.uint16))
            if latent:
                emb = codebooks[np.arange(n_q)[None, :], utt].sum(axis=1)
                arrays[sf.LATENT].append((emb + rng.standard_normal(emb.shape)).astype(np.float16))
            if energy:
                arrays[sf.ENERGY].append(rng.normal(-40, 5, size=(n, 1)).astype(np.float16))
            records.append({"row": k, "status": "ok", "n_frames": n, "n_windows": 1, "sample_rate": 16000,
                            "channels": 1, "duration": n / 75.0})
        write_part(path, PartData(unit, records, arrays))
    finish_store(path, len(units), {"weights": label}, chunk_frames=chunk_frames, shard_chunks=shard_chunks)
    return path


CROSS_METADATA = {
    "asv21la": {"condition": [f"C{k}" for k in range(1, 8)], "phase": ["eval", "progress", "hidden"],
                "system": [f"A{k:02d}" for k in range(7, 20)]},
    "asv21df": {"condition": [f"C{k}" for k in range(1, 10)], "phase": ["eval", "progress", "hidden"],
                "vocoder": ["traditional_vocoder", "waveform_concatenation", "neural_vocoder_autoregressive",
                            "neural_vocoder_nonautoregressive", "unknown"]},
    "itw": {"speaker": ["Alec Guinness", "Barack Obama", "Ayn Rand"]},
    "mlaad": {"language": ["de", "en", "fr"], "model": ["tts_a", "tts_b", "tts_c"]},
    "codecfake": {"condition": ["C1", "C2", "A1"]},
}
"""Values of the metadata columns of synthetic cross-corpus stores (spoof-only ones: system,
vocoder, model; bona fide rows get ``bonafide`` or ``-`` there, as the readers write them)."""


def cross_metadata(dataset: str, rows: list[dict], rng) -> list[str]:
    """Give ``rows`` (in place) the metadata columns of ``dataset``'s reader; returns their names."""
    spoof_only = {"system": "bonafide", "vocoder": "bonafide", "model": "-"}
    columns = CROSS_METADATA.get(dataset, {})
    for row in rows:
        for column, values in columns.items():
            if row["label"] == "bonafide" and column in spoof_only:
                row[column] = spoof_only[column]
            else:
                row[column] = str(values[int(rng.integers(len(values)))])
    return [c for c in columns if c not in COLUMNS]


def tiny_config(**overrides) -> TrainConfig:
    """A TrainConfig small enough for tests on these stores: 0.8 s crops (60 frames), a 16-unit
    LSTM head, no warm-up, no early stopping, CPU; ``overrides`` replace any field."""
    values = dict(epochs=2, batch_size=8, lr=1e-2, warmup_steps=0, crop_seconds=0.8, patience=0,
                  head_kwargs={"proj_dim": 16, "hidden_dim": 16}, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def verifiable_store(path, n_per_split: int = 8, failed_per_split: int = 1, problems: int = 1, latent: bool = True,
                     seed: int = 0) -> str:
    """A store `pipeline verify` can check fully (a real codec weights file whose codebooks are the
    store's), laid out in tiny chunks so that a few hundred frames span many: codes in chunks of 64
    frames, 4 chunks per shard; the latent likewise."""
    return synthetic_store(path, n_per_split, latent=latent, seed=seed, failed_per_split=failed_per_split,
                           problems=problems, real_codec_weights=True, weights_seed=seed,
                           chunk_frames={sf.CODES: 64, sf.LATENT: 64}, shard_chunks=4)


def add_ssl_stream(path: str, layers: int = 3, hidden: int = 8, seed: int = 0, starts: dict[int, int] | None = None,
                   signal: float = 1.0, name: str = "ssl", weights_sha256: str = "0" * 64) -> dict[int, np.ndarray]:
    """Add a synthetic SSL stream [frames, layers, hidden] at 50 Hz to the finished store at ``path``
    through the writer, as `pipeline extract --ssl` lays it out (``streams/NAME/starts`` included).

    Utterance r gets SSL frames for the audio its codec frames cover (floor(2 n_codec / 3), less the
    even ``starts[r]`` frames its crop starts at). Feature [u, l, 0] is the utterance's SSL frame
    number (its crop start included), [u, l, 1] its row, and dimensions 2.. carry ``signal`` (+ for
    bona fide, - for spoof) plus Gaussian noise, so that an SSL model can learn the task.
    Returns each row's frames."""
    import zarr

    table = pd.read_parquet(f"{path}/{sf.UTTERANCES}")
    starts = starts or {}
    source = {"kind": "ssl", "model": "synthetic", "title": "SYNTHETIC SSL", "layers": list(range(1, layers + 1)),
              "hidden": hidden, "crop_seconds": None, "crop_splits": [], "parameters_used": 1000,
              "weights": {"model": "synthetic", "source": "synthetic", "sha256": weights_sha256, "origin": "test",
                          "seed": seed, "trained": False, "label": f"SYNTHETIC SSL features {weights_sha256[:12]}"}}
    spec = sf.added_stream_spec(name, 50.0, "float16", (layers, hidden), "synthetic SSL", source)
    spec = sf.StreamSpec(**{**spec.__dict__, "tables": (f"{sf.added_stream_group(name)}/starts",)})
    create_stream(path, spec, {"config": {}})
    rng = np.random.default_rng(seed)
    frames, records, data, first = {}, [], [], np.full(len(table), -1, dtype=np.int64)
    for row in range(len(table)):
        if table["status"].iloc[row] != "ok":
            records.append({"row": row, "status": "failed", "n_frames": 0, "stage": "store", "reason": "failed before"})
            continue
        start = starts.get(row, 0)
        n = 2 * int(table["n_frames"].iloc[row]) // 3 - start
        sign = 1.0 if table["label"].iloc[row] == "bonafide" else -1.0
        values = rng.standard_normal((n, layers, hidden)) + sign * signal
        values[:, :, 0] = np.arange(start, start + n)[:, None]
        values[:, :, 1] = row
        frames[row] = values.astype(np.float16)
        data.append(frames[row])
        first[row] = start
        records.append({"row": row, "status": "ok", "n_frames": n})
    group = sf.added_stream_group(name)
    write_part(path, PartData(0, records, {name: data}), group)
    zarr.open_group(path, mode="r+").create_array(f"{group}/starts", data=first, chunks=first.shape, overwrite=True)
    finish_stream(path, name, 1)
    return frames


def view_recipe(name: str, splits: tuple[str, ...], seed: int = 1, streams: tuple[str, ...] = ("codes", "latent")) -> dict:
    """A recipe as `extract.augment.View.recipe` writes it (a gain of 0 dB: the frames are made up here)."""
    return {"name": name, "seed": seed, "splits": list(splits), "streams": list(streams), "description": f"synthetic {name}",
            "chain": [{"augment": "gain", "db": [0.0, 0.0], "origin": "signal processing"}], "rng": "synthetic",
            "versions": {"numpy": np.__version__}}


def add_view(path: str, name: str, splits: tuple[str, ...], marker: int | None = None, seed: int = 1,
             streams: tuple[str, ...] = ("codes", "latent"), unit_size: int = 8) -> dict[int, np.ndarray]:
    """Add a synthetic augmented view to the finished store at ``path`` through the writer, laid out
    as `pipeline extract --views` does (`store.views`): the codes of each ok utterance of ``splits``
    are the clean ones plus 1 (modulo the codebook size), or all ``marker`` (a view recognisable in a
    batch); the latent, when asked, is the clean latent plus 1. Returns each row's view codes."""
    import zarr

    from store.views import view_group

    root = zarr.open_group(path, mode="r")
    attrs = sf.StoreFiles(path).read_group_attrs()
    table = pd.read_parquet(f"{path}/{sf.UTTERANCES}")
    offsets = root[sf.OFFSETS][...]
    size = attrs["codec"]["codebook_size"]
    group = view_group(name)
    zarr.open_group(path, mode="r+").create_group(group)
    sf.StoreFiles(path).update_group_attrs({"view": view_recipe(name, splits, seed, streams)}, group)
    base = {s.name: s for s in sf.codec_stream_specs(attrs["codec"], latent=True, energy=True)}
    specs = [sf.StreamSpec(**{**base[s].__dict__, "array": f"{group}/{s}", "offsets": f"{group}/{sf.OFFSETS}", "tables": ()})
             for s in streams]
    create_stream(path, specs, {"config": {"unit_size": unit_size}}, group)
    out = {}
    for unit, first in enumerate(range(0, len(table), unit_size)):
        records, arrays = [], {s: [] for s in streams}
        for row in range(first, min(first + unit_size, len(table))):
            if table["status"].iloc[row] != "ok" or table["split"].iloc[row] not in splits:
                records.append({"row": row, "status": "failed", "n_frames": 0, "stage": "store", "reason": "outside"})
                continue
            codes = root[sf.CODES][offsets[row] : offsets[row + 1]].astype(np.int64)
            out[row] = (np.full_like(codes, marker) if marker is not None else (codes + 1) % size).astype(np.uint16)
            arrays["codes"].append(out[row])
            if "latent" in streams:
                arrays["latent"].append((root[sf.LATENT][offsets[row] : offsets[row + 1]] + 1).astype(np.float16))
            records.append({"row": row, "status": "ok", "n_frames": len(codes)})
        write_part(path, PartData(unit, records, arrays), group)
    finish_stream(path, name, -(-len(table) // unit_size), group=group)
    return out
