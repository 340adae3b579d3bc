"""`tokenwarden subscriptions ...`: who is told about outgoing events (webhooks, e-mail)."""

from __future__ import annotations

import json
import sys

import click

from events.cloudevent import outgoing_event
from worker.bootstrap import App
from worker.cli.output import json_option, note, pass_app, print_json, print_table
from worker.errors import InvalidInput, NotFound
from worker.names import name_key
from worker.notify.email import compose, send_email
from worker.notify.subscriptions import (
    EMAIL,
    Subscription,
    check_secret,
    generate_secret,
    parse_target,
    parse_types,
)
from worker.notify.webhook import post_event
from worker.registry import new_id
from worker.timefmt import format_rfc3339, utc_now

#: The type of the event `subscriptions test` sends.
TEST_EVENT_TYPE = "tokenwarden.subscription.test"


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
    app.deliveries.add_subscription(subscription, chosen)
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
    described = [describe(s) for s in app.deliveries.subscriptions()]
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
    subscription = _get(app, subscription_id)
    described = describe(subscription)
    if reveal_url:
        described["target"] = app.deliveries.open_target(subscription)
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
    if not app.deliveries.remove_subscription(subscription_id):
        raise NotFound(
            f"no subscription {subscription_id!r}; `tokenwarden subscriptions list` shows them"
        )
    click.echo(f"removed subscription {subscription_id}")


@group.command("enable")
@click.argument("subscription_id")
@pass_app
def enable(app: App, subscription_id: str) -> None:
    """Enable a subscription again (one disabled after its receiver answered 410 Gone)."""
    _get(app, subscription_id)
    app.deliveries.enable_subscription(subscription_id)
    click.echo(f"enabled subscription {subscription_id}")


@group.command("test")
@click.argument("subscription_id")
@pass_app
def test(app: App, subscription_id: str) -> None:
    """Send a signed test event now and say what the receiver answered."""
    subscription = _get(app, subscription_id)
    now = utc_now()
    event = outgoing_event(
        TEST_EVENT_TYPE,
        event_id=new_id("test"),
        subject="test",
        time=now,
        data={"subscription": subscription.id, "message": "a test from tokenwarden"},
    )
    body = json.dumps(event, separators=(",", ":"))
    settings = app.settings.notify
    if subscription.kind == EMAIL:
        if settings.smtp is None:
            raise InvalidInput("TOKENWARDEN_SMTP_HOST is not set; e-mail cannot be sent")
        result = send_email(
            settings.smtp,
            compose(event, settings.smtp.sender, subscription.target),
            settings.webhook_timeout_s,
        )
    else:
        result = post_event(
            app.deliveries.open_target(subscription),
            app.deliveries.open_secret(subscription),
            event["id"],
            body,
            now,
            settings.webhook_timeout_s,
        )
    if not result.ok:
        raise InvalidInput(
            f"the test to {subscription.id} failed: {result.error} after {result.latency_ms:.0f} ms"
        )
    click.echo(f"delivered: {result.status} in {result.latency_ms:.0f} ms")


def _warn_unknown_filters(app: App, subscription: Subscription) -> None:
    """A filter naming nothing known yet is allowed (the server may come later), but said."""
    servers = list(app.store.iter_servers()) if subscription.org or subscription.server else []
    if subscription.org and not any(name_key(s.org) == name_key(subscription.org) for s in servers):
        note(f"warning: no server belongs to organization {subscription.org!r} yet")
    if subscription.server and not any(
        name_key(s.name) == name_key(subscription.server) for s in servers
    ):
        note(f"warning: there is no server named {subscription.server!r} yet")


def _get(app: App, subscription_id: str) -> Subscription:
    subscription = app.deliveries.get_subscription(subscription_id)
    if subscription is None:
        raise NotFound(
            f"no subscription {subscription_id!r}; `tokenwarden subscriptions list` shows them"
        )
    return subscription


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
