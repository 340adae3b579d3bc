"""`tokenwarden deliveries ...`: each outgoing event's delivery to each subscription."""

from __future__ import annotations

import click

from worker.bootstrap import App
from worker.cli.output import json_option, pass_app, print_json, print_table
from worker.errors import Conflict, NotFound
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
    found = app.deliveries.deliveries(failed_only=failed, limit=limit)
    targets = {s.id: s.shown for s in app.deliveries.subscriptions()} if found else {}
    described = [
        {**d.describe(), "target": targets.get(d.subscription_id, "(removed)")} for d in found
    ]
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
    delivery = app.deliveries.get_delivery(delivery_id)
    if delivery is None:
        raise NotFound(
            f"no delivery {delivery_id!r}; `tokenwarden deliveries list --failed` "
            "shows the failed ones"
        )
    subscription = app.deliveries.get_subscription(delivery.subscription_id)
    if subscription is None or subscription.status != "active":
        why = "was removed" if subscription is None else "is disabled (`subscriptions enable`)"
        raise Conflict(f"the subscription of delivery {delivery_id} {why}; it cannot be retried")
    if not app.deliveries.retry(delivery_id, utc_now()):
        raise Conflict(
            f"delivery {delivery_id} is {delivery.status}, not failed; only failed "
            "deliveries are retried by hand"
        )
    click.echo(f"delivery {delivery_id} will be attempted again within a second or two")
