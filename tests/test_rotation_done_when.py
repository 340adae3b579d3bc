"""Issue 16's "done when", end to end: the CLI, the scan, a real worker's delivery loop, a real
SMTP server and a real Redis, on an injected clock. For a server with `--renew-before 45
--rotate-key always`: the replacement opens 45 days before expiry with `scheduled_renewal`, a
new key is staged in the same step, the e-mail to the owner carries the new certificate,
installing a token encrypted to the new key closes the replacement and deletes the old
private key; the iCalendar feed parses with the `icalendar` library and holds one event per
server with the right dates."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import icalendar
import pytest

from events import catalog
from tests.helpers import install, wait_until
from tests.smtp_inbox import running_inbox
from worker.config import NotifySettings
from worker.store import keys as k

OWNER = "lab-owner@school.example"


@pytest.fixture
def inbox():
    with running_inbox("tw@x.example") as box:
        yield box


@pytest.fixture
def settings(settings, inbox):
    return replace(settings, notify=NotifySettings(smtp=inbox.smtp, retry_schedule_s=(1,)))


def _show(cli, name):
    return json.loads(cli("servers", "show", name, "--json").stdout)


def test_renew_before_45_rotate_key_always(cli, app, clock, tmp_path, worker, inbox):
    start = clock.now
    for name in ("Lab", "Gym"):
        assert cli("servers", "add", name).exit_code == 0
        install(cli, clock, tmp_path, name, "admin@school.example", start, days_left=300)
    policy = cli(
        "servers", "policy", "Lab", "--renew-before", "45", "--rotate-key", "always",
        "--owner", OWNER,
    )  # fmt: skip
    assert policy.exit_code == 0, policy.output
    expires = start + timedelta(days=300)
    old_key = _show(cli, "Lab")["current_key"]

    # A day before renew-before: warnings only (the 60-day one), no replacement, no new key.
    clock.now = expires - timedelta(days=46)
    assert cli("scan").exit_code == 0
    assert json.loads(cli("replacements", "list", "--json").stdout) == []
    assert _show(cli, "Lab")["staged_key"] is None

    # 45 days before expiry: the renewal opens, with a new key staged in the same step.
    clock.now = expires - timedelta(days=45) + timedelta(minutes=1)
    assert "opened 1 scheduled renewals (1 new key pairs staged)" in cli("scan").output
    [opened] = json.loads(cli("replacements", "list", "--json").stdout)
    assert opened["server"] == "Lab"
    assert [r["type"] for r in opened["reasons"]] == [catalog.SCHEDULED_RENEWAL]
    staged = _show(cli, "Lab")["staged_key"]
    assert staged is not None
    certificate = cli("keys", "export", "Lab").stdout

    # The owner's e-mail carries that certificate.
    def owner_mail():
        return [m for m in inbox.messages if m["To"] == OWNER and "Replace" in m["Subject"]]

    wait_until(lambda: owner_mail(), what="the owner's e-mail")
    [attachment] = list(owner_mail()[0].iter_attachments())
    assert attachment.get_content().decode().strip() == certificate.strip()

    # A token encrypted to the new key closes the replacement and deletes the old private key.
    clock.now += timedelta(days=1)
    install(cli, clock, tmp_path, "Lab", "admin@school.example", clock.now, days_left=365)
    assert json.loads(cli("replacements", "list", "--json").stdout) == []
    shown = _show(cli, "Lab")
    assert shown["current_key"]["id"] == staged["id"]
    states = {key["id"]: key["state"] for key in shown["keys"]}
    assert states[old_key["id"]] == "retired"
    assert not app.redis.hexists(k.key_pair(old_key["id"]), k.SEALED_PRIVATE_KEY)

    # The calendar: one event per server, on its renewal day under its policy.
    feed = icalendar.Calendar.from_ical(cli("tokens", "due", "--ical").stdout_bytes)
    events = {str(e["SUMMARY"]): e for e in feed.walk("VEVENT")}
    assert len(events) == 2
    lab_due = (clock.now + timedelta(days=365) - timedelta(days=45)).date()
    gym_due = (expires - timedelta(days=30)).date()
    assert events["Renew the server token of Lab"].decoded("DTSTART") == lab_due
    assert events["Renew the server token of Gym"].decoded("DTSTART") == gym_due
