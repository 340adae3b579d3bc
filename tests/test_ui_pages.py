"""The web pages (worker/ui/): what each shows of a real estate in Redis, served by uvicorn and
read over HTTP; that no secret and no inline script or style is on any of them."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from events import catalog
from events.cloudevent import new_event
from scheduler.scan import Scanner
from tests.helpers import install_on, private_key_forms, serving, wait_until
from worker.bootstrap import App
from worker.config_ui import UiSettings
from worker.intake.app import create_app
from worker.rules.status import STATES
from worker.store import keys as k
from worker.store.page_reads import SEPARATOR

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def settings(settings):
    return replace(settings, ui=UiSettings(enabled=True))


@pytest.fixture
def ui(app, cli):
    """`serve` with the pages on, on a free port; an HTTP client logged in as a viewer."""
    added = cli("viewers", "add", "tester", "--json")
    password = json.loads(added.stdout)["password"]
    with serving(create_app(app)) as url, httpx.Client(base_url=url) as client:
        answer = client.post("/ui/login", data={"name": "tester", "password": password})
        assert answer.status_code == 303, answer.text
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


def timeline_svg(ui) -> ET.Element:
    page = html(ui, "/ui/timeline")
    svg = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    return ET.fromstring(svg)  # well-formed XML, or this raises


def test_the_timeline_draws_a_mark_per_token_at_five_tokens_with_the_thresholds_as_bands(
    estate, ui
):
    svg = timeline_svg(ui)
    marks = svg.findall(f".//{SVG}circle")
    # Four tokens in the year ahead (one has expired, one server has none); and a fifth
    assert len(marks) == 4
    install_on(estate.store, "Empty", "e@school.edu", now=estate.now(), days=100)
    svg = timeline_svg(ui)
    marks = svg.findall(f".//{SVG}circle")
    assert len(marks) == 5
    states = sorted(m.get("data-state") for m in marks)
    assert states == ["due", "ok", "ok", "replace", "replace now"]
    for mark in marks:
        assert mark.get("class") == f"mark state-{mark.get('data-state').replace(' ', '-')}"
    titles = [m.find(f"{SVG}title").text for m in marks]
    assert any(t.startswith("Soon (South): expires 2025-04-05T09:00:00Z, due") for t in titles)
    # Each mark links to its server's page
    links = [a.get("href") for a in svg.findall(f".//{SVG}a")]
    assert len(links) == 5 and all(link.startswith("/ui/servers/srv_") for link in links)
    # One band per warning threshold (120, 60, 30, 14, 7, 3, 1 days), the widest first
    bands = svg.findall(f".//{SVG}rect[@class='band']")
    widths = [float(b.get("width")) for b in bands]
    assert len(bands) == 7 and widths == sorted(widths, reverse=True)
    assert not svg.findall(f".//{SVG}rect[@data-count]")
    assert "Expired already: 1." in html(ui, "/ui/timeline")


def test_the_timeline_counts_weeks_at_five_thousand_tokens(app, clock, ui):
    from tests.bench.common import load_tokens

    load_tokens(app, 5_000, due=100, now=clock.now)
    svg = timeline_svg(ui)
    assert not svg.findall(f".//{SVG}circle")
    bars = svg.findall(f".//{SVG}rect[@data-count]")
    assert sum(int(b.get("data-count")) for b in bars) == 5_000
    by_state = {}
    for bar in bars:
        by_state[bar.get("data-state")] = by_state.get(bar.get("data-state"), 0) + int(
            bar.get("data-count")
        )
        assert bar.get("class") == f"week state-{bar.get('data-state')}"
    assert by_state == {"due": 100, "ok": 4_900}
    # A bar per week holding tokens: the due ones expire in 25 days (week 3), the others
    # over days 200 to 299 (weeks 28 to 42); one state each here
    assert len(bars) == 1 + 15 == len({b.get("x") for b in bars})


def test_a_server_page_shows_its_open_replacement_with_its_reasons(estate, ui):
    doomed = estate.store.servers_named("Doomed")[0]
    page = html(ui, f"/ui/servers/{doomed.id}")
    assert '<h1>Doomed <span class="badge state-replace-now">replace now</span></h1>' in page
    opened = r"Replacement open since 2025-03-12T09:00:00Z</h2>\s*<p>Urgency: immediate. "
    assert re.search(opened + r'Reasons: <span class="reasons">password changed \(2025-03-12', page)
    rotating = estate.store.servers_named("Rotating")[0]
    page = html(ui, f"/ui/servers/{rotating.id}")
    assert "A new key pair is staged for this server" in page
    assert "key regenerated" in page


def test_a_certificate_downloads_as_pem_the_staged_one_while_a_rotation_waits(estate, ui):
    rotating = estate.store.servers_named("Rotating")[0]
    answer = ui.get(f"/ui/servers/{rotating.id}/certificate.pem")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/x-pem-file")
    assert answer.headers["content-disposition"] == 'attachment; filename="Rotating.pem"'
    certificate = x509.load_pem_x509_certificate(answer.content)
    staged = estate.store.get_key(rotating.staged_key_id)
    assert answer.text == staged.cert_pem and b"PRIVATE KEY" not in answer.content
    assert certificate.fingerprint(hashes.SHA256()).hex() == staged.fingerprint
    assert staged.id != rotating.current_key_id


def test_an_unknown_server_is_not_found(estate, ui):
    for path in ("/ui/servers/srv_0000000000000000", "/ui/servers/srv_x:keys",
                 "/ui/servers/nope/certificate.pem"):  # fmt: skip
        assert "No such server" in html(ui, path, status=404)


#: A webhook URL that carries secrets in its path and query, as chat tools' URLs do.
HOOK_PATH, HOOK_QUERY = "/hooks/PATHSECRET0f1e2d3c4b5a", "key=QUERYSECRET9a8b7c6d5e4f"


@pytest.fixture
def busy(app, cli, clock, receiver, worker):
    """A server with history: a token installed, a password change that dooms it, an expiry
    warning, deliveries to a receiver that always fails (retried, then failed), then a newer
    token; an event from a second source, and one that could not be handled. Also a push
    source and the webhook secret, to look for on the pages."""
    receiver.default = 500
    added = cli("subscriptions", "add", f"{receiver.url}{HOOK_PATH}?{HOOK_QUERY}", "--json")
    assert added.exit_code == 0, added.output
    source = cli("sources", "add", "hr", "--kind", "cloudevents", "--json")
    assert source.exit_code == 0, source.output
    add(cli, "Lab", "School")
    install_on(app.store, "Lab", "teacher@school.edu", now=clock.now, days=25,
               downloaded_at=clock.now - timedelta(days=1))  # fmt: skip
    handle(app, catalog.PASSWORD_CHANGED, {"user": "teacher@school.edu"}, clock)
    Scanner(app.store, app.settings.scheduler.thresholds).scan(clock.now)
    event = new_event(catalog.USER_LEFT, {"user": "nobody@school.edu"}, source="urn:test:okta")
    app.handler.handle_batch(
        [event.to_wire(), '{"specversion": "1.0", "not": "an event"'],
        received_at=clock.now,
        now=clock.now,
    )
    wait_until(
        lambda: len(app.deliveries.deliveries(failed_only=True)) >= 2,
        what="the deliveries to fail",
    )
    clock.now += timedelta(hours=1)
    install_on(app.store, "Lab", "teacher@school.edu", now=clock.now, days=300)
    return {
        "server": app.store.servers_named("Lab")[0],
        "webhook_secret": json.loads(added.stdout)["secret"],
        "source_secret": json.loads(source.stdout)["secret"],
    }


def test_a_server_page_shows_its_tokens_causes_decisions_warnings_and_deliveries(busy, ui):
    page = html(ui, f"/ui/servers/{busy['server'].id}")
    section = {
        title: page.split(f"<h2>{title}</h2>", 1)[1].split("</section>", 1)[0]
        for title in ("Tokens installed", "Replacements and their causes",
                      "Causes received and decisions", "Warnings sent", "Deliveries")
    }  # fmt: skip
    tokens = section["Tokens installed"]
    assert tokens.count('<tr class="token-current">') == 1
    assert tokens.count('<tr class="token-superseded">') == 1
    assert tokens.index("token-current") < tokens.index("token-superseded")  # newest first
    replaced = section["Replacements and their causes"]
    assert '<tr class="replacement-resolved">' in replaced
    assert "password changed (2025-03-01T09:00:00Z)" in replaced
    causes = section["Causes received and decisions"]
    assert re.search(r"<td>password changed</td><td>teacher@school.edu</td>"
                     r"<td>urn:test:hr</td><td>opened</td>", causes)  # fmt: skip
    assert causes.count("<td>token installed</td>") == 2
    assert "replacement resolved" in causes
    assert "nobody@school.edu" not in causes  # about someone else
    warnings = section["Warnings sent"]
    assert "<td>expiry approaching</td><td>25 days left</td>" in warnings
    deliveries = section["Deliveries"]
    assert deliveries.count('<tr class="delivery-failed">') >= 2
    assert "tokenwarden.token.replacement_required" in deliveries
    assert "tokenwarden.token.expiry_approaching" in deliveries
    assert re.search(r"<td>http://127\.0\.0\.1:\d+/…</td>", deliveries)
    assert "answered HTTP 500" in deliveries


def test_activity_lists_events_by_source_dead_letters_and_failing_deliveries(busy, ui):
    page = html(ui, "/ui/activity")
    sources = page.split('<table class="sources">', 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<tr><td>([^<]+)</td><td class=\"num\">(\d+)</td>", sources) == [
        ("urn:test:hr", "1"),
        ("urn:test:okta", "1"),
    ]
    latest = page.split('<table class="events">', 1)[1].split("</table>", 1)[0]
    assert latest.index("user left") < latest.index("password changed")  # newest first
    dead = page.split('<table class="dead">', 1)[1].split("</table>", 1)[0]
    assert dead.count("<tr><td>") == 1 and "an event" in dead
    failing = page.split("<h2>Failing deliveries</h2>", 1)[1].split("</section>", 1)[0]
    assert failing.count('<tr class="delivery-failed">') >= 2
    assert "answered HTTP 500" in failing


def every_page(ui, app) -> dict[str, str]:
    """Every page of the estate: the three lists and each server's page and certificate."""
    found = {path: html(ui, path) for path in ("/ui/", "/ui/timeline", "/ui/activity")}
    for server in app.listings.servers():
        path = f"/ui/servers/{server.id}"
        found[path] = html(ui, path)
        found[path + "/certificate.pem"] = ui.get(path + "/certificate.pem").text
    return found


def test_no_secret_is_on_any_page(busy, app, ui):
    server = busy["server"]
    secrets = [busy["webhook_secret"], busy["webhook_secret"].removeprefix("whsec_"),
               busy["source_secret"], HOOK_PATH, "PATHSECRET", "QUERYSECRET"]  # fmt: skip
    for token in app.store.tokens_of_server(server.id):
        if token.status == "current":
            credentials = app.store.open_credentials(token)
            secrets += [credentials[name] for name in ("consumer_secret", "access_token",
                                                        "access_secret")]  # fmt: skip
    for key in app.store.keys_of(server.id):
        private = app.store.open_key_material(key).private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        secrets += [form.decode("latin-1") for form in private_key_forms(private)]
    pages = every_page(ui, app)
    assert len(pages) == 5
    for path, text in pages.items():
        for secret in secrets:
            assert secret not in text, f"{path} shows a secret"
        assert "PRIVATE KEY" not in text


def test_no_page_has_an_inline_script_or_style(busy, estate, ui):
    for path, text in every_page(ui, estate).items():
        if path.endswith(".pem"):
            continue
        lowered = text.lower()
        assert "<script" not in lowered and "<style" not in lowered, path
        assert not re.search(r"\sstyle\s*=", lowered), path
        assert not re.search(r"\son[a-z]+\s*=", lowered), path  # no event handler attribute


def test_a_server_name_is_escaped_everywhere(app, cli, clock, ui):
    name = '<script>alert("name")</script>'
    add(cli, name, "<b>Org & Co</b>")
    install_on(app.store, name, "x@school.edu", now=clock.now, days=100)
    server = app.store.servers_named(name)[0]
    for path, text in every_page(ui, app).items():
        if path.endswith(".pem"):
            assert (
                'filename="script-alert-name-script.pem"'
                in ui.get(path).headers["content-disposition"]
            )
            continue
        assert "<script" not in text and "<b>Org" not in text, path
    assert "&lt;script&gt;alert(&#34;name&#34;)&lt;/script&gt;" in html(ui, "/ui/")
    assert "&lt;b&gt;Org &amp; Co&lt;/b&gt;" in html(ui, f"/ui/servers/{server.id}")
    title = timeline_svg(ui).find(f".//{SVG}circle/{SVG}title").text
    assert title.startswith(f"{name} (<b>Org & Co</b>): expires")


def test_a_value_holding_the_separator_of_the_estate_read_is_read_again_whole(app, cli, ui):
    add(cli, "Odd", "School")
    odd = app.store.servers_named("Odd")[0]
    # What Apple calls a server is stored as Apple sends it: it may hold any character
    app.redis.hset(k.server(odd.id), "apple_name", f"Odd{SEPARATOR}One")
    assert estate_rows(html(ui, "/ui/")) == [("no token", "Odd")]
    assert f"Odd{SEPARATOR}One" in html(ui, f"/ui/servers/{odd.id}")


def test_a_page_says_so_in_one_line_when_redis_cannot_be_reached(ui, app):
    """A viewer logged in; then serve loses Redis (the same settings, Redis elsewhere)."""
    gone = App(replace(app.settings, redis_url="redis://127.0.0.1:9/0"), clock=app.clock)
    cookie = "; ".join(f"{name}={value}" for name, value in ui.cookies.items())
    with serving(create_app(gone)) as url, httpx.Client(base_url=url) as client:
        for path in ("/ui/", "/ui/timeline", "/ui/activity", "/ui/servers/srv_1"):
            answer = client.get(path, headers={"cookie": cookie})
            assert answer.status_code == 503, path
            assert "tokenwarden cannot reach Redis just now" in answer.text
            assert "Traceback" not in answer.text
    gone.close()
