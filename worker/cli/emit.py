"""`tokenwarden emit ...`: publish incoming events (validated here, decided by the workers)."""

from __future__ import annotations

import sys
from datetime import datetime

import click

from worker.bootstrap import App
from worker.cli.files import read_input_file
from worker.cli.output import RFC3339, cli_client, note, org_option, pass_app
from worker.errors import InvalidEvent, InvalidInput
from worker.publish import Publisher, validate_lines

#: Largest event file read at once, in bytes (about 200,000 events); split larger ones.
MAX_EVENT_FILE_BYTES = 64 * 1024 * 1024

#: Refusals listed one by one before the rest are only counted.
REFUSALS_SHOWN = 5


@click.group("emit", invoke_without_command=True)
@click.option(
    "--file",
    "file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="CloudEvents in JSON Lines, one per line ('-' = stdin).",
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="With --file: publish the valid lines and report the others.",
)
@pass_app
@click.pass_context
def group(ctx: click.Context, app: App, file: str | None, skip_invalid: bool) -> None:
    """Publish an event: a password change, a departure, a new key or a new token."""
    if ctx.invoked_subcommand is not None:
        if file:
            raise InvalidInput("give either --file or an event name, not both")
        return
    if file is None:
        names = ", ".join(ctx.command.list_commands(ctx))
        raise click.UsageError(f"give an event name ({names}) or --file FILE", ctx)
    lines = _read_lines(file)
    events, refused = validate_lines(lines, app.now())
    if refused and not skip_invalid:
        first = refused[0]
        more = f" (and {len(refused) - 1} more bad lines)" if len(refused) > 1 else ""
        raise InvalidEvent(
            f"{_name(file)} line {first.line}: {first.reason}{more}; nothing was "
            "published (fix the lines, or pass --skip-invalid)"
        )
    for refusal in refused[:REFUSALS_SHOWN]:
        note(f"skipped line {refusal.line}: {refusal.reason}")
    if len(refused) > REFUSALS_SHOWN:
        note(f"skipped {len(refused) - REFUSALS_SHOWN} more invalid lines")
    count = Publisher(app.broker, app.now).enqueue(events)
    click.echo(f"published {count} events" + (f", skipped {len(refused)}" if refused else ""))


def _name(file: str) -> str:
    return "stdin" if file == "-" else file


def _read_lines(file: str) -> list[str]:
    if file == "-":
        data = sys.stdin.buffer.read(MAX_EVENT_FILE_BYTES + 1)
        if len(data) > MAX_EVENT_FILE_BYTES:
            raise InvalidInput(f"stdin holds more than {MAX_EVENT_FILE_BYTES} bytes; split it")
    else:
        data, _ = read_input_file(file, "event file", MAX_EVENT_FILE_BYTES)
    try:
        # A byte-order mark some editors write is not part of the first event. Lines end at
        # LF only (CRLF leaves a CR, which is JSON whitespace): str.splitlines would also split
        # at U+2028 or U+0085, which a JSON string may hold as they are.
        return data.decode("utf-8-sig").split("\n")
    except UnicodeDecodeError:
        raise InvalidInput(
            f"{_name(file)} is not UTF-8 text; give CloudEvents in JSON Lines"
        ) from None


at_option = click.option(
    "--at", type=RFC3339(), default=None, help="When it happened (RFC 3339); default now."
)
id_option = click.option("--id", "event_id", default=None, help="Event id; default a new one.")


def _published(event) -> None:
    click.echo(f"published {event.type} {event.id}")


@group.command("password-changed")
@click.option("--user", required=True, help="Managed Apple Account whose password changed.")
@at_option
@id_option
@pass_app
def password_changed(app: App, user: str, at: datetime | None, event_id: str | None) -> None:
    """The user's Managed Apple Account password changed: their tokens die."""
    _published(cli_client(app).password_changed(user, at=at, event_id=event_id))


@group.command("user-left")
@click.option("--user", required=True, help="Managed Apple Account that left.")
@at_option
@id_option
@pass_app
def user_left(app: App, user: str, at: datetime | None, event_id: str | None) -> None:
    """The user left the organization: their tokens die."""
    _published(cli_client(app).user_left(user, at=at, event_id=event_id))


@group.command("key-regenerated")
@click.option("--server", required=True, help="Server whose key was made anew.")
@org_option
@at_option
@id_option
@pass_app
def key_regenerated(
    app: App, server: str, org: str | None, at: datetime | None, event_id: str | None
) -> None:
    """A new public key was made for the server: its token must be replaced."""
    _published(cli_client(app).key_regenerated(server, org=org, at=at, event_id=event_id))


@group.command("token-generated")
@click.option("--server", required=True, help="Server a new token was downloaded for.")
@org_option
@at_option
@id_option
@pass_app
def token_generated(
    app: App, server: str, org: str | None, at: datetime | None, event_id: str | None
) -> None:
    """A new token was downloaded in the portal: the installed one no longer works."""
    _published(cli_client(app).token_generated(server, org=org, at=at, event_id=event_id))
