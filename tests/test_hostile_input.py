"""Input that used to escape validation (issue 9, item 9): each ends in one clear line, a
non-zero exit and nothing stored; in the worker, a dead letter for the bad event only."""

import json
import os
import socketserver
import subprocess
import threading
import uuid
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from events import catalog
from tests.helpers import DOWNLOADED, TOKENWARDEN, assert_refused, install
from tests.tokenfiles import credentials, encrypt_to
from worker.actors import HANDLE_EVENTS
from worker.api import Client
from worker.broker import EVENTS_QUEUE
from worker.config import Settings
from worker.crypto.smime import read_envelope
from worker.errors import InvalidEvent, TokenFileError
from worker.records import to_ms
from worker.store import keys as k

DEEP = "[" * 30_000 + "]" * 30_000

GOOD = {
    "specversion": "1.0",
    "id": "e-1",
    "source": "urn:test",
    "type": catalog.PASSWORD_CHANGED,
    "time": "2025-02-20T10:00:00Z",
    "data": {"user": "a@x.org"},
}

EXTREME_TIMES = ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00")


# ---- deeply nested JSON ----------------------------------------------------------------------


@pytest.mark.parametrize("skip_invalid", [(), ("--skip-invalid",)])
def test_deeply_nested_json_in_an_event_file_is_one_line(cli, snapshot, tmp_path, skip_invalid):
    path = tmp_path / "events.jsonl"
    path.write_text(DEEP + "\n")
    if skip_invalid:
        result = cli("emit", "--file", str(path), *skip_invalid)
        assert result.exit_code == 0, result.output
        assert "nests arrays or objects more than" in result.stderr
        assert result.stdout == "published 0 events, skipped 1\n"
    else:
        assert_refused(cli, snapshot, ("emit", "--file", str(path)), "nests arrays or objects")


@pytest.mark.parametrize(
    "bad",
    [DEEP, {**GOOD, "data": {"user": "a@x.org", "extra": json.loads("[" * 900 + "]" * 900)}}],
    ids=["text", "object"],
)
def test_deeply_nested_json_given_to_the_api_is_refused(app, bad):
    with (
        Client(app.settings, broker=app.broker) as client,
        pytest.raises(InvalidEvent, match="nests arrays or objects"),
    ):
        client.publish([GOOD, bad])


def test_a_deeply_nested_event_in_a_broker_batch_is_dead_lettered_and_its_neighbour_decided(
    app, worker, cli, clock, tmp_path
):
    # Given a token downloaded by a@x.org, and a batch holding a good event beside a bad one
    cli("servers", "add", "Lab")
    install(cli, clock, tmp_path, "Lab", "a@x.org", DOWNLOADED)
    app.broker.enqueue(
        dramatiq.Message(
            queue_name=EVENTS_QUEUE,
            actor_name=HANDLE_EVENTS,
            args=([GOOD, DEEP], to_ms(clock.now)),
            kwargs={},
            options={},
        )
    )
    # When the worker takes the batch
    worker.drain(timeout_s=20)
    # Then the good event was decided, and only the bad one is a dead letter, saying why
    [decided] = [e for e in app.store.events.audit() if e["kind"] == "event"]
    assert (decided["event"]["id"], decided["outcome"]) == ("e-1", "applied")
    [dead] = app.store.events.dead_letters()
    assert "nests arrays or objects" in dead["reason"]


@pytest.mark.parametrize("decoy", [False, True], ids=["plain", "decoy-id-in-args"])
def test_a_broker_message_too_deeply_nested_to_read_is_dead_lettered_not_retried_forever(
    app, worker, redis_client, decoy
):
    # Given a message body no JSON parser of Python's can read (with, in its arguments, text
    # that looks like another message's broker id), then a good message
    message_id = str(uuid.uuid4())
    args = [{"redis_message_id": str(uuid.uuid4())}, "@"] if decoy else ["@"]
    body = json.dumps(
        {
            "queue_name": EVENTS_QUEUE,
            "actor_name": HANDLE_EVENTS,
            "args": args,
            "kwargs": {},
            "options": {"redis_message_id": message_id},
            "message_id": message_id,
        }
    ).replace('"@"', DEEP)
    app.broker.do_enqueue(EVENTS_QUEUE, message_id, body.encode())
    with Client(app.settings, broker=app.broker) as client:
        client.publish([GOOD])
    # When the worker runs: the queue drains (nothing is left unacknowledged)
    worker.drain(timeout_s=20)
    # Then the unreadable body is a dead letter, and the good event was decided
    [dead] = app.store.events.dead_letters()
    assert dead["reason"] == "the broker message nests JSON too deeply to be read"
    assert dead["message_id"] == message_id
    assert [e["event"]["id"] for e in app.store.events.audit()] == ["e-1"]
    acks = [k for k in redis_client.scan_iter(k.BROKER_ACKS_PATTERN) if redis_client.scard(k)]
    assert acks == []


def test_a_token_whose_decrypted_message_is_deeply_nested_is_refused(cli, snapshot, tmp_path):
    cli("servers", "add", "Lab")
    path = tmp_path / "deep.p7m"
    path.write_bytes(encrypt_to(cli("keys", "export", "Lab").stdout, DEEP))
    assert_refused(
        cli,
        snapshot,
        ("tokens", "install", "Lab", str(path), "--offline", "--downloaded-by", "a@x.org"),
        "nests JSON too deeply",
    )


# ---- extreme dates ---------------------------------------------------------------------------


@pytest.mark.parametrize("moment", EXTREME_TIMES)
def test_extreme_dates_on_the_command_line_are_one_line(cli, snapshot, clock, tmp_path, moment):
    cli("servers", "add", "Lab")
    path = tmp_path / "t.p7m"
    path.write_bytes(
        encrypt_to(
            cli("keys", "export", "Lab").stdout, credentials(clock.now + timedelta(days=300))
        )
    )
    for args in (
        (
            "tokens",
            "install",
            "Lab",
            str(path),
            "--offline",
            "--downloaded-by",
            "a@x",
            "--downloaded-at",
            moment,
        ),
        ("emit", "password-changed", "--user", "a@x", "--at", moment),
        ("scan", "--dry-run", "--now", moment),
    ):
        assert_refused(cli, snapshot, args, "is out of range", code=2)


@pytest.mark.parametrize("moment", EXTREME_TIMES)
def test_a_token_expiring_at_an_extreme_date_is_refused(cli, snapshot, tmp_path, moment):
    cli("servers", "add", "Lab")
    document = {**credentials(datetime(2026, 1, 1, tzinfo=UTC)), "access_token_expiry": moment}
    path = tmp_path / "t.p7m"
    path.write_bytes(encrypt_to(cli("keys", "export", "Lab").stdout, document))
    assert_refused(
        cli,
        snapshot,
        ("tokens", "install", "Lab", str(path), "--offline", "--downloaded-by", "a@x.org"),
        "'access_token_expiry' is out of range",
    )


# ---- REDIS_URL -------------------------------------------------------------------------------


class _NotRedis(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.recv(4096)
        self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def not_redis():
    """A real TCP service that is not Redis (it answers as a web server does)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _NotRedis)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def tokenwarden(*args, **env):
    return subprocess.run(
        [TOKENWARDEN, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )


def test_a_service_that_is_not_redis_is_one_line_and_exit_3(not_redis, tmp_path):
    result = tokenwarden(
        "servers",
        "list",
        REDIS_URL=f"redis://127.0.0.1:{not_redis}/0?password=hunter2",
        TOKENWARDEN_DATA_DIR=str(tmp_path),
    )
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: the service at redis://127.0.0.1:")
    assert "does not answer as Redis" in result.stderr
    assert "hunter2" not in result.stderr


def test_a_password_in_the_query_string_is_redacted_where_the_url_is_shown(tmp_path):
    url = "redis://127.0.0.1:1/0?socket_timeout=3&password=hunter2"
    assert Settings.from_env({"REDIS_URL": url}).redis_url_display == (
        "redis://127.0.0.1:1/0?socket_timeout=3&password=***"
    )
    result = tokenwarden("servers", "list", REDIS_URL=url, TOKENWARDEN_DATA_DIR=str(tmp_path))
    assert result.returncode == 3
    assert "password=***" in result.stderr
    assert "hunter2" not in result.stderr


def test_a_redis_url_whose_database_is_not_a_number_is_refused(tmp_path):
    result = tokenwarden(
        "servers", "list", REDIS_URL="redis://127.0.0.1:1/abc", TOKENWARDEN_DATA_DIR=str(tmp_path)
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "names database 'abc'" in result.stderr


# ---- event files -----------------------------------------------------------------------------


def queued(app) -> list[dict]:
    queue = k.broker_queue(EVENTS_QUEUE)
    messages = [
        json.loads(app.redis.hget(f"{queue}.msgs", i)) for i in app.redis.lrange(queue, 0, -1)
    ]
    return [event for message in messages for event in message["args"][0]]


def test_an_event_file_with_a_byte_order_mark_is_read(cli, app, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes("\ufeff".encode() + json.dumps(GOOD).encode() + b"\n")
    result = cli("emit", "--file", str(path))
    assert result.exit_code == 0, result.output
    assert [e["id"] for e in queued(app)] == ["e-1"]


def test_line_and_next_line_separators_inside_json_strings_do_not_split_the_line(
    cli, app, tmp_path
):
    event = {**GOOD, "data": {"user": "a@x.org", "note": "one\u2028two\u0085three"}}
    path = tmp_path / "events.jsonl"
    path.write_bytes(json.dumps(event, ensure_ascii=False).encode() + b"\r\n")
    result = cli("emit", "--file", str(path))
    assert result.exit_code == 0, result.output
    assert [e["data"]["note"] for e in queued(app)] == ["one\u2028two\u0085three"]


@pytest.mark.parametrize("digits", ["1700000000", "1700000000.5"])
def test_an_event_time_given_as_digits_is_refused(app, cli, snapshot, tmp_path, digits):
    with (
        Client(app.settings, broker=app.broker) as client,
        pytest.raises(InvalidEvent, match="'time' is not an RFC 3339 time"),
    ):
        client.publish([{**GOOD, "time": digits}])
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({**GOOD, "time": digits}) + "\n")
    assert_refused(cli, snapshot, ("emit", "--file", str(path)), "not an RFC 3339 time")


# ---- subscriptions, keys, token files, names -------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://hooks.example.org/a\r\nX-Injected: 1", "control characters"),
        ("https://hooks.example.org/a\nb", "control characters"),
        ("https://hooks.example.org:0/a", "port 0"),
    ],
)
def test_webhook_urls_with_line_breaks_or_port_zero_are_refused(cli, snapshot, url, message):
    assert_refused(cli, snapshot, ("subscriptions", "add", url), message)


def small_rsa_pair(tmp_path, bits=1024):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "weak.pem", tmp_path / "weak-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_rsa_keys_under_2048_bits_are_refused(cli, snapshot, tmp_path):
    cert, key = small_rsa_pair(tmp_path)
    assert_refused(
        cli,
        snapshot,
        ("servers", "add", "Lab", "--cert", str(cert), "--key", str(key)),
        "is a 1024-bit RSA key",
    )


def test_a_token_files_content_type_is_shown_escaped(cli, snapshot, tmp_path):
    data = b"Content-Type: text/\x1b[31mred\x1b[0m\n\nhello\n"
    with pytest.raises(TokenFileError) as refused:
        read_envelope(data, source="t.p7m")
    assert "\x1b" not in str(refused.value)
    assert "\\x1b[31mred" in str(refused.value)
    cli("servers", "add", "Lab")
    path = tmp_path / "t.p7m"
    path.write_bytes(data)
    line = assert_refused(
        cli,
        snapshot,
        ("tokens", "install", "Lab", str(path), "--offline", "--downloaded-by", "a@x.org"),
        "not an S/MIME server token",
    )
    assert "\x1b" not in line


@pytest.mark.parametrize(
    "name", ["\u3164", "\u3164\u3164\u3164", "Main\u3164Campus", "\uffa0", "\u2800", "\u0301"]
)
def test_server_names_of_invisible_fillers_are_refused(cli, snapshot, name):
    assert_refused(cli, snapshot, ("servers", "add", name), "invisible filler characters")
