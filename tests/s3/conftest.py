"""A real S3 API server for the object-store tests: moto's server, started by the tests on a free
loopback port, with credentials made up for the run (so that any leak of them can be searched for).

The S3 extra (``python3 install.py --extras s3``: s3fs and moto) is optional: without it every test
here skips with the reason."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

s3fs = pytest.importorskip("s3fs", reason="the S3 extra is not installed (python3 install.py --extras s3)")
pytest.importorskip("moto", reason="the S3 extra is not installed (python3 install.py --extras s3)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    endpoint: str
    env: dict[str, str]
    """The environment a user would set: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL."""
    secrets: tuple[str, str]
    """The key id and the secret: neither may appear in any output, store or run folder."""

    def fs(self):
        return s3fs.S3FileSystem(key=self.env["AWS_ACCESS_KEY_ID"], secret=self.env["AWS_SECRET_ACCESS_KEY"],
                                 endpoint_url=self.endpoint)

    def bucket(self, name: str) -> str:
        self.fs().mkdir(name)
        return name


def _moto_command(port: int) -> list[str]:
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if server:
        return [server, "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as out:
        proc = subprocess.Popen(_moto_command(port), stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto's S3 server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    key, secret = "AKIA" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
    env = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_ENDPOINT_URL": endpoint,
           "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        yield S3Server(endpoint=endpoint, env=env, secrets=(key, secret))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> S3Server:
    """The server's credentials in this process's environment too (for in-process reads)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server


def child_env(server: S3Server) -> dict[str, str]:
    return {**os.environ, **server.env, "PYTHONUNBUFFERED": "1"}
