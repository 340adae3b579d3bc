"""The scheduler's commands, registered with `tokenwarden` through the `tokenwarden.commands`
entry point (so the worker package never imports the scheduler)."""

from __future__ import annotations

import sys
from datetime import datetime

import click

from scheduler.scan import Scanner
from scheduler.service import SchedulerService
from worker import policies
from worker.bootstrap import App
from worker.cli.output import RFC3339, json_option, note, pass_app, print_json, print_table
from worker.rules import status
from worker.services import estate
from worker.services import sources as sources_service
from worker.signals import StopSignals
from worker.timefmt import format_rfc3339


@click.command("scheduler")
@pass_app
def scheduler_command(app: App) -> None:
    """Run the periodic expiry scan (one replica acts at a time) until SIGINT/SIGTERM."""
    estate.check_reachable(app.store)
    stop = StopSignals()
    service = SchedulerService(app)
    service.start()
    try:
        stop.wait()
    finally:
        service.stop()


@click.command("scan")
@click.option(
    "--now",
    "at",
    type=RFC3339(),
    default=None,
    help="Scan as if it were this time (RFC 3339); default now.",
)
@click.option("--dry-run", is_flag=True, help="Print what would be sent; change nothing.")
@json_option
@pass_app
def scan_command(app: App, at: datetime | None, dry_run: bool, as_json: bool) -> None:
    """Run one expiry scan and exit (for cron, tests and previews)."""
    now = app.now()
    if at is not None and at > now and not dry_run:
        # A real scan "in the future" sends expiry notices early and records them as sent,
        # so the real ones would never come.
        raise click.UsageError(
            f"--now {format_rfc3339(at)} is in the future; add --dry-run to preview that date "
            "(only a past or present --now may change anything)",
            click.get_current_context(),
        )
    thresholds = app.settings.scheduler.thresholds
    report = Scanner(app.store, thresholds).scan(at or now, dry_run=dry_run)
    if not dry_run:
        app.estate_metrics.record_scan(app.now())
    described = [w.describe() for w in report.warnings]
    if as_json:
        print_json(
            {
                "dry_run": dry_run,
                "examined": report.examined,
                "warnings": described,
                "renewals_opened": report.renewals,
                "keys_staged": report.keys_staged,
            }
        )
        return
    verb = "would send" if dry_run else "sent"
    rows = [
        (
            d["server"],
            d["type"].rsplit(".", 1)[-1],
            d["threshold_days"] or "-",
            d["days_left"],
            d["expires_at"],
            d["downloaded_by"],
        )
        for d in described
    ]
    print_table(
        ("SERVER", "WARNING", "THRESHOLD", "DAYS LEFT", "EXPIRES", "DOWNLOADED BY"),
        rows,
        empty=f"no warning to send ({report.examined} tokens looked at)",
    )
    if described:
        click.echo(f"{verb} {len(described)} warnings ({report.examined} tokens looked at)")
    if report.renewals:
        opened = "would open" if dry_run else "opened"
        keys = "" if dry_run else f" ({report.keys_staged} new key pairs staged)"
        click.echo(f"{opened} {report.renewals} scheduled renewals{keys}")


@click.command("status")
@json_option
@pass_app
def status_command(app: App, as_json: bool) -> None:
    """Every server, its token's expiry and open replacements, most urgent first.

    Exit code: 0 all fine; 1 something to do: a token due for renewal (its policy's
    renew-before reached) or to be replaced, a server without a token, or Apple's new terms
    waiting; 2 something expired or no longer working (Apple rejected it, say).
    """
    thresholds = app.settings.scheduler.thresholds
    now = app.now()
    current = list(estate.current_state(app.store, app.listings))
    in_force = policies.in_force_for(app.store, [server for server, _, _ in current])
    interval = app.settings.apple.check_interval_s
    rows = [
        status.row_for(server, token, replacement, now, thresholds, interval, in_force[server.id])
        for server, token, replacement in current
    ]
    rows = status.ordered(rows)
    described = [r.describe() for r in rows]
    if as_json:
        print_json(described)
    else:
        _print_status(described)
    failing = _failing_sources(app)
    for line in failing:
        note(line)
    sys.exit(max(status.verdict(rows), 1 if failing else 0))


def _print_status(described: list[dict]) -> None:
    table = [
        (
            d["server"],
            d["org"] or "-",
            d["state"],
            d["expires_at"] or "-",
            "-" if d["days_left"] is None else d["days_left"],
            d["downloaded_by"] or "-",
            _apple_cell(d["apple"]),
            (d["replacement"] or {}).get("because") or "-",
        )
        for d in described
    ]
    print_table(
        (
            "SERVER",
            "ORG",
            "STATE",
            "EXPIRES",
            "DAYS",
            "DOWNLOADED BY",
            "APPLE (LAST CONFIRMED)",
            "REPLACE BECAUSE",
        ),
        table,
        empty="no servers yet",
    )


def _failing_sources(app: App) -> list[str]:
    """One line per directory source reported failing (its people's changes go unseen)."""
    listed = [s for s in sources_service.list_sources(app.sources) if s.polls]
    states = sources_service.poll_states(app.sources, listed)
    return [
        f"source {s.name} ({s.kind}) failing since "
        f"{format_rfc3339(states[s.name].failing_since)}: {states[s.name].error}"
        for s in listed
        if states[s.name].failing_since is not None
    ]


def _apple_cell(apple: dict | None) -> str:
    if apple is None:
        return "-"
    verdict = apple["verdict"].replace("_", " ")
    confirmed = apple["last_confirmed_at"]
    return f"{verdict} ({confirmed})" if confirmed else verdict
