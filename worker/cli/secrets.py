"""`tokenwarden secrets ...`: master keys for encryption at rest, and their rotation.

Rotation never makes a stored secret unreadable: a new key is added as primary while the old
ones stay for opening, everything is re-sealed under the new key, and old keys are dropped only
once no stored value needs them.
"""

from __future__ import annotations

from collections import Counter

import click

from worker.bootstrap import App
from worker.cli.output import json_option, note, pass_app, print_json
from worker.crypto.masterkey import write_key_file
from worker.crypto.sealing import generate_master_key
from worker.errors import ConfigError
from worker.services import estate


@click.group("secrets")
def group() -> None:
    """Master keys that encrypt private keys and token credentials at rest."""


@group.command("generate-key")
def generate_key() -> None:
    """Print a new master key (for TOKENWARDEN_MASTER_KEY)."""
    click.echo(generate_master_key())


@group.command("status")
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Where the master keys come from and which key seals how many stored secrets."""
    keyring = app.keyring()
    counts = Counter(_sealed_key_ids(app))
    described = {
        "source": "TOKENWARDEN_MASTER_KEY"
        if app.settings.master_key
        else str(app.settings.master_key_file),
        "primary_key_id": keyring.primary.key_id,
        "key_ids": keyring.key_ids,
        "sealed_values_by_key_id": dict(counts),
    }
    if as_json:
        print_json(described)
        return
    click.echo(f"master keys from: {described['source']}")
    click.echo(f"primary key:      {keyring.primary.key_id}")
    for key_id in keyring.key_ids[1:]:
        click.echo(f"older key:        {key_id} (opens only)")
    for key_id, count in sorted(counts.items()):
        click.echo(f"sealed under {key_id}: {count}")


@group.command("reencrypt")
@pass_app
def reencrypt(app: App) -> None:
    """Re-seal every stored secret under the primary master key."""
    report = estate.reseal_all(app.store)
    click.echo(
        f"re-sealed {report.resealed} of {report.examined} stored secrets under key "
        f"{app.keyring().primary.key_id}"
    )


@group.command("rotate-key")
@pass_app
def rotate_key(app: App) -> None:
    """Add a new primary key to master.key and re-seal everything under it."""
    if app.settings.master_key:
        raise ConfigError(
            "the master keys come from TOKENWARDEN_MASTER_KEY: generate one with `tokenwarden "
            "secrets generate-key`, set TOKENWARDEN_MASTER_KEY=NEW,OLD for every process, then "
            "run `tokenwarden secrets reencrypt`, then drop OLD"
        )
    path = app.settings.master_key_file
    old_keys = _key_file_lines(path, app)
    write_key_file(path, [generate_master_key(), *old_keys])
    keyring = app.reload_keyring()
    report = estate.reseal_all(app.store)
    click.echo(
        f"new primary key {keyring.primary.key_id}; re-sealed {report.resealed} of "
        f"{report.examined} stored secrets"
    )
    note(
        "running tokenwarden processes read the file again when they meet the new key (no "
        "restart needed); older keys stay in it until `tokenwarden secrets prune-keys`"
    )


@group.command("prune-keys")
@pass_app
def prune_keys(app: App) -> None:
    """Drop older keys from master.key once no stored secret needs them."""
    if app.settings.master_key:
        raise ConfigError("the master keys come from TOKENWARDEN_MASTER_KEY; remove old keys there")
    keyring = app.keyring()
    estate.reseal_all(app.store)
    still_used = set(_sealed_key_ids(app)) - {keyring.primary.key_id}
    if still_used:
        raise ConfigError(
            f"stored secrets are still sealed under {', '.join(sorted(still_used))}; stop the "
            "processes using them and run this again"
        )
    path = app.settings.master_key_file
    lines = _key_file_lines(path, app)
    write_key_file(path, lines[:1])
    click.echo(f"kept only the primary key {keyring.primary.key_id}; dropped {len(lines) - 1}")


def _key_file_lines(path, app: App) -> list[str]:
    app.keyring()  # creates the file on first use
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _sealed_key_ids(app: App):
    return estate.sealed_key_ids(app.store)
