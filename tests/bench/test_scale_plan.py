"""bench/scale_plan.py: SCALE.md's products follow from its measured inputs and its assumptions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))  # scale_plan imports bench/results.py as `results`, as a bench script does
try:
    import scale_plan
finally:
    sys.path.remove(str(REPO / "bench"))


def inputs(ssl: dict[str, float]) -> dict[str, dict]:
    """A store's streams as `scale_plan.streams` reads them: codec streams and SSL streams by storage."""
    codec = {"codes": 800.0, "latent": 18_000.0, "energy": 150.0}
    out = {name: {"bytes_per_audio_s": bps, "frame_rate": 75.0, "storage": None, "frame_bytes": 16, "chunk_frames": 65_536}
           for name, bps in codec.items()}
    for storage, bps in ssl.items():
        frame_bytes = 12 * 1024 * (2 if storage == "float16" else 1)
        out[f"ssl_{storage}"] = {"bytes_per_audio_s": bps, "frame_rate": 50.0, "storage": storage,
                                 "frame_bytes": frame_bytes, "chunk_frames": (4 << 20) // frame_bytes}
    return out


def test_the_plan_multiplies_each_measured_rate_by_the_assumed_hours():
    figures = scale_plan.plan(inputs({"float16": 1_000_000.0, "int8": 500_000.0}), codec_speed=20.0, ssl_speed=2.0, cpus=2)
    la = scale_plan.CORPORA["LA19"]["hours"]
    rows = {row[0]: row for row in figures["tables"]["bytes"]["rows"]}
    # SSL float16 over LA19 train: 1 MB/s x 3,600 s x 24 h, printed as the table prints sizes
    assert rows["SSL float16"][3] == scale_plan.human(1_000_000 * 3600 * la["train"]) == "86.4 GB"
    assert rows["codec streams (codes, latent, energy)"][1] == f"{800 + 18_000 + 150:,.0f}"
    assert "SSL int8 (default)" in rows
    # core-hours per audio hour: the machine's cores over its audio seconds per wall second
    assert figures["codec_core_h_per_audio_h"] == pytest.approx(2 / 20.0)
    assert figures["ssl_core_h_per_audio_h"] == pytest.approx(2 / 2.0)
    la_plan = figures["corpora"]["LA19"]
    all_hours, train_dev = sum(la.values()), la["train"] + la["dev"]
    assert la_plan["cpu_core_h"] == pytest.approx(0.1 * all_hours + 1.0 * train_dev, abs=0.05)
    # the default (int8) stream of train + dev, and float16 over every split
    assert la_plan["ssl_default_train_dev_bytes"] == pytest.approx(500_000 * 3600 * train_dev)
    assert la_plan["ssl_float16_all_bytes"] == pytest.approx(1_000_000 * 3600 * all_hours)
    # the same products in GB, keyed by stream and corpus part, as SCALE.md's text quotes them
    assert figures["gb"]["ssl int8"]["LA19_train"] == pytest.approx(500_000 * 3600 * la["train"] / 1e9, abs=1e-3)
    assert figures["gb_per_audio_hour"]["codec"] == pytest.approx((800 + 18_000 + 150) * 3600 / 1e9, abs=1e-3)


def test_requests_follow_the_chunk_and_shard_layout():
    ssl = inputs({"int8": 500_000.0})["ssl_int8"]  # a 12 KiB frame: 341 frames (6.82 s) a 4 MiB chunk
    hours, files = {"train": 10.0, "dev": 5.0, "eval": 0.0}, {"train": 3_200, "dev": 1_600, "eval": 0}
    req = scale_plan.requests(ssl, hours, files)
    chunk_s = 341 / 50
    assert req["chunk_audio_s"] == pytest.approx(chunk_s, abs=0.01)
    assert req["shard_puts"] == round(15 * 3600 / (chunk_s * 16))  # 16 chunks a shard, train + dev
    assert req["unit_parts"] == (3_200 + 1_600) // 32
    assert req["gets_per_epoch"] == round(3_200 * 1.5)
    assert req["gets_in_ram_train"] == round(10 * 3600 / chunk_s)


def test_a_store_without_a_float16_ssl_stream_is_refused_in_one_line():
    with pytest.raises(SystemExit, match="no float16 SSL stream"):
        scale_plan.plan(inputs({"int8": 500_000.0}), codec_speed=20.0, ssl_speed=2.0, cpus=2)


def test_the_streams_and_their_storage_are_read_from_a_store(tmp_path):
    from tests.synthetic import add_ssl_stream, synthetic_store

    url = str(tmp_path / "s.zarr")
    synthetic_store(url, n_per_split=4, frames=(30, 40))
    add_ssl_stream(url, layers=2, hidden=8)
    streams = scale_plan.streams(url)
    assert streams["ssl"]["storage"] == "float16" and streams["codes"]["storage"] is None
    assert streams["ssl"]["frame_bytes"] == 2 * 8 * 2 and streams["ssl"]["frame_rate"] == 50.0
    assert all(s["bytes_per_audio_s"] > 0 for s in streams.values())
