"""`pipeline serve`: the API through FastAPI's TestClient (verdicts, bad audio, limits, queue,
timeout, token, temporary files), the command's refusal to bind beyond loopback without a token, and
the real server on 127.0.0.1 in a subprocess. Skipped when the serve extra is not installed."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
import soundfile as sf
from click.testing import CliRunner

fastapi = pytest.importorskip("fastapi", reason="the serve extra is not installed (python3 install.py --extras serve)")
pytest.importorskip("httpx", reason="the serve extra is not installed (python3 install.py --extras serve)")
from fastapi.testclient import TestClient  # noqa: E402

from classify.decision import probability  # noqa: E402
from classify.detector import Detector  # noqa: E402
from pipeline.cli import main  # noqa: E402
from pipeline.serve.app import ServeConfig, create_app  # noqa: E402
from tests.serving import start_server, stop  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
KEYS = {"llr", "probability", "decision", "segments", "ood", "model"}


@pytest.fixture(scope="module")
def detector(scoring):
    return Detector.load(scoring.run, batch_seconds=0)


@pytest.fixture(scope="module")
def recording(scoring, tmp_path_factory) -> dict[str, bytes]:
    """The same recording as FLAC and M4A, a cut WAV, and a text file named .wav."""
    from tests.media import write

    folder = tmp_path_factory.mktemp("uploads")
    data, rate = sf.read(scoring.files("eval")[0], dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, data, rate, format="FLAC")
    wav = io.BytesIO()
    sf.write(wav, data, rate, format="WAV")
    return {"a.flac": buf.getvalue(), "a.m4a": write(folder / "a.m4a", data, rate).read_bytes(),
            "cut.wav": wav.getvalue()[: len(wav.getvalue()) // 2], "text.wav": b"not audio at all\n" * 40}


def post(client, name: str, blob: bytes, **kwargs):
    return client.post("/score", files={"file": (name, blob, "application/octet-stream")}, **kwargs)


def test_flac_and_m4a_score_bad_audio_is_422_and_the_next_still_scores(detector, recording, scoring):
    app = create_app(detector, ServeConfig(window_seconds=1.0, hop_seconds=0.5))
    folder = app.state.scorer.folder
    with TestClient(app) as client:
        flac = post(client, "a.flac", recording["a.flac"])
        assert flac.status_code == 200, flac.text
        v = flac.json()
        assert KEYS <= set(v) and v["path"] == "a.flac"
        row = detector.score_files([scoring.files("eval")[0]])[0]
        assert v["score"] == pytest.approx(row.score, abs=1e-6) and v["llr"] == pytest.approx(row.llr, abs=1e-5)
        assert v["probability"] == pytest.approx(probability(v["llr"], 0.5)) and v["decision"] == row.decision
        assert set(v["ood"]) >= {"score", "threshold", "flagged"} and len(v["segments"]) >= 2
        assert v["model"]["untrained"] and "UNTRAINED" in v["model"]["codec_weights"] and v["model"]["warning"]
        m4a = post(client, "phone recording.M4A", recording["a.m4a"])
        assert m4a.status_code == 200 and m4a.json()["path"] == "phone recording.M4A"
        assert m4a.json()["score"] == pytest.approx(v["score"], abs=0.5)  # AAC is lossy: near, not equal
        cut = post(client, "cut.wav", recording["cut.wav"])
        assert cut.status_code == 422 and cut.json()["error"].startswith("truncated") and cut.json()["file"] == "cut.wav"
        text = post(client, "text.wav", recording["text.wav"])
        assert text.status_code == 422 and "not a readable audio file" in text.json()["error"]
        assert str(folder) not in cut.text + text.text
        unknown = post(client, "notes.txt", b"hello")
        assert unknown.status_code == 415 and "unknown file type '.txt'" in unknown.json()["error"]
        assert client.post("/score", data={"x": "1"}).status_code == 400
        again = post(client, "../../etc/passwd.flac", recording["a.flac"])  # a name is only echoed, never a path
        assert again.status_code == 200 and again.json()["path"] == "passwd.flac"
        assert again.json()["score"] == pytest.approx(v["score"], abs=1e-6)
        explained = post(client, "a.flac", recording["a.flac"], params={"explain": "true"}).json()
        assert len(explained["explanation"]["levels"]) == 8
        assert list(folder.iterdir()) == []  # every upload deleted
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["scored"] == 4 and health["failed"] == 2
        described = client.get("/model").json()
        assert described["codec_weights"]["label"] == detector.codec_label and described["ood"]["threshold"] > 0
        assert "judge a recording" in client.get("/").text.lower()


def test_upload_limit_queue_timeout_and_token(detector, recording):
    small = create_app(detector, ServeConfig(max_upload_bytes=10_000))
    with TestClient(small) as client:
        big = post(client, "a.flac", recording["a.flac"] + b"\0" * 40_000)
        assert big.status_code == 413 and "limit is" in big.json()["error"]
    app = create_app(detector, ServeConfig(workers=1, queue=0, timeout=0.5))
    scorer = app.state.scorer
    gate = threading.Event()
    real = scorer.score

    def slow(*args):
        gate.wait(30)
        return real(*args)

    scorer.score = slow
    with TestClient(app) as client:
        first: dict = {}
        thread = threading.Thread(target=lambda: first.update(r=post(client, "a.flac", recording["a.flac"])))
        thread.start()
        deadline = time.time() + 10
        while scorer.pending == 0 and time.time() < deadline:
            time.sleep(0.01)
        busy = post(client, "a.flac", recording["a.flac"])
        assert busy.status_code == 503 and "busy" in busy.json()["error"]
        thread.join()
        assert first["r"].status_code == 504 and "not scored within 0.5 s" in first["r"].json()["error"]
        gate.set()
        deadline = time.time() + 60
        while scorer.pending and time.time() < deadline:
            time.sleep(0.05)
        assert scorer.pending == 0 and list(scorer.folder.iterdir()) == []  # finished, file deleted
        assert scorer.scored == 1 and client.get("/health").json()["pending"] == 0  # it was scored, late
    locked = create_app(detector, ServeConfig(token="s3cret"))
    with TestClient(locked) as client:
        assert client.get("/health").status_code == 401
        assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert post(client, "a.flac", recording["a.flac"]).status_code == 401


def test_binding_beyond_loopback_needs_a_token(scoring, monkeypatch):
    monkeypatch.delenv("RVQ_SERVE_TOKEN", raising=False)
    result = CliRunner().invoke(main, ["serve", "--model", str(scoring.run), "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: refusing to listen on 0.0.0.0 without a token: pass --token TOKEN or set RVQ_SERVE_TOKEN (only "
        "127.0.0.1 may be served without one)"]


def test_the_running_server_on_loopback(scoring, recording):
    import httpx

    proc, url = start_server(scoring.run, "--segment-window", "1", "--segment-hop", "0.5")
    try:
        scores = {}
        for name in ("a.flac", "a.m4a"):
            r = httpx.post(f"{url}/score", files={"file": (name, recording[name])}, timeout=120)
            assert r.status_code == 200, r.text
            assert KEYS <= set(r.json())
            scores[name] = r.json()["score"]
        broken = httpx.post(f"{url}/score", files={"file": ("broken.wav", recording["text.wav"])}, timeout=120)
        assert broken.status_code == 422 and "not a readable audio file" in broken.json()["error"]
        after = httpx.post(f"{url}/score", files={"file": ("a.flac", recording["a.flac"])}, timeout=120)
        assert after.status_code == 200 and after.json()["score"] == pytest.approx(scores["a.flac"], abs=1e-6)
        assert "<script>" in httpx.get(url + "/", timeout=10).text
        print(json.dumps({k: after.json()[k] for k in ("llr", "probability", "decision", "ood")}))
    finally:
        stop(proc)


def strings(value) -> list[str]:
    """Every string (keys and values) in a JSON value."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def test_no_answer_names_a_server_path(detector, recording, scoring):
    """`/model`, `/health`, verdicts and errors name the model and its weights, never where they lie."""
    import os
    import re
    from pathlib import Path

    described = detector.describe()  # what a results file on the server's own disk records
    server = {str(scoring.run), str(Path(scoring.traindev).resolve()), str(Path(scoring.eval_store).resolve()),
              scoring.traindev, str(Path.cwd()), os.path.dirname(str(detector.model_file.path))}
    assert str(scoring.run) in json.dumps(described)  # the leak this guards against is really there to leak
    absolute = re.compile(r"(?:^|[\s'\"(=])(?:/[^\s/'\"]+){2,}")

    def clean(answer) -> None:
        text = json.dumps(answer)
        assert not [s for s in server if s in text], text
        assert not [s for s in strings(answer) if absolute.search(s)], [s for s in strings(answer) if absolute.search(s)]

    app = create_app(detector, ServeConfig(window_seconds=1.0, hop_seconds=0.5))
    with TestClient(app) as client:
        model = client.get("/model").json()
        clean(model)
        assert model["model"] == "best.pt" and model["model_kind"] == described["model_kind"]
        assert model["codec_weights"]["label"] == detector.codec_label and "UNTRAINED" in model["codec_weights"]["label"]
        assert model["codec_weights"]["sha256"] == detector.codec.weights_sha256
        assert model["ssl_weights"] == described["ssl_weights"]  # None here: a codec-only model
        assert model["threshold"] == detector.threshold.description
        assert model["calibration"]["thresholds"] == described["calibration"]["thresholds"]
        assert model["calibration"]["calibration"]["store"] == Path(scoring.traindev).name
        assert model["model_provenance"]["git"] == described["model_provenance"]["git"]
        assert model["summary"]["untrained"] and model["ood"]["threshold"] > 0
        clean(client.get("/health").json())
        v = post(client, "a.flac", recording["a.flac"])
        assert v.status_code == 200
        clean(v.json())
        bad = post(client, "text.wav", recording["text.wav"])
        assert bad.status_code == 422
        clean(bad.json())
        where = f"{detector.model_file.path}"

        def broken(path, name, explain):
            raise FileNotFoundError(f"[Errno 2] No such file or directory: '{where}' (while reading {path})")

        app.state.scorer.score = broken
        failed = post(client, "a.flac", recording["a.flac"])
        assert failed.status_code == 500 and "FileNotFoundError" in failed.json()["error"]
        assert "'best.pt'" in failed.json()["error"] and "while reading a.flac" in failed.json()["error"]
        clean(failed.json())


def test_scrub_keeps_base_names_and_leaves_ratios_and_web_addresses():
    from pipeline.serve.public import public, scrub

    assert scrub("open('/srv/runs/qaf/best.pt') failed") == "open('best.pt') failed"
    assert scrub("store s3://bucket/x/eval.zarr, C:\\Users\\me\\w.th and ~/runs/q/last.pt") == \
        "store eval.zarr, w.th and last.pt"
    assert scrub("24 kHz / 6 kbps, and/or 1/2, see https://example.org/a/b") == \
        "24 kHz / 6 kbps, and/or 1/2, see https://example.org/a/b"
    assert public({"model": "/srv/m/best.pt", "found_in": "/srv/w.th", "n": [1, "/a/b/c"]}) == \
        {"model": "best.pt", "n": [1, "c"]}
