"""E-mail to the people who must act, through a real SMTP server started in the test."""

import json
import socket
from dataclasses import replace

import pytest

from tests.helpers import DOWNLOADED, emit, install, wait_until
from tests.smtp_inbox import running_inbox
from worker.config import NotifySettings, SmtpSettings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def inbox(app):
    with running_inbox() as box:
        app.settings = replace(
            app.settings,
            notify=NotifySettings(
                webhook_timeout_s=5, retry_schedule_s=(1, 1), retry_jitter=0, smtp=box.smtp
            ),
        )
        yield box


def test_a_key_change_mails_the_steps_and_the_certificate_to_upload(
    cli, app, inbox, worker, clock, tmp_path
):
    # Given a server with a token and an administrator subscribed for it by e-mail
    assert cli("servers", "add", "Main Campus", "--org", "Springfield").exit_code == 0
    install(cli, clock, tmp_path, "Main Campus", "admin@springfield.edu", DOWNLOADED)
    added = cli("subscriptions", "add", "mailto:it-team@springfield.edu", "--org", "springfield")
    assert added.exit_code == 0, added.output
    # When a new key is staged
    rotated = cli("keys", "rotate", "Main Campus")
    # Then one short plain message says which server, why, by when and the steps
    [message] = inbox.wait_for(1)
    assert message["To"] == "it-team@springfield.edu"
    assert message["From"] == "tokenwarden@school.example"
    assert "Main Campus" in message["Subject"]
    body = message.get_body(preferencelist=("plain",)).get_content()
    assert (
        'The server token of the MDM server "Main Campus" (Springfield) must be replaced.' in body
    )
    assert "a new key was made for the server" in body
    assert "By when: soon" in body
    assert "Choose Download Token" in body
    assert "upload the attached public key certificate (Main_Campus.pem)" in body
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "Main_Campus.pem"
    assert attachment.get_content().decode() == rotated.stdout


def test_a_password_change_mail_says_it_is_urgent_and_who(cli, app, inbox, worker, clock, tmp_path):
    assert cli("servers", "add", "Lab").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "teacher@school.edu", DOWNLOADED)
    cli("subscriptions", "add", "mailto:ops@school.edu", "--server", "lab")
    emit(cli, "password-changed", "--user", "Teacher@school.edu")
    [message] = inbox.wait_for(1)
    body = message.get_body(preferencelist=("plain",)).get_content()
    assert "the password of teacher@school.edu, who downloaded it, changed" in body
    assert "By when: now" in body
    assert list(message.iter_attachments()) == []


@pytest.fixture
def dead_smtp(app):
    """SMTP settings pointing at a port where nothing listens."""
    app.settings = replace(
        app.settings,
        notify=NotifySettings(
            webhook_timeout_s=5,
            retry_schedule_s=(1, 1),
            retry_jitter=0,
            smtp=SmtpSettings(host="127.0.0.1", port=free_port(), starttls=False, sender="tw@x"),
        ),
    )


def test_an_unreachable_smtp_server_is_a_failed_attempt_that_is_retried(
    cli, app, dead_smtp, worker, clock, tmp_path
):
    assert cli("servers", "add", "Lab").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "teacher@school.edu", DOWNLOADED)
    cli("subscriptions", "add", "mailto:ops@school.edu")
    emit(cli, "user-left", "--user", "teacher@school.edu")

    def listed():
        return json.loads(cli("deliveries", "list", "--json").stdout)

    wait_until(lambda: listed() and listed()[0]["status"] == "failed", 30, "a failed delivery")
    [failed] = listed()
    assert failed["attempts"] == 3
    assert "ConnectionRefusedError" in failed["last_error"]
