"""`tokenwarden replacements list`: tokens that must be replaced, and why."""

from __future__ import annotations

import click

from worker.bootstrap import App
from worker.cli.output import json_option, pass_app, print_json, print_table
from worker.records import Replacement, Server, Token
from worker.services import estate
from worker.timefmt import format_rfc3339


@click.group("replacements")
def group() -> None:
    """Tokens that must be replaced."""


@group.command("list")
@click.option("--all", "include_all", is_flag=True, help="Include resolved replacements.")
@json_option
@pass_app
def list_replacements(app: App, include_all: bool, as_json: bool) -> None:
    """Open replacements (with --all, resolved ones too), oldest first."""
    found = estate.replacements(app.store, include_resolved=include_all)
    described = [describe(r, server, token) for r, server, token in found]
    if as_json:
        print_json(described)
        return
    rows = [
        (
            d["server"],
            d["status"],
            d["urgency"],
            d["opened_at"],
            d["because"],
            d["downloaded_by"] or "-",
        )
        for d in described
    ]
    print_table(
        ("SERVER", "STATUS", "URGENCY", "OPENED", "REASONS", "DOWNLOADED BY"),
        rows,
        empty="no open replacements" if not include_all else "no replacements",
    )


def describe(replacement: Replacement, server: Server | None, token: Token | None) -> dict:
    reasons = [{k: v for k, v in r.items() if k != "rank"} for r in replacement.reasons]
    return {
        "server": server.name if server else None,
        "org": (server.org or None) if server else None,
        "token_id": replacement.token_id,
        "status": replacement.status,
        "urgency": replacement.most_urgent.get("urgency"),
        "reasons": reasons,
        "because": replacement.label(times=True),
        "event_count": replacement.event_count,
        "omitted_events": replacement.omitted,
        "opened_at": replacement.opened_at,
        "resolved_at": replacement.resolved_at,
        "resolved_by_token_id": replacement.resolved_by,
        "downloaded_by": token.downloaded_by if token else None,
        "expires_at": format_rfc3339(token.expires_at) if token else None,
    }
