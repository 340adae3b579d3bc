"""The secrets drill: the whole pipeline at debug level, then every log line, every Redis
value, every webhook body and every CLI output is searched for the token credentials, the
private keys and the session tokens Apple's service (the fake) handed out. Zero hits."""

import base64
import io
import json
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from tests.helpers import (
    every_redis_byte,
    private_key_forms,
    quiet_logging,
    wait_until_settled,
    worker_threads,
)
from tests.tokenfiles import credentials, encrypt_to
from worker.config_ui import UiSettings
from worker.logs import configure_logging


@pytest.fixture
def settings(settings, apple):
    """Apple's service is the fake, which hands out session tokens; the web pages are on."""
    return replace(settings, apple=replace(settings.apple, url=apple.url), ui=UiSettings(True))


def _pages(intake, password, servers) -> bytes:
    """Every page a viewer can open, with the certificates they download."""
    with httpx.Client(base_url=intake) as web:
        assert web.post("/ui/login", data={"name": "drill", "password": password}).is_redirect
        paths = ["/ui/", "/ui/timeline", "/ui/activity", "/ui/?state=replace+now"]
        for server in servers:
            paths += [f"/ui/servers/{server.id}", f"/ui/servers/{server.id}/certificate.pem"]
        answers = [web.get(path) for path in paths]
    assert all(a.status_code == 200 for a in answers), [a.status_code for a in answers]
    return b"".join(a.content for a in answers)


def test_no_secret_anywhere_after_a_full_run_at_debug_level(
    cli, app, redis_url, fixture_files, receiver, tmp_path, clock, apple, intake
):
    log = io.StringIO()
    configure_logging("debug", "json", stream=log)
    outputs: list[str] = []

    def run(*args):
        result = cli(*args)
        # (`status` exits 2 here by design: the run dooms tokens)
        assert result.exit_code == (2 if args[0] == "status" else 0), result.output
        outputs.append(result.output)
        return result

    try:
        # A subscription, Apple's real token and a made one, events, decisions, deliveries
        # (the one output allowed to show a secret: a generated one, once, at creation)
        added = json.loads(cli("subscriptions", "add", receiver.url, "--json").stdout)
        webhook_secret = added["secret"]
        run(
            "servers",
            "add",
            "Main",
            "--cert",
            str(fixture_files / "server-cert.pem"),
            "--key",
            str(fixture_files / "server-key.pem"),
        )
        run(
            "tokens",
            "install",
            "Main",
            str(fixture_files / "server-token.p7m"),
            "--offline",
            "--downloaded-by",
            "apple@school.edu",
            "--downloaded-at",
            "2025-01-17T11:02:21Z",
        )
        run("servers", "add", "Lab")
        made = credentials(clock.now + timedelta(days=300))
        (tmp_path / "t.p7m").write_bytes(encrypt_to(run("keys", "export", "Lab").stdout, made))
        # Asked about at install, and checked twice more: its first session expires in
        # between, and each answer after that hands out a new one.
        apple.enroll(made, admin_id="lab@school.edu")
        apple.rotate_sessions = True
        run(
            "tokens",
            "install",
            "Lab",
            str(tmp_path / "t.p7m"),
            "--downloaded-at",
            "2025-02-01T00:00:00Z",
        )
        apple.expire_sessions()
        run("tokens", "check", "Lab", "--json")
        run("tokens", "check", "Lab")
        # Main's policy rotates its key with the password change below (a key staged by the
        # worker, sealed like any other)
        run("servers", "policy", "Main", "--rotate-key", "always", "--owner", "it@school.edu")
        with worker_threads(app) as worker:
            run("emit", "password-changed", "--user", "apple@school.edu")
            run("emit", "user-left", "--user", "lab@school.edu")
            run("keys", "rotate", "Lab")
            worker.drain()
            receiver.wait_for(3, timeout=30)
            wait_until_settled(app.redis)
        for args in (
            ("servers", "list", "--json"),
            ("servers", "show", "Main", "--json"),
            ("tokens", "list", "--all", "--json"),
            ("replacements", "list", "--json"),
            ("events", "list", "--json"),
            ("events", "dead", "--json"),
            ("deliveries", "list", "--json"),
            ("subscriptions", "list", "--json"),
            ("secrets", "status", "--json"),
            ("status", "--json"),
            ("scan", "--dry-run", "--json"),
            ("tokens", "due", "--within", "400", "--json"),
            ("tokens", "due", "--ical"),
            ("servers", "policy", "Main", "--json"),
        ):
            run(*args)
        # (the one other output allowed a secret: a viewer's password, once, at creation)
        viewer_password = json.loads(cli("viewers", "add", "drill", "--json").stdout)["password"]
    finally:
        quiet_logging()

    # The secrets that went through
    server = app.store.servers_named("Main")[0]
    fixture_token = app.store.open_credentials(app.store.get_token(server.token_id))
    lab = app.store.servers_named("Lab")[0]
    lab_key = app.store.open_key_material(app.store.get_key(lab.current_key_id)).private_key
    staged = app.store.open_key_material(app.store.get_key(lab.staged_key_id)).private_key
    rotated = app.store.open_key_material(app.store.get_key(server.staged_key_id)).private_key
    secrets = [
        *fixture_token.values(),
        *(made[f] for f in ("consumer_key", "consumer_secret", "access_token", "access_secret")),
        webhook_secret,
        webhook_secret.removeprefix("whsec_"),
        *apple.sessions_issued,
        app.settings.master_key,
    ]
    forms = private_key_forms((fixture_files / "server-key.pem").read_bytes())
    # Lab's current key, the one `keys rotate` staged, and the one Main's policy staged
    for key in (lab_key, staged, rotated):
        forms += private_key_forms(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    places = {
        "log": log.getvalue().encode(),
        "redis": every_redis_byte(redis_url),
        "webhooks": b"".join(r.body + json.dumps(r.headers).encode() for r in receiver.received),
        "cli": "".join(outputs).encode(),
        "pages": _pages(intake, viewer_password, [server, lab]),
    }
    secrets.append(viewer_password)
    assert len(log.getvalue().splitlines()) > 20, "the drill logged too little to mean much"
    assert len(receiver.received) >= 3
    assert len(apple.sessions_issued) >= 3, "the drill used too few Apple sessions"
    for where, haystack in places.items():
        for secret in secrets:
            assert secret.encode() not in haystack, f"a credential or key in the {where}"
        for form in forms:
            assert form not in haystack, f"a private key in the {where}"
        assert base64.b64encode(secrets[0].encode()) not in haystack
