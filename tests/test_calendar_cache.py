"""The served calendar is drawn once for all its subscribers (for FEED_KEPT_S), and a
subscriber that has it already (If-None-Match) is answered 304 without it."""

from __future__ import annotations

from dataclasses import replace

import httpx

from tests.helpers import DOWNLOADED, install, serving
from worker.bootstrap import App
from worker.config import HttpSettings
from worker.intake.app import create_app

SECRET = "cal-" + "0123456789abcdef" * 3
PATH = "/calendar/renewals.ics"


def test_the_feed_is_drawn_once_and_a_subscriber_that_has_it_gets_304(
    settings, clock, redis_client, cli, tmp_path
):
    assert cli("servers", "add", "Lab").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "admin@lab.example", DOWNLOADED)
    app = App(replace(settings, http=HttpSettings(calendar_token=SECRET)), clock=clock)
    auth = {"Authorization": f"Bearer {SECRET}"}
    with serving(create_app(app)) as url:
        first = httpx.get(f"{url}{PATH}", headers=auth)
        assert first.status_code == 200 and first.headers["etag"]
        assert cli("servers", "add", "Gym").exit_code == 0  # the next drawing would differ
        install(
            cli, clock, tmp_path, "Gym", "admin@gym.example", DOWNLOADED, consumer="CK_" + "9" * 96
        )
        again = httpx.get(f"{url}{PATH}", headers=auth)
        assert again.content == first.content  # the same drawing answers
        assert b"Gym" in cli("tokens", "due", "--ical").stdout_bytes  # (drawn afresh: it is there)
        unchanged = httpx.get(
            f"{url}{PATH}", headers={**auth, "If-None-Match": first.headers["etag"]}
        )
        assert unchanged.status_code == 304 and unchanged.content == b""
        refused = httpx.get(f"{url}{PATH}", headers={"If-None-Match": first.headers["etag"]})
        assert refused.status_code == 401  # the cache is behind the secret
    app.close()
