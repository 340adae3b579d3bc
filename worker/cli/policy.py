"""`tokenwarden servers policy`, `orgs policy` and `policy`: the rotation policy of a server,
the default of an organization, and the global default (worker/rules/policy.py).

Without options each shows the policy; with them it sets what they name and keeps the rest;
`--clear` removes the layer, so the one below applies again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from worker import policies, registry
from worker.bootstrap import App
from worker.cli.output import note, org_option, pass_app, print_json
from worker.rules import policy
from worker.rules.policy import Policy, PolicyLayer
from worker.rules.policy_change import PolicyTarget
from worker.services import estate


def policy_options(command: Callable) -> Callable:
    options = (
        click.option(
            "--renew-before",
            type=int,
            metavar="DAYS",
            help=f"Days before expiry to renew (default {policy.DEFAULT_RENEW_BEFORE_DAYS}).",
        ),
        click.option(
            "--rotate-key",
            type=click.Choice(policy.ROTATE_CHOICES),
            help="Make a new key pair with each renewal (always), or keep the key (never).",
        ),
        click.option(
            "--owner",
            "owners",
            multiple=True,
            metavar="EMAIL",
            help="Who is told about the server's events; repeat for more (replaces the list).",
        ),
        click.option("--clear", is_flag=True, help="Remove this override."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
    )
    for option in reversed(options):
        command = option(command)
    return command


def _change(
    renew_before: int | None, rotate_key: str | None, owners: tuple[str, ...]
) -> PolicyLayer:
    return PolicyLayer(
        renew_before_days=None
        if renew_before is None
        else policies.check_renew_before(renew_before),
        rotate_key=rotate_key,
        owners=policies.check_owners(owners) if owners else None,
    )


@click.command("policy")
@click.argument("name")
@org_option
@policy_options
@pass_app
def server_policy(app: App, name: str, org: str | None, **given: Any) -> None:
    """Show or set the rotation policy of server NAME (its own override)."""
    server = registry.resolve_server(app.store, name, org)
    target = policies.server_target(server)
    _show_or_set(app, target, given)


@click.group("orgs")
def orgs_group() -> None:
    """Organizations: the defaults their servers inherit."""


@orgs_group.command("policy")
@click.argument("org")
@policy_options
@pass_app
def org_policy(app: App, org: str, **given: Any) -> None:
    """Show or set the default rotation policy of organization ORG's servers."""
    servers = estate.servers(app.listings)
    target = policies.org_target(servers, org, policies.stored_layers(app.store))
    _show_or_set(app, target, given)


@click.command("policy")
@policy_options
@pass_app
def global_policy(app: App, **given: Any) -> None:
    """Show or set the global default rotation policy (below organizations' defaults)."""
    _show_or_set(app, policies.GLOBAL_TARGET, given)


def _show_or_set(app: App, target: PolicyTarget, given: dict[str, Any]) -> None:
    as_json, clear = given.pop("as_json"), given.pop("clear")
    change = _change(given["renew_before"], given["rotate_key"], given["owners"])
    result = None
    if clear or not change.is_empty:
        result = policies.set_policy(app.store, target, change, clear=clear, now=app.now())
    layer = result.after if result else policies.layer_of(app.store, target)
    in_force = policies.in_force_below(app.store, target)
    if as_json:
        described: dict[str, Any] = {**target.describe(), "layer": layer.describe()}
        described["in_force"] = in_force.describe()
        if result is not None:
            described["changed"] = result.changed
        print_json(described)
        return
    _print(target, layer, in_force, result)


def _print(target: PolicyTarget, layer: PolicyLayer, in_force: Policy, result) -> None:
    who = {
        policy.SERVER: f"server {target.subject!r}",
        policy.ORG: f"organization {target.subject!r}",
        policy.GLOBAL: "the global default",
    }[target.kind]
    if result is not None:
        verb = "cleared" if result.after.is_empty else "set"
        click.echo(
            f"{verb} the rotation policy of {who}" + ("" if result.changed else " (no change)")
        )
    else:
        click.echo(f"rotation policy of {who}" + (" (nothing set here)" if layer.is_empty else ""))
    sources = in_force.sources
    owners = ", ".join(in_force.owners) or "nobody named"
    click.echo(
        f"  renew before:  {in_force.renew_before_days} days  ({sources['renew_before_days']})"
    )
    click.echo(f"  rotate key:    {in_force.rotate_key}  ({sources['rotate_key']})")
    click.echo(f"  owners:        {owners}  ({sources['owners']})")
    if result is not None and result.changed:
        note("applies at the next scan; no restart needed")
