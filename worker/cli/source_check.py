"""`tokenwarden sources check NAME`: one round of a directory source now, and what it found
about each watched user."""

from __future__ import annotations

import sys

import click

from worker.bootstrap import App
from worker.cli.output import json_option, note, pass_app, print_json, print_table
from worker.errors import InvalidInput
from worker.rules.directory import Finding
from worker.services import sources as service
from worker.services.directory_checks import RoundReport
from worker.timefmt import format_rfc3339

#: Exit codes: nothing changed; something changed (or the round looked misconfigured); the
#: directory refused the credential; the directory could not be reached.
NOTHING_CHANGED, CHANGED, CREDENTIAL_REFUSED, UNREACHABLE = 0, 1, 2, 3


@click.command("check")
@click.argument("name")
@click.option(
    "--confirm-departures",
    is_flag=True,
    help="Send the departures of the people the directory does not know even when they are "
    "most of those asked about (held back otherwise, as a sign of a wrong --domain).",
)
@json_option
@pass_app
def check(app: App, name: str, confirm_departures: bool, as_json: bool) -> None:
    """Ask NAME's directory about every watched user now; send what changed to the workers.
    Exit 0: nothing changed; 1: something changed; 2: the credential was refused; 3: the
    directory could not be reached."""
    source = service.find_source(app.sources, name)
    if not source.polls:
        raise InvalidInput(
            f"source {source.name!r} ({source.kind}) pushes over HTTP; only the directories "
            "tokenwarden asks (okta-api, entra, google) can be checked"
        )
    report = app.directory_checker.run_round(
        source, keep_findings=True, confirm_departures=confirm_departures
    )
    if as_json:
        print_json(_as_json(report))
    else:
        _print(report)
    sys.exit(exit_code(report))


def exit_code(report: RoundReport) -> int:
    if report.error is not None:
        return getattr(report.error, "exit_code", CHANGED)
    return CHANGED if report.changed else NOTHING_CHANGED


def _print(report: RoundReport) -> None:
    print_table(
        ("USER", "DIRECTORY LOGIN", "FOUND", "DETAIL", "SENT"),
        [(f.user, f.login, f.outcome, f.detail, _sent(f)) for f in report.findings],
        empty="nobody to ask about: no current token was downloaded by a user of its domains",
    )
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(report.counts.items()))
    note(
        f"{report.watched} watched user(s) ({counts or 'none'}); {report.events} event(s) "
        f"sent; {report.requests} request(s) in {report.seconds:.1f} s"
    )
    if report.held_back:
        note(f"{report.held_back} departure(s) of users not found were not sent")
    if report.error is not None:
        note(f"error: {report.error}")


def _sent(finding: Finding) -> str:
    return finding.event.type.rsplit(".", 1)[-1] if finding.event else "-"


def _time(finding: Finding) -> str | None:
    return format_rfc3339(finding.event.time) if finding.event and finding.event.time else None


def _as_json(report: RoundReport) -> dict:
    return {
        "source": report.source,
        "kind": report.kind,
        "watched": report.watched,
        "counts": dict(report.counts),
        "events": report.events,
        "held_back": report.held_back,
        "requests": report.requests,
        "seconds": round(report.seconds, 3),
        "error": str(report.error) if report.error else None,
        "findings": [
            {
                "user": f.user,
                "login": f.login,
                "outcome": f.outcome,
                "detail": f.detail,
                "event": {"type": f.event.type, "id": f.event.id, "time": _time(f)}
                if f.event
                else None,
            }
            for f in report.findings
        ],
    }
