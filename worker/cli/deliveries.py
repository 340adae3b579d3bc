"""`tokenwarden deliveries ...`: each outgoing event's delivery to each subscription."""

from __future__ import annotations

import click

from worker.bootstrap import App
from worker.cli.output import json_option, pass_app, print_json, print_table
from worker.services import notifications
from worker.timefmt import utc_now


@click.group("deliveries")
def group() -> None:
    """Deliveries of outgoing events, their attempts and their failures."""


@group.command("list")
@click.option("--failed", is_flag=True, help="Only deliveries that gave up.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@json_option
@pass_app
def list_deliveries(app: App, failed: bool, limit: int, as_json: bool) -> None:
    """Newest first."""
    described = notifications.deliveries(app.deliveries, failed_only=failed, limit=limit)
    if as_json:
        print_json(described)
        return
    rows = [
        (
            d["id"],
            d["subscription"],
            d["target"],
            d["event_type"].rsplit(".", 1)[-1],
            d["status"],
            d["attempts"],
            d["last_status"] or "-",
            d["next_attempt_at"] or "-",
        )
        for d in described
    ]
    print_table(
        ("ID", "SUBSCRIPTION", "TARGET", "EVENT", "STATUS", "ATTEMPTS", "LAST", "NEXT"),
        rows,
        empty="no failed deliveries" if failed else "no deliveries yet",
    )


@group.command("retry")
@click.argument("delivery_id")
@pass_app
def retry(app: App, delivery_id: str) -> None:
    """Deliver a failed delivery again, with a fresh retry schedule."""
    notifications.retry_delivery(app.deliveries, delivery_id, utc_now())
    click.echo(f"delivery {delivery_id} will be attempted again within a second or two")
