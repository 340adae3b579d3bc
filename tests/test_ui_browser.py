"""The web pages in a real browser: Debian's chromium, headless, driven by Playwright, against a
real `serve`, a real worker and Redis holding a seeded estate. It logs in, opens each page,
checks what is shown, and saves screenshots (into the test's folder; also into the folder
TOKENWARDEN_SCREENSHOTS names, which is how the README's pictures are made)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from tests.browser import chromium
from tests.helpers import install, wait_until
from worker.config_ui import UiSettings

#: (server, organization, days left); Gym's downloader changes their password.
ESTATE = [
    ("Main Campus", "Springfield Schools", 300),
    ("Library", "Springfield Schools", 24),
    ("Gym", "Springfield Schools", 200),
    ("Lab Macs", "Shelbyville Academy", 90),
    ("Office", "Shelbyville Academy", 160),
]


@pytest.fixture
def settings(settings):
    return replace(settings, ui=UiSettings(enabled=True))


@pytest.fixture
def estate(cli, app, clock, tmp_path, worker):
    """The servers above with their tokens; a password change dooms Gym's (decided by the
    worker); a server without a token; a viewer, whose password is returned."""
    for index, (name, org, days) in enumerate(ESTATE):
        assert cli("servers", "add", name, "--org", org).exit_code == 0
        user = "coach@springfield.edu" if name == "Gym" else "it@school.example"
        install(
            cli, clock, tmp_path, name, user, clock.now - timedelta(days=1), days_left=days,
            consumer="CK_" + str(index) * 96,
        )  # fmt: skip
    assert cli("servers", "add", "New Wing", "--org", "Springfield Schools").exit_code == 0
    assert cli("emit", "password-changed", "--user", "coach@springfield.edu").exit_code == 0
    wait_until(lambda: app.store.events.replacements(), what="the worker's decision")
    assert cli("scan").exit_code == 0  # Library is inside renew-before: its renewal opens
    added = cli("viewers", "add", "alice", "--json")
    return json.loads(added.stdout)["password"]


def _shoot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a picture of a page, not an empty one
    wanted = os.environ.get("TOKENWARDEN_SCREENSHOTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(wanted) / path.name)


def test_the_pages_in_headless_chromium(intake, estate, tmp_path):
    violations: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on(
            "console", lambda m: violations.append(m.text) if "Content Security" in m.text else None
        )

        # Without a login, the page is the login form.
        page.goto(f"{intake}/ui/timeline")
        assert page.url.startswith(f"{intake}/ui/login")
        page.fill("input[name=name]", "alice")
        page.fill("input[name=password]", "not her password")
        page.click("button[type=submit]")
        assert page.locator("p.error").inner_text() == "Wrong name or password."
        page.fill("input[name=password]", estate)
        page.click("button[type=submit]")
        assert page.url == f"{intake}/ui/timeline"  # back where it was asked for

        # Estate: every server, most urgent first, in the states `status` names.
        page.click("nav >> text=Estate")
        rows = page.locator("table.estate tbody tr")
        assert rows.count() == 6
        states = page.locator("table.estate tbody tr td:first-child").all_inner_texts()
        names = page.locator("table.estate tbody tr td:nth-child(2)").all_inner_texts()
        assert list(zip(states, names, strict=True))[:3] == [
            ("replace now", "Gym"),
            ("replace", "Library"),
            ("no token", "New Wing"),
        ]
        assert "password changed" in rows.nth(0).inner_text()
        _shoot(page, tmp_path, "estate")

        # Filtered by organization, with the form.
        page.select_option("select[name=org]", "Shelbyville Academy")
        page.click("form.filters button")
        names = page.locator("table.estate tbody tr td:nth-child(2)").all_inner_texts()
        assert sorted(names) == ["Lab Macs", "Office"]

        # Timeline: an SVG drawn on the server, one mark per token, the warning bands.
        page.click("nav >> text=Timeline")
        assert page.locator("svg.timeline circle.mark").count() == 5
        assert page.locator("svg.timeline rect.band").count() >= 1
        _shoot(page, tmp_path, "timeline")

        # A server: its history, the steps, and its certificate to download.
        page.goto(f"{intake}/ui/")
        page.click("table.estate >> text=Gym")
        assert page.locator("h1").inner_text().startswith("Gym")
        assert "tokens install" in page.content()
        with page.expect_download() as download:
            page.click("a[href$='certificate.pem']")
        pem = Path(download.value.path()).read_text()
        assert pem.startswith("-----BEGIN CERTIFICATE-----")
        assert "PRIVATE" not in pem
        _shoot(page, tmp_path, "server")

        # Activity: the events received, by source.
        page.click("nav >> text=Activity")
        assert "urn:tokenwarden:cli" in page.content()
        _shoot(page, tmp_path, "activity")

        # Logging out ends it: the pages ask for a login again.
        page.click("form.logout button")
        page.goto(f"{intake}/ui/")
        assert page.url.startswith(f"{intake}/ui/login")
    assert violations == []  # the CSP blocked nothing: the pages need no inline script/style
