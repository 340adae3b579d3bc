"""`tokenwarden subscriptions ...`: who is told about outgoing events (webhooks, e-mail)."""

from __future__ import annotations

import sys

import click

from worker.bootstrap import App
from worker.cli.output import json_option, note, pass_app, print_json, print_table
from worker.errors import InvalidInput
from worker.names import name_key
from worker.notify.subscriptions import (
    EMAIL,
    Subscription,
    check_secret,
    generate_secret,
    parse_target,
    parse_types,
)
from worker.registry import new_id
from worker.services import estate, notifications
from worker.timefmt import format_rfc3339, utc_now


@click.group("subscriptions")
def group() -> None:
    """Webhooks and e-mail addresses told about outgoing events."""


@group.command("add")
@click.argument("url")
@click.option(
    "--secret",
    default=None,
    help="Standard Webhooks secret (whsec_...), or '-' to read it from stdin (kept out of "
    "the shell history); by default one is generated.",
)
@click.option(
    "--types",
    default=None,
    help="Comma-separated types or prefixes ending in '.'; default: all outgoing.",
)
@click.option("--org", default=None, help="Only events about this organization.")
@click.option("--server", default=None, help="Only events about this server.")
@json_option
@pass_app
def add(
    app: App,
    url: str,
    secret: str | None,
    types: str | None,
    org: str | None,
    server: str | None,
    as_json: bool,
) -> None:
    """Subscribe URL (https://... for a webhook, mailto:... for e-mail)."""
    kind, target = parse_target(url)
    wanted = parse_types(types)
    if secret == "-":
        secret = sys.stdin.readline().strip()
    if kind == EMAIL:
        if secret:
            raise InvalidInput("--secret is for webhooks; e-mail subscriptions take none")
        chosen = None
    else:
        chosen = check_secret(secret) if secret else generate_secret()
    subscription = Subscription(
        id=new_id("sub"),
        kind=kind,
        target=target,
        types=wanted,
        created_at=app.now(),
        org=(org or "").strip(),
        server=(server or "").strip(),
    )
    _warn_unknown_filters(app, subscription)
    notifications.add_subscription(app.deliveries, subscription, chosen)
    described = describe(subscription)
    if as_json:
        print_json({**described, **({"secret": chosen} if chosen and not secret else {})})
    else:
        click.echo(f"added subscription {subscription.id}: {kind} {subscription.shown}")
    if chosen and not secret:
        if not as_json:
            click.echo(f"secret: {chosen}")
        note("the secret is shown this once: configure it in the receiver now")
    if kind == EMAIL and app.settings.notify.smtp is None:
        note("warning: TOKENWARDEN_SMTP_HOST is not set; e-mail cannot be sent until it is")


@group.command("list")
@json_option
@pass_app
def list_subscriptions(app: App, as_json: bool) -> None:
    """Every subscription (secrets and webhook URLs' paths are never shown)."""
    described = [describe(s) for s in notifications.subscriptions(app.deliveries)]
    if as_json:
        print_json(described)
        return
    rows = [
        (
            d["id"],
            d["kind"],
            d["target"],
            ",".join(d["types"]),
            d["status"],
            d["disabled_reason"] or "",
        )
        for d in described
    ]
    print_table(
        ("ID", "KIND", "TARGET", "TYPES", "STATUS", "WHY"),
        rows,
        empty="no subscriptions; add one with `tokenwarden subscriptions add URL`",
    )


@group.command("show")
@click.argument("subscription_id")
@click.option(
    "--reveal-url",
    is_flag=True,
    help="Show the webhook URL in full (its path or query may hold a secret).",
)
@json_option
@pass_app
def show(app: App, subscription_id: str, reveal_url: bool, as_json: bool) -> None:
    """One subscription; its webhook URL without the path unless --reveal-url."""
    subscription = notifications.subscription(app.deliveries, subscription_id)
    described = describe(subscription)
    if reveal_url:
        described["target"] = notifications.full_target(app.deliveries, subscription)
    if as_json:
        print_json(described)
        return
    for label, value in described.items():
        if isinstance(value, list):
            value = ",".join(value)
        click.echo(f"{label + ':':<16} {'-' if value is None else value}")


@group.command("remove")
@click.argument("subscription_id")
@pass_app
def remove(app: App, subscription_id: str) -> None:
    """Remove a subscription; its pending deliveries are cancelled."""
    notifications.remove_subscription(app.deliveries, subscription_id)
    click.echo(f"removed subscription {subscription_id}")


@group.command("enable")
@click.argument("subscription_id")
@pass_app
def enable(app: App, subscription_id: str) -> None:
    """Enable a subscription again (one disabled after its receiver answered 410 Gone)."""
    notifications.enable_subscription(app.deliveries, subscription_id)
    click.echo(f"enabled subscription {subscription_id}")


@group.command("test")
@click.argument("subscription_id")
@pass_app
def test(app: App, subscription_id: str) -> None:
    """Send a signed test event now and say what the receiver answered."""
    subscription = notifications.subscription(app.deliveries, subscription_id)
    result = notifications.send_test_event(
        app.deliveries, app.settings.notify, subscription, new_id("test"), utc_now()
    )
    if not result.ok:
        raise InvalidInput(
            f"the test to {subscription.id} failed: {result.error} after {result.latency_ms:.0f} ms"
        )
    click.echo(f"delivered: {result.status} in {result.latency_ms:.0f} ms")


def _warn_unknown_filters(app: App, subscription: Subscription) -> None:
    """A filter naming nothing known yet is allowed (the server may come later), but said."""
    wanted = subscription.org or subscription.server
    servers = estate.servers(app.listings) if wanted else []
    if subscription.org and not any(name_key(s.org) == name_key(subscription.org) for s in servers):
        note(f"warning: no server belongs to organization {subscription.org!r} yet")
    if subscription.server and not any(
        name_key(s.name) == name_key(subscription.server) for s in servers
    ):
        note(f"warning: there is no server named {subscription.server!r} yet")


def describe(subscription: Subscription) -> dict:
    """What may be shown: a webhook URL without its path and query."""
    return {
        "id": subscription.id,
        "kind": subscription.kind,
        "target": subscription.shown,
        "types": list(subscription.types),
        "org": subscription.org or None,
        "server": subscription.server or None,
        "status": subscription.status,
        "disabled_reason": subscription.disabled_reason or None,
        "created_at": format_rfc3339(subscription.created_at),
    }
