"""`pipeline serve`: a trained model behind an HTTP API and a web page (`pipeline.serve.app`).

FastAPI and uvicorn are an optional extra (``python3 install.py --extras serve``): they are
imported when the command runs, so that every other command works without them.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import click

from classify.config import DEVICES
from classify.decision import PRIOR
from classify.timeline import HOP_SECONDS, WINDOW_SECONDS

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_VARIABLE = "RVQ_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse (one line) to bind anything but loopback without a token."""
    if not is_loopback(host) and not token:
        raise click.ClickException(f"refusing to listen on {host} without a token: pass --token TOKEN or set "
                                   f"{TOKEN_VARIABLE} (only 127.0.0.1 may be served without one)")


@click.command("serve")
@click.option("--model", "model_path", type=click.Path(exists=True, path_type=Path), required=True,
              help="A run directory (its best.pt), a checkpoint, or a bundle from `pipeline export-model`.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs a token.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--token", default=None, help=f"Require 'Authorization: Bearer TOKEN' on every request (default: "
                                           f"${TOKEN_VARIABLE}).")
@click.option("--threshold", default="eer", show_default=True,
              help="Operating point: eer, bayes, prior, mindcf, far:R or a raw-score number (see `pipeline score`).")
@click.option("--prior", type=float, default=PRIOR, show_default=True, help="Prior probability of bona fide.")
@click.option("--segment-window", type=float, default=WINDOW_SECONDS, show_default=True, help="Timeline window, seconds.")
@click.option("--segment-hop", type=float, default=HOP_SECONDS, show_default=True, help="Timeline hop, seconds.")
@click.option("--max-upload-mb", type=float, default=50.0, show_default=True, help="Largest upload accepted.")
@click.option("--workers", type=int, default=1, show_default=True, help="Recordings scored at once.")
@click.option("--queue", type=int, default=8, show_default=True, help="Requests that may wait beyond those; more get 503.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds a request may take; then 504.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--codec-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The codec's weights file, when the model's provenance does not lead to it (sha256 checked).")
def command(model_path, host, port, token, threshold, prior, segment_window, segment_hop, max_upload_mb, workers,
            queue, timeout, device, codec_weights):
    """Serve a trained model: POST /score (multipart field `file`) answers the verdict as JSON (llr,
    probability, decision, segments, ood, model); GET /health, GET /model; the page at /."""
    token = token or os.environ.get(TOKEN_VARIABLE) or None
    check_binding(host, token)
    try:
        import uvicorn  # noqa: PLC0415 - the optional extra

        from pipeline.serve.app import ServeConfig, create_app  # noqa: PLC0415
    except ImportError as err:
        raise click.ClickException(f"the scoring service needs the serve extra ({err.name} is missing): "
                                   "python3 install.py --extras serve") from None
    from classify.detector import Detector  # noqa: PLC0415

    try:
        config = ServeConfig(max_upload_bytes=int(max_upload_mb * 2**20), workers=workers, queue=queue, timeout=timeout,
                             window_seconds=segment_window, hop_seconds=segment_hop, token=token)
        detector = Detector.load(model_path, device=device, threshold=threshold, prior=prior, codec_weights=codec_weights)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    print(f"model: {detector.model_file.path} ({detector.config.variant} / {detector.config.head}); codec weights: "
          f"{detector.codec_label}" + (f"; SSL weights: {detector.ssl_label}" if detector.ssl_label else ""),
          file=sys.stderr)
    print(f"decision: {detector.threshold.description}; prior P(bona fide) {detector.prior:g}", file=sys.stderr)
    print(f"serving on http://{host}:{port}/ ({'token required' if token else 'no token: loopback only'})",
          file=sys.stderr, flush=True)
    uvicorn.run(create_app(detector, config), host=host, port=port, log_level="info", access_log=False)
