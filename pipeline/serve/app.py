"""The scoring service's ASGI app (FastAPI; `pipeline serve` runs it under uvicorn).

    POST /score   multipart upload, field ``file`` -> the verdict JSON (`classify.verdict`: ``llr``,
                  ``probability``, ``decision``, ``segments``, ``ood`` = {score, threshold, flagged}
                  or null with ``ood_reason``, ``model``, ...); ``?explain=true`` adds the per-level
                  explanation (`classify.detector.Detector.explain`)
    GET  /health  {"status": "ok", ...} and the queue's state
    GET  /model   what scores come from (`Detector.describe` without server paths: `pipeline.serve.public`;
                  the OOD record's summary, the settings)
    GET  /        the page (`pipeline/serve/page.html`)

Limits (:class:`ServeConfig`): an upload larger than ``max_upload_bytes`` is refused from its
Content-Length before its body is read (413; a body without Content-Length: 411); at most
``workers`` recordings are scored at once, ``queue`` more wait, any further request is refused (503);
a request not answered within ``timeout`` seconds gets 504 (its scoring finishes in the background
and its file is then deleted). Bad audio gets 422 with the reason (``truncated: ...``, ``not a
readable audio file: ...``), an unknown file type 415; the server goes on.

Files: an upload is written to this server's temporary folder under a random name that keeps only
the upload's extension (when it is an audio extension), scored, and deleted; the client's file name
is echoed back (its base name) and never used as a path. No answer names a server path: not the
temporary one, nor the model's, its stores' or its weights' (errors and `/model` go through
`pipeline.serve.public`).

Token: with ``token`` set, every request (the page included) must carry ``Authorization: Bearer
TOKEN`` (401 otherwise); compared in constant time.

FastAPI is an optional extra (``python3 install.py --extras serve``): this module imports it, and
only `pipeline serve` and the tests import this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from classify.ood import check as ood_check
from classify.ood import summary as ood_summary
from classify.timeline import HOP_SECONDS, WINDOW_SECONDS, iter_timelines
from classify.verdict import model_summary, verdict
from extract.audio import AUDIO_EXTENSIONS
from pipeline.serve.public import public, public_model, scrub

PAGE = Path(__file__).with_name("page.html")
CHUNK = 1 << 16
MULTIPART_OVERHEAD = 16_384
"""Bytes of a multipart body beyond the file (boundaries, headers) allowed over the upload limit."""


@dataclass(frozen=True)
class ServeConfig:
    """The service's limits and timeline settings (see the module docstring)."""

    max_upload_bytes: int = 50 * 2**20
    workers: int = 1
    queue: int = 8
    timeout: float = 120.0
    window_seconds: float = WINDOW_SECONDS
    hop_seconds: float = HOP_SECONDS
    token: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "workers", "timeout", "window_seconds", "hop_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.queue < 0:
            raise ValueError(f"queue must be >= 0, got {self.queue}")


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def client_name(filename: str | None) -> str:
    """The upload's base name, as echoed back (never used as a path)."""
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1].strip() or "upload"
    return "".join(c for c in name if c.isprintable())[:200]


class Scorer:
    """Scores uploads with one Detector, at most ``workers`` at a time, in a bounded queue."""

    def __init__(self, detector: Any, config: ServeConfig) -> None:
        self.detector, self.config = detector, config
        self.folder = Path(tempfile.mkdtemp(prefix="rvq-serve-"))
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="score")
        self.pending = 0  # requests admitted and not finished scoring (running + queued)
        self.lock = threading.Lock()
        self.scored = self.failed = 0

    def admit(self) -> bool:
        with self.lock:
            if self.pending >= self.config.workers + self.config.queue:
                return False
            self.pending += 1
            return True

    def release(self) -> None:
        with self.lock:
            self.pending -= 1

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    def score(self, path: Path, name: str, explain: bool) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON) for one saved upload; the file is deleted here, whatever happens."""
        try:
            row, timeline, features = next(iter_timelines(self.detector, [str(path)], self.config.window_seconds,
                                                          self.config.hop_seconds))
            if row.error:
                self.failed += 1
                return 422, {"error": scrub(row.error.replace(str(path), name).replace(path.name, name)), "file": name}
            ood, reason = ood_check(self.detector, features)
            result = public(verdict(self.detector, row, timeline, ood, reason, name=name))
            if explain:
                result["explanation"] = self.explain(path)
            self.scored += 1
            return 200, result
        finally:
            path.unlink(missing_ok=True)

    def explain(self, path: Path) -> dict[str, Any]:
        e = self.detector.explain_file(path)
        return {"levels": [float(v) for v in e.levels], "times": [float(t) for t in e.times],
                "over_time": [float(v) for v in e.over_time], "window_seconds": e.window_seconds,
                "method": e.method}


def create_app(detector: Any, config: ServeConfig | None = None) -> FastAPI:
    """The app of the module docstring around a loaded `classify.detector.Detector`."""
    config = config or ServeConfig()
    scorer = Scorer(detector, config)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):  # noqa: ANN202
        yield
        scorer.close()

    app = FastAPI(title="rvq-antispoof scoring service", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.scorer = scorer
    expected = f"Bearer {config.token}".encode() if config.token else None

    @app.middleware("http")
    async def guard(request: Request, call_next):  # noqa: ANN202 - FastAPI's middleware signature
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not secrets.compare_digest(given, expected):
                return _error(401, "missing or wrong token: send the header 'Authorization: Bearer TOKEN'")
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return _error(411, "the request needs a Content-Length header (chunked uploads are not accepted)")
            if not length.isdigit() or int(length) > config.max_upload_bytes + MULTIPART_OVERHEAD:
                return _error(413, f"upload too large: the limit is {config.max_upload_bytes / 2**20:g} MiB",
                              limit_bytes=config.max_upload_bytes)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": public(model_summary(detector)), "pending": scorer.pending,
                "workers": config.workers, "queue": config.queue, "scored": scorer.scored, "failed": scorer.failed}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        record = detector.model_file.state.get("ood")
        return {**public_model(detector), "summary": public(model_summary(detector)), "prior": detector.prior,
                "ood": public(ood_summary(record)) if record else None,
                "serve": {"max_upload_bytes": config.max_upload_bytes, "workers": config.workers,
                          "queue": config.queue, "timeout_seconds": config.timeout,
                          "window_seconds": config.window_seconds, "hop_seconds": config.hop_seconds,
                          "extensions": list(AUDIO_EXTENSIONS)}}

    @app.post("/score")
    async def score(request: Request, explain: bool = False) -> JSONResponse:
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return _error(400, "send the recording as a multipart form field named 'file'")
        name = client_name(upload.filename)
        suffix = Path(name).suffix.lower()
        if suffix not in AUDIO_EXTENSIONS:
            await upload.close()
            return _error(415, f"{name}: unknown file type {suffix or '(no extension)'!r}; send one of "
                               f"{', '.join(AUDIO_EXTENSIONS)}", file=name)
        if not scorer.admit():
            await upload.close()
            return _error(503, f"busy: {config.workers} recording(s) being scored and {config.queue} waiting; retry "
                               "later", file=name)
        path = scorer.folder / f"{uuid.uuid4().hex}{suffix}"
        admitted = time.monotonic()
        try:
            size = 0
            with path.open("wb") as handle:
                while chunk := await upload.read(CHUNK):
                    size += len(chunk)
                    if size > config.max_upload_bytes:
                        break
                    handle.write(chunk)
            await upload.close()
            if size > config.max_upload_bytes:
                path.unlink(missing_ok=True)
                scorer.release()
                return _error(413, f"upload too large: the limit is {config.max_upload_bytes / 2**20:g} MiB", file=name)
        except BaseException:
            path.unlink(missing_ok=True)
            scorer.release()
            raise
        future = asyncio.get_running_loop().run_in_executor(scorer.executor, scorer.score, path, name, explain)
        future.add_done_callback(lambda _: scorer.release())
        try:
            status, body = await asyncio.wait_for(asyncio.shield(future), config.timeout)
        except TimeoutError:
            return _error(504, f"{name}: not scored within {config.timeout:g} s (the service is slow or the recording "
                               "long); retry later", file=name)
        except Exception as err:  # noqa: BLE001 - a scoring failure is the request's, not the server's
            return _error(500, f"{name}: scoring failed ({type(err).__name__}: "
                               f"{scrub(str(err).replace(str(path), name).replace(str(scorer.folder), '<upload>'))[:300]})",
                          file=name)
        body.setdefault("seconds", round(time.monotonic() - admitted, 3))
        return JSONResponse(body, status_code=status)

    return app
