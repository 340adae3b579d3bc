"""What the benchmarks share: a private Redis, bulk-loaded tokens, waiting, and RSS sampling."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from tests.redis_server import start_redis_server
from worker.bootstrap import App
from worker.crypto.payload import pack_credentials
from worker.names import name_key
from worker.records import Server, Token
from worker.store import keys as k
from worker.store.transactions import queue_token_writes

BIN = Path(sys.executable).parent
NOW = datetime.now(UTC).replace(microsecond=0)

#: Records written per pipeline round trip when bulk loading.
CHUNK = 5_000


def start_redis(workdir: Path) -> tuple[str, subprocess.Popen | None]:
    """A throw-away Redis on a free port (or BENCH_REDIS_URL, which is flushed)."""
    if url := os.environ.get("BENCH_REDIS_URL"):
        return url, None
    return start_redis_server(workdir)


def stop_redis(process: subprocess.Popen | None) -> None:
    if process is not None:
        process.terminate()
        process.wait(timeout=30)


def user_of(i: int) -> str:
    """The Managed Apple Account that downloaded token number i."""
    return f"admin{i}@org{i // 10}.example"


def random_credentials(i: int) -> dict[str, str]:
    """Fresh OAuth credentials of the shapes Apple issues."""
    return {
        "consumer_key": "CK_" + secrets.token_hex(48),
        "consumer_secret": "CS_" + secrets.token_hex(20),
        "access_token": "AT_" + secrets.token_hex(40),
        "access_secret": "AS_" + secrets.token_hex(20),
    }


def seeded_credentials(i: int, seed: int) -> dict[str, str]:
    """Token number i's credentials, the same in every process given the same seed: the
    benchmark's store and the fake of Apple (in its own process) hold the same tokens."""

    def part(name: str, hex_chars: int) -> str:
        digest = hashlib.sha256(f"{seed}:{i}:{name}".encode()).hexdigest()
        return digest[:hex_chars]

    return {
        "consumer_key": "CK_" + part("consumer_key", 64) + part("consumer_key+", 32),
        "consumer_secret": "CS_" + part("consumer_secret", 40),
        "access_token": "AT_" + part("access_token", 64) + part("access_token+", 16),
        "access_secret": "AS_" + part("access_secret", 40),
    }


def load_tokens(
    app: App,
    count: int,
    due: int = 0,
    now: datetime = NOW,
    credentials: Callable[[int], dict[str, str]] = random_credentials,
) -> None:
    """`count` servers with one current token each, downloaded by user_of(i), credentials
    (`credentials(i)`) sealed: the records and keys the store writes, through pipelines
    (installing real token files costs an RSA decryption each). The first `due` tokens are
    due for an expiry warning and a check with Apple at `now`; the others are checked again
    at their first threshold, as after a scan."""
    for first in range(0, count, CHUNK):
        pipe = app.redis.pipeline(transaction=False)
        for i in range(first, min(first + CHUNK, count)):
            is_due = i < due
            expires = now + (timedelta(days=25) if is_due else timedelta(days=200 + i % 100))
            server = Server(
                id=f"srv_{i:016x}",
                name=f"Server {i}",
                org=f"Org {i // 10}",
                created_at=now,
                token_id=f"tok_{i:016x}",
            )
            token = Token(
                id=server.token_id,
                server_id=server.id,
                consumer_id=secrets.token_hex(16),
                fingerprint=secrets.token_hex(16),
                downloaded_by=user_of(i),
                downloaded_at=expires - timedelta(days=365),
                expires_at=expires,
                installed_at=now,
                key_id=f"key_{i:016x}",
            )
            sealed = app.store.seal_credentials(token.id, pack_credentials(credentials(i)))
            write_server(pipe, server)
            check = now if is_due else expires - timedelta(days=120)
            queue_token_writes(pipe, token, sealed, check_at=check)
        pipe.execute()


def write_server(pipe, server: Server) -> None:
    pipe.hset(k.server(server.id), mapping=server.to_hash())
    pipe.hset(k.SERVERS, k.server_qualifier(name_key(server.org), name_key(server.name)), server.id)
    pipe.sadd(k.servers_named(name_key(server.name)), server.id)


def wait_drained(client: redis.Redis, queue_key: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while client.llen(queue_key) or client.hlen(f"{queue_key}.msgs"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{queue_key} did not drain")
        time.sleep(0.005)


def wait_worker_ready(client: redis.Redis, heartbeats: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not client.zcard(heartbeats):
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not start")
        time.sleep(0.05)


def worker_env(url: str, master_key: str, workdir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": url,
        "TOKENWARDEN_MASTER_KEY": master_key,
        "TOKENWARDEN_DATA_DIR": str(workdir),
        "TOKENWARDEN_LOG_LEVEL": "warning",
        **extra,
    }


class PeakRss:
    """Samples the resident memory of a process's children (the worker processes)."""

    def __init__(self, parent_pid: int, every_s: float = 0.02):
        self._parent = parent_pid
        self._every = every_s
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # each child's high-water mark covers what sampling missed

    def _children(self) -> list[int]:
        try:
            text = Path(f"/proc/{self._parent}/task/{self._parent}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def _sample(self) -> None:
        for pid in self._children():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith(("VmHWM:", "VmRSS:")):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._sample()
