"""`tokens due --ical`: the renewal plan as an iCalendar feed, read back with the `icalendar`
library as a calendar client would: one event per server on its renewal day, the same UID
from one render to the next, and a later day with a higher SEQUENCE once a new token is in."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from icalendar import Calendar

from tests.helpers import DOWNLOADED, install
from worker import registry
from worker.policies import org_target, server_target, set_policy
from worker.rules.policy import PolicyLayer

CONSUMER = "CK_" + "f" * 96  # the consumer key tests/helpers.install puts in each token


@pytest.fixture
def estate(app, cli, clock, tmp_path):
    """Lab (North: renewed 60 days before, rotating keys, one owner), Gym (North: the
    organization's two owners), Annex (no organization), Spare (no token)."""
    for name, org, days in (("Lab", "North", 100), ("Gym", "North", 40), ("Annex", None, 200)):
        assert cli("servers", "add", name, *(["--org", org] if org else [])).exit_code == 0
        install(cli, clock, tmp_path, name, f"admin@{name.lower()}.example", DOWNLOADED, days)
    assert cli("servers", "add", "Spare").exit_code == 0
    lab = registry.resolve_server(app.store, "Lab")
    layer = PolicyLayer(renew_before_days=60, rotate_key="always", owners=("lead@north.example",))
    set_policy(app.store, server_target(lab), layer, clear=False, now=clock.now)
    owners = PolicyLayer(owners=("it@north.example", "ops@north.example"))
    set_policy(app.store, org_target([lab], "North"), owners, clear=False, now=clock.now)
    return {name: registry.resolve_server(app.store, name).id for name in ("Lab", "Gym", "Annex")}


def feed(cli, *args) -> Calendar:
    result = cli("tokens", "due", "--ical", *args)
    assert result.exit_code == 0, result.output
    return Calendar.from_ical(result.stdout_bytes)


def events(calendar: Calendar) -> dict[str, object]:
    return {str(e["uid"]): e for e in calendar.walk("VEVENT")}


def day(clock, days) -> date:
    return (clock.now + timedelta(days=days)).date()


def test_the_feed_holds_one_all_day_event_per_server_on_its_renewal_day(cli, clock, estate):
    calendar = feed(cli)
    assert str(calendar["version"]) == "2.0"
    assert "tokenwarden" in str(calendar["prodid"])
    assert str(calendar["x-wr-calname"]) == "Server token renewals"
    found = events(calendar)
    assert sorted(found) == sorted(f"{i}@tokenwarden" for i in estate.values())  # not Spare
    expected = {"Lab": day(clock, 40), "Gym": day(clock, 10), "Annex": day(clock, 170)}
    for name, server_id in estate.items():
        event = found[f"{server_id}@tokenwarden"]
        assert event.decoded("dtstart") == expected[name], name
        assert event.decoded("dtend") == expected[name] + timedelta(days=1)
        assert str(event["summary"]).startswith(f"Renew the server token of {name}")
        assert event.decoded("dtstamp") == clock.now


def test_an_event_says_expiry_owners_and_steps(cli, estate):
    found = events(feed(cli))
    lab = found[f"{estate['Lab']}@tokenwarden"]
    assert str(lab["summary"]) == "Renew the server token of Lab (North)"
    text = str(lab["description"])
    assert "expires 2025-06-09T09:00:00Z" in text
    assert "60 days before expiry" in text
    assert "Owners: lead@north.example." in text
    assert "upload its certificate" in text
    assert 'tokenwarden keys export "Lab" --org "North"' in text
    assert 'tokenwarden tokens install "Lab" --org "North"' in text
    assert str(lab["contact"]) == "lead@north.example"
    gym = found[f"{estate['Gym']}@tokenwarden"]
    assert [str(c) for c in gym["contact"]] == ["it@north.example", "ops@north.example"]
    assert "The key is kept" in str(gym["description"])
    assert "keys export" not in str(gym["description"])
    assert "contact" not in found[f"{estate['Annex']}@tokenwarden"]


def test_the_feed_holds_no_secret(cli, app, estate):
    raw = cli("tokens", "due", "--ical").stdout_bytes
    assert CONSUMER.encode() not in raw and b"CK_" not in raw
    assert b"PRIVATE KEY" not in raw and b"CERTIFICATE" not in raw
    assert app.settings.master_key.encode() not in raw


def test_uids_stay_the_same_from_one_render_to_the_next(cli, clock, estate):
    first = events(feed(cli))
    clock.now += timedelta(hours=5)
    second = events(feed(cli))
    assert sorted(first) == sorted(second)
    for uid, event in second.items():
        assert event.decoded("dtstart") == first[uid].decoded("dtstart")
        assert event["sequence"] == first[uid]["sequence"]
        assert event.decoded("dtstamp") == clock.now


def test_a_new_token_moves_the_same_event_later_with_a_higher_sequence(
    cli, clock, tmp_path, estate
):
    before = events(feed(cli))[f"{estate['Gym']}@tokenwarden"]
    clock.now += timedelta(days=3)
    install(cli, clock, tmp_path, "Gym", "admin@gym.example", clock.now - timedelta(hours=1), 365)
    after = events(feed(cli))[f"{estate['Gym']}@tokenwarden"]
    assert after.decoded("dtstart") == day(clock, 365 - 30)
    assert after.decoded("dtstart") > before.decoded("dtstart")
    assert after["sequence"] > before["sequence"]
    assert after.decoded("last-modified") > before.decoded("last-modified")


def test_within_and_org_choose_the_events(cli, estate):
    assert sorted(events(feed(cli, "--within", "30"))) == [f"{estate['Gym']}@tokenwarden"]
    north = feed(cli, "--org", "north")
    assert str(north["x-wr-calname"]) == "Server token renewals: north"
    assert sorted(events(north)) == sorted(f"{estate[name]}@tokenwarden" for name in ("Lab", "Gym"))


def test_output_writes_the_feed_to_a_file_whole(cli, tmp_path, estate):
    target = tmp_path / "renewals.ics"
    target.write_text("an older feed")
    result = cli("tokens", "due", "--ical", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "wrote the calendar feed (3 events)" in result.stderr
    assert len(Calendar.from_ical(target.read_bytes()).walk("VEVENT")) == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".renewals")] == []


def test_output_to_a_directory_or_a_device_is_refused_in_one_line(cli, tmp_path, estate):
    result = cli("tokens", "due", "--ical", "-o", str(tmp_path))
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "is a directory" in line
    result = cli("tokens", "due", "--ical", "-o", "/dev/null")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: /dev/null is a device; the calendar feed is written only to a regular file or "
        "a new path"
    ]


def test_an_empty_plan_is_an_empty_calendar(cli, estate):
    calendar = feed(cli, "--within", "0")
    assert calendar.walk("VEVENT") == []
    assert str(calendar["version"]) == "2.0"
