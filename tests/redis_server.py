"""Starting a throw-away Redis for tests and benchmarks: on a free port, on loopback only."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


class RedisDidNotStart(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis_server(
    workdir: Path, *, port: int | None = None, durable: bool = False
) -> tuple[str, subprocess.Popen]:
    """A redis-server for `workdir`; `durable` turns on AOF with an fsync per write."""
    server = shutil.which("redis-server")
    if server is None:
        raise RedisDidNotStart("redis-server is not installed; `make test` installs it")
    port = port or free_port()
    persistence = (
        ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    )
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(workdir),
            *persistence,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                client.ping()
                return url, process
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    process.kill()
                    raise RedisDidNotStart(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
    finally:
        client.close()
