"""The web pages (worker/ui/): what each shows of a real estate in Redis, served by uvicorn and
read over HTTP; that no secret and no inline script or style is on any of them."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import timedelta

import httpx
import pytest
from cryptography import x509
from starlette.applications import Starlette
from starlette.routing import Mount

from events import catalog
from events.cloudevent import new_event
from scheduler.scan import Scanner
from tests.helpers import install_on, serving
from worker.intake.context import Intake
from worker.rules.status import STATES
from worker.ui import pages

SVG = "{http://www.w3.org/2000/svg}"


class TesterAccess:
    """Stands in for worker/ui/access.py (built beside these pages) until the two parts are
    merged: every request is the viewer "tester". Logging in is the access part's to test."""

    def required(self, handler):
        async def as_tester(request):
            request.state.viewer = "tester"
            return await handler(request)

        return as_tester


@pytest.fixture
def ui(app):
    """The pages mounted at /ui as `serve` mounts them, on a free port; an HTTP client."""
    starlette = Starlette(routes=[Mount("/ui", routes=pages.routes(TesterAccess()))])
    starlette.state.intake = Intake(app)
    with serving(starlette) as url, httpx.Client(base_url=url) as client:
        yield client


def add(cli, name, org=None):
    result = cli("servers", "add", name, *(["--org", org] if org else []))
    assert result.exit_code == 0, result.output


def html(ui, path, status=200) -> str:
    answer = ui.get(path)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    return answer.text


def handle(app, event_type, data, clock):
    event = new_event(event_type, data, source="urn:test:hr", time=clock.now)
    app.handler.handle_batch([event.to_wire()], received_at=clock.now, now=clock.now)


def estate_rows(page: str) -> list[tuple[str, str]]:
    """(state, server name) of each row of the estate table, in order."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r'<tr class="state-[a-z-]+">\s*<td><span class="badge state-[a-z-]+">'
                      r"([a-z ]+)</span></td>\s*<td><a href=\"/ui/servers/srv_[0-9a-f]+\">"
                      r"([^<]+)</a>", body)  # fmt: skip


@pytest.fixture
def estate(app, cli, clock):
    """One server in each state `status` names, in two organizations; the clock then moved
    on 11 days (so the first token has expired)."""
    for name, org in [
        ("Expired", "North"), ("Doomed", "North"), ("Empty", "North"),
        ("Rotating", "South"), ("Soon", "South"), ("Fine", "South"),
    ]:  # fmt: skip
        add(cli, name, org)
    install_on(app.store, "Expired", "a@school.edu", now=clock.now, days=10)
    install_on(app.store, "Doomed", "teacher@school.edu", now=clock.now, days=200)
    install_on(app.store, "Rotating", "b@school.edu", now=clock.now, days=250)
    install_on(app.store, "Soon", "c@school.edu", now=clock.now, days=35)
    install_on(app.store, "Fine", "d@school.edu", now=clock.now, days=300)
    clock.now += timedelta(days=11)
    handle(app, catalog.PASSWORD_CHANGED, {"user": "teacher@school.edu"}, clock)
    assert cli("keys", "rotate", "Rotating").exit_code == 0
    return app


def test_the_estate_lists_every_server_most_urgent_first_in_the_states_of_status(estate, ui):
    page = html(ui, "/ui/")
    assert estate_rows(page) == [
        ("expired", "Expired"),
        ("replace now", "Doomed"),
        ("due", "Soon"),
        ("replace", "Rotating"),
        ("no token", "Empty"),
        ("ok", "Fine"),
    ]
    # Each row shows the organization, expiry, days left, downloader and Apple's verdict
    assert re.search(r"Soon</a></td>\s*<td>South</td>\s*<td>2025-04-05T09:00:00Z</td>\s*"
                     r'<td class="num">24</td>\s*<td>c@school.edu</td>\s*<td><span class='
                     r'"verdict verdict-unknown">unknown</span>', page)  # fmt: skip
    assert "tester" in page and 'action="/ui/logout"' in page
    # The counts by state link to the filtered estate
    for state in STATES:
        assert f'href="?state={state.replace(" ", "+")}"' in page


def test_the_estate_filters_by_organization_and_state(estate, ui):
    north = estate_rows(html(ui, "/ui/?org=north"))
    assert [name for _, name in north] == ["Expired", "Doomed", "Empty"]
    due = estate_rows(html(ui, "/ui/?org=South&state=due"))
    assert due == [("due", "Soon")]
    assert estate_rows(html(ui, "/ui/?state=replace+now")) == [("replace now", "Doomed")]
    assert "No server matches" in html(ui, "/ui/?org=Nowhere")
    assert "unknown state" in html(ui, "/ui/?state=sunny", status=400)


def test_a_server_with_an_open_replacement_shows_its_reasons(estate, ui):
    page = html(ui, "/ui/")
    doomed = page.split(">Doomed</a>", 1)[1].split("</tr>", 1)[0]
    assert '<span class="reasons">password changed</span>' in doomed
    rotating = page.split(">Rotating</a>", 1)[1].split("</tr>", 1)[0]
    assert '<span class="reasons">key regenerated</span>' in rotating


def test_the_stylesheet_colours_every_state_the_pages_name():
    from importlib import resources

    css = resources.files("worker.ui").joinpath("static/style.css").read_text()
    for state in STATES:
        assert f".state-{state.replace(' ', '-')} {{ --state:" in css
