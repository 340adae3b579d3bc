"""TOKENWARDEN_CA_BUNDLE: extra CAs trusted by every outgoing HTTPS client, besides the
system's (a lab's CA, a TLS-inspecting proxy's), read and checked at start-up."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from tests.helpers import loopback_tls_files, serving
from worker.config import Settings
from worker.errors import ConfigError
from worker.notify.webhook import post_event


@pytest.fixture
def tls_receiver(tmp_path):
    """A webhook receiver over TLS with a certificate from a CA made here; (url, CA PEM)."""
    ca_pem, cert_pem, key_pem = loopback_tls_files(tmp_path)

    async def receive(request):
        await request.body()
        return Response(status_code=204)

    app = Starlette(routes=[Route("/hook", receive, methods=["POST"])])
    with serving(app, certfile=cert_pem, keyfile=key_pem) as url:
        yield f"{url}/hook", ca_pem


def test_one_bundle_reaches_every_section_that_calls_out(tls_receiver):
    _, ca_pem = tls_receiver
    settings = Settings.from_env({"TOKENWARDEN_CA_BUNDLE": str(ca_pem)})
    assert settings.notify.ca_bundle == settings.apple.ca_bundle == ca_pem
    assert settings.directories.ca_bundle == ca_pem


def test_a_webhook_to_a_lab_ca_works_with_the_bundle_and_not_without(tls_receiver):
    url, ca_pem = tls_receiver
    now = datetime.now(UTC)
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    refused = post_event(url, secret, "msg_1", "{}", now, 5)
    assert not refused.ok and "CERTIFICATE_VERIFY_FAILED" in refused.error
    trusted = post_event(url, secret, "msg_1", "{}", now, 5, ca_pem)
    assert trusted.ok, trusted.error


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot be read"),
        ("not a certificate\n", "holds no PEM certificate"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "cannot be used"),
    ],
)
def test_an_unusable_bundle_stops_start_up_in_one_line(tmp_path, content, message):
    path = tmp_path / "bundle.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as raised:
        Settings.from_env({"TOKENWARDEN_CA_BUNDLE": str(path)})
    assert "\n" not in str(raised.value)
