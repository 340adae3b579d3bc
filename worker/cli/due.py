"""`tokenwarden tokens due`: the renewal plan (worker/rules/renewal_plan.py), as a table, JSON,
or an iCalendar feed to subscribe to (worker/renewal_feed.py)."""

from __future__ import annotations

import click

from worker.bootstrap import App
from worker.cli.files import OutputFile
from worker.cli.output import json_option, note, pass_app, print_json, print_table
from worker.rules.renewal_plan import DEFAULT_WITHIN_DAYS, MAX_WITHIN_DAYS, MIN_WITHIN_DAYS
from worker.services.renewal_plan import renewal_feed, renewal_plan
from worker.timefmt import format_rfc3339


@click.command("due")
@click.option(
    "--within",
    type=click.IntRange(MIN_WITHIN_DAYS, MAX_WITHIN_DAYS),
    default=None,
    metavar="DAYS",
    help=f"What falls due in the next DAYS days, the overdue included ({MIN_WITHIN_DAYS}-"
    f"{MAX_WITHIN_DAYS}); default {DEFAULT_WITHIN_DAYS}, with --ical every server.",
)
@click.option("--org", default=None, help="Only the servers of this organization.")
@json_option
@click.option("--ical", is_flag=True, help="Write the plan as an iCalendar feed (.ics).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --ical: write the feed to this file (replaced whole) instead of stdout.",
)
@pass_app
def due(
    app: App, within: int | None, org: str | None, as_json: bool, ical: bool, output: str | None
) -> None:
    """What must be renewed, soonest due first: each server's renewal date under its rotation
    policy, its owners, whether a new key is staged, and whether the renewal is open."""
    if ical and as_json:
        raise click.UsageError("give --ical or --json, not both")
    if output is not None and not ical:
        raise click.UsageError("-o/--output writes the --ical feed; give --ical with it")
    if ical:
        _write_feed(app, within, org, output)
        return
    days = DEFAULT_WITHIN_DAYS if within is None else within
    entries = renewal_plan(app.store, app.listings, app.now(), within_days=days, org=org)
    if as_json:
        print_json([e.describe() for e in entries])
        return
    where = f" in organization {org.strip()!r}" if org else ""
    print_table(
        ("DUE", "DAYS", "SERVER", "ORG", "EXPIRES", "OWNERS", "NEW KEY", "STATE"),
        [
            (
                e.due_date.isoformat(),
                e.days_until_due,
                e.server,
                e.org or "-",
                format_rfc3339(e.expires_at),
                ", ".join(e.policy.owners) or "-",
                e.new_key,
                e.state,
            )
            for e in entries
        ],
        empty=f"nothing is due for renewal{where} in the next {days} days",
    )


def _write_feed(app: App, within: int | None, org: str | None, output: str | None) -> None:
    """The feed to stdout, or to `output`: checked before the estate is read, written whole."""
    target = OutputFile(output, "the calendar feed") if output is not None else None
    try:
        feed = renewal_feed(app.store, app.listings, app.now(), within_days=within, org=org)
    except BaseException:
        if target is not None:
            target.discard()
        raise
    if target is None:
        click.echo(feed, nl=False)
        return
    target.write(feed)
    note(f"wrote the calendar feed ({feed.count(b'BEGIN:VEVENT')} events) to {output}")
