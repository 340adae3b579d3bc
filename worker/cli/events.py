"""`tokenwarden events ...`: the audit trail and the dead letters."""

from __future__ import annotations

import click

from worker.bootstrap import App
from worker.cli.output import json_option, pass_app, print_json, print_table
from worker.services import estate

limit_option = click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="Newest entries shown.",
)


@click.group("events")
def group() -> None:
    """What tokenwarden received and decided."""


@group.command("list")
@limit_option
@json_option
@pass_app
def list_events(app: App, limit: int, as_json: bool) -> None:
    """Events received and decisions made, newest first."""
    entries = estate.audit(app.store, limit)
    if as_json:
        print_json(entries)
        return
    rows = []
    for entry in entries:
        event = entry["event"]
        what = _label(entry["kind"], event)
        about = (
            (event.get("data") or {}).get("user")
            or (event.get("data") or {}).get("server")
            or event.get("server", "")
        )
        decided = (
            "; ".join(f"{d.get('server', '?')}: {d.get('action')}" for d in entry["decisions"])
            or entry.get("note")
            or "no effect"
        )
        rows.append((entry["at"], what, about, decided))
    print_table(("AT", "WHAT", "ABOUT", "DECISION"), rows, empty="nothing received yet")


#: What an audit entry that is not an incoming event shows in the WHAT column.
_KIND_LABELS = {"install": "token installed"}


def _label(kind: str, event: dict) -> str:
    """Incoming events and scheduler warnings by their type; other entries by what happened."""
    if kind in {"event", "scan"}:
        return event.get("type") or kind
    if kind == "apple" and isinstance(event.get("apple"), list):
        return "apple: " + ", ".join(str(what).replace("_", " ") for what in event["apple"])
    return _KIND_LABELS.get(kind, kind)


@group.command("dead")
@limit_option
@json_option
@pass_app
def dead(app: App, limit: int, as_json: bool) -> None:
    """Events that could not be handled, with the reason, newest first."""
    entries = estate.dead_letters(app.store, limit)
    if as_json:
        print_json(entries)
        return
    rows = [(e["at"], e["reason"], e["payload"][:60].replace("\n", " ")) for e in entries]
    print_table(("AT", "REASON", "PAYLOAD"), rows, empty="no dead letters")
