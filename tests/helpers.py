"""Helpers shared by the test modules (test modules never import each other)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from cryptography.hazmat.primitives import serialization

from tests.tokenfiles import credentials, encrypt_to

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
        "--downloaded-by",
        user,
        "--downloaded-at",
        downloaded_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        *extra,
    )
    assert result.exit_code == 0, result.output
    return result


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
