"""Helpers shared by the test modules (test modules never import each other)."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from cryptography.hazmat.primitives import serialization

from tests.tokenfiles import credentials, encrypt_to
from worker.broker import EVENTS_QUEUE
from worker.store import keys as k

#: A real token issued by Apple with its key (Apache-2.0; see the README beside the files).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "apple-server-token"
#: A moment at which the real Apple fixture token is still valid (it expires 2026-01-17T11:02:21Z).
FIXTURE_NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
#: The `tokenwarden` command of the environment the tests run in.
TOKENWARDEN = str(Path(sys.executable).parent / "tokenwarden")


def quiet_logging() -> None:
    """Logs go to the real stderr (pytest captures it), never into a command's stdout."""
    from worker.logs import configure_logging

    configure_logging("info", "console", stream=sys.__stderr__)


DOWNLOADED = FIXTURE_NOW - timedelta(days=20)


def install(
    cli,
    clock,
    tmp_path,
    server,
    user,
    downloaded_at,
    days_left=300,
    consumer="CK_" + "f" * 96,
    extra=(),
):
    cert = cli("keys", "export", server).stdout
    path = tmp_path / f"{server}-{downloaded_at:%s}.p7m"
    path.write_bytes(encrypt_to(cert, credentials(clock.now + timedelta(days=days_left), consumer)))
    result = cli(
        "tokens",
        "install",
        server,
        str(path),
        "--offline",
        "--downloaded-by",
        user,
        "--downloaded-at",
        downloaded_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        *extra,
    )
    assert result.exit_code == 0, result.output
    return result


def install_on(store, name, user, *, now, days=300, downloaded_at=None, consumer="CK_" + "c" * 96):
    """Install a token made for the server's waiting key (staged, else current) through the
    registry service, on any Store."""
    from worker import installing, registry

    server = registry.resolve_server(store, name)
    pair = store.get_key(server.staged_key_id or server.current_key_id)
    data = encrypt_to(pair.cert_pem, credentials(now + timedelta(days=days), consumer))
    return installing.install_token(
        store, name, data, source="token.p7m", downloaded_by=user, now=now,
        downloaded_at=downloaded_at,
    )  # fmt: skip


def emit(cli, *args):
    result = cli("emit", *args)
    assert result.exit_code == 0, result.output
    return result.stdout.split()[-1]  # the event id


def replacements(cli, *extra):
    return json.loads(cli("replacements", "list", "--json", *extra).stdout)


def assert_refused(cli, snapshot, args, message, code=1):
    before = snapshot()
    result = cli(*args)
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert snapshot() == before
    return lines[0]


def every_redis_byte(redis_url) -> bytes:
    raw = redis.Redis.from_url(redis_url)
    chunks = []
    for key in raw.scan_iter(count=1000):
        chunks.append(key)
        kind = raw.type(key)
        if kind == b"hash":
            for field, value in raw.hgetall(key).items():
                chunks += [field, value]
        elif kind == b"set":
            chunks += list(raw.smembers(key))
        elif kind == b"zset":
            chunks += raw.zrange(key, 0, -1)
        elif kind == b"list":  # the broker's queues: message ids
            chunks += raw.lrange(key, 0, -1)
        elif kind == b"string":
            chunks.append(raw.get(key))
        elif kind == b"stream":
            for _, fields in raw.xrange(key):
                for field, value in fields.items():
                    chunks += [field, value]
        else:
            raise AssertionError(f"unexpected {kind!r} at {key!r}: extend this test")
    raw.close()
    return b"\n".join(chunks)


def private_key_forms(pem: bytes) -> list[bytes]:
    key = serialization.load_pem_private_key(pem, None)
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem_body = b"".join(pem.splitlines()[1:-1])
    numbers = key.private_numbers()
    return [
        der,
        base64.b64encode(der),
        pem_body[:64],
        pem_body[-64:],
        f"{numbers.d:x}".encode()[:64],
        str(numbers.p).encode(),
    ]


def start_worker(env):
    return subprocess.Popen(
        [TOKENWARDEN, "worker", "--processes", "1", "--threads", "4"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_until(predicate, timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll `predicate` until it holds; fail after `timeout` seconds (a liveness bound, far
    above what the wait takes: speed is measured by `make bench`, not asserted here)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def nothing_left_to_send(client: redis.Redis) -> bool:
    """True once no work that could still send something is left anywhere: no event message
    queued or in a worker's hands, no outgoing event unread or unacknowledged by the
    dispatcher, and no delivery due, leased or waiting for a retry. Checked on durable state,
    so a count taken afterwards is final (no "wait and see if more arrives")."""
    queued = client.llen(k.broker_queue(EVENTS_QUEUE)) + client.hlen(
        k.broker_messages(EVENTS_QUEUE)
    )
    if queued or client.zcard(k.DELIVERIES_DUE) or client.zcard(k.DELIVERIES_PARKED):
        return False
    if not client.exists(k.OUTBOX):
        return True
    groups = client.xinfo_groups(k.OUTBOX)
    return bool(groups) and all(g["pending"] == 0 and g.get("lag") == 0 for g in groups)


def wait_until_settled(client: redis.Redis, timeout: float = 30.0) -> None:
    wait_until(lambda: nothing_left_to_send(client), timeout, "nothing left to send")


@contextlib.contextmanager
def worker_threads(app):
    """A real dramatiq worker (threads in this process) on the test Redis; `.drain()` waits
    until every published message has been handled."""
    from worker.broker import EVENTS_QUEUE
    from worker.config import NotifySettings
    from worker.workerproc import WorkerThreads

    notify = app.settings.notify
    if notify == NotifySettings():  # a test may have set its own
        notify = NotifySettings(webhook_timeout_s=2, retry_schedule_s=(1, 1, 1), retry_jitter=0)
    app.settings = replace(app.settings, poll_interval_ms=10, notify=notify)
    running = WorkerThreads(app, threads=4)
    running.start()

    def drain(timeout_s: float = 30) -> None:
        app.broker.join(EVENTS_QUEUE, timeout=int(timeout_s * 1000))

    running.drain = drain
    try:
        yield running
    finally:
        running.stop()


def loopback_tls_files(directory, prefix: str = ""):
    """A CA made here (trustme) and a certificate it issued for 127.0.0.1, written as PEM files
    in `directory`: (the CA's file, the certificate's, its key's)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    names = (f"{prefix}ca.pem", f"{prefix}cert.pem", f"{prefix}key.pem")
    ca_pem, cert_pem, key_pem = (directory / name for name in names)
    ca.cert_pem.write_to_path(str(ca_pem))
    cert.cert_chain_pems[0].write_to_path(str(cert_pem))
    cert.private_key_pem.write_to_path(str(key_pem))
    return ca_pem, cert_pem, key_pem


@contextlib.contextmanager
def serving(asgi_app, *, certfile=None, keyfile=None):
    """Serve an ASGI app with uvicorn on a free loopback port, in a thread; yield its URL
    (https when given a certificate and its key)."""
    import socket
    import threading

    import uvicorn

    # IPPROTO_TCP named: asyncio turns Nagle's algorithm off (TCP_NODELAY) only for a socket
    # whose protocol says TCP, and with it on every small answer waits about 40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    tls = {"ssl_certfile": str(certfile), "ssl_keyfile": str(keyfile)} if certfile else {}
    config = uvicorn.Config(
        asgi_app,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        # As `serve` runs it: forwarded headers are the app's to believe (worker/intake/peer.py)
        proxy_headers=False,
        **tls,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10, what="uvicorn to start")
    try:
        yield f"{'https' if certfile else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
