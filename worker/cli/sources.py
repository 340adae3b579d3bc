"""`tokenwarden sources ...`: who may push events into the HTTP intake (`tokenwarden serve`),
and which directories tokenwarden asks on a schedule."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import click

from worker.bootstrap import App
from worker.cli.output import json_option, note, pass_app, print_json, print_table
from worker.cli.source_check import check
from worker.errors import InvalidInput
from worker.intake.sources import (
    DEFAULT_GRACE,
    DEFAULT_POLL_INTERVAL_S,
    KINDS,
    POLL_KINDS,
    POLL_OPTIONS,
    Source,
)
from worker.services import sources as service
from worker.store.source_store import PollState
from worker.timefmt import format_rfc3339


@click.group("sources")
def group() -> None:
    """Directories and event buses that push events over HTTP (`tokenwarden serve`), and
    directories tokenwarden asks (okta-api, entra, google)."""


group.add_command(check)


#: Largest service account key file read, in bytes (Google's are about 2.3 KB).
MAX_KEY_FILE_BYTES = 64 * 1024


def _read_secret(secret: str | None) -> str | None:
    """`-` reads the secret from stdin (kept out of the shell history)."""
    return sys.stdin.readline().strip() if secret == "-" else secret


def _read_credential(value: str | None, flag: str) -> str | None:
    """A directory's credential: only from stdin (`-`), never from the command line, where
    the shell history and `ps` would keep it."""
    if value is None:
        return None
    if value != "-":
        raise InvalidInput(
            f"{flag} takes '-' and the value on stdin (e.g. printf '%s' \"$TOKEN\" | "
            f"tokenwarden sources ... {flag} -): on the command line it would stay in the shell "
            "history and in `ps`"
        )
    return sys.stdin.readline().strip()


def _read_file(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        with path.open("rb") as file:
            data = file.read(MAX_KEY_FILE_BYTES + 1)
        if len(data) > MAX_KEY_FILE_BYTES:
            raise InvalidInput(
                f"--service-account-file {str(path)!r} is larger than {MAX_KEY_FILE_BYTES} "
                "bytes: give the service account's JSON key file"
            )
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise InvalidInput(f"cannot read --service-account-file {str(path)!r}: {why}") from None


_POLL_FLAGS = ("org_url", "api_token", "tenant_id", "client_id", "client_secret",
               "service_account_file", "admin_subject", "interval", "domain")  # fmt: skip


@group.command("add")
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(KINDS), help="What the source is.")
@click.option(
    "--map-domain",
    multiple=True,
    metavar="FROM=TO",
    help="Rewrite users of directory domain FROM to Managed Apple Account domain TO "
    "(e.g. school.edu=appleid.school.edu); repeatable. A directory asked on a schedule is "
    "asked only about the users of the TO domains (map a domain to itself to name it).",
)
@click.option(
    "--domain",
    multiple=True,
    metavar="DOMAIN",
    help="Directories: a Managed Apple Account domain this directory holds, its logins the "
    "same (repeatable; or --map-domain when they differ). One of them is needed.",
)
@click.option("--secret", default=None, help="Push kinds: '-' reads it from stdin; default: "
              "generated.")  # fmt: skip
@click.option("--org-url", default=None, help="okta-api: https://ORG.okta.com")
@click.option("--api-token", default=None, help="okta-api: '-' reads it from stdin.")
@click.option("--tenant-id", default=None, help="entra: the directory (tenant) id.")
@click.option("--client-id", default=None, help="entra: the application (client) id.")
@click.option("--client-secret", default=None, help="entra: '-' reads it from stdin.")
@click.option(
    "--service-account-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="google: the service account's JSON key file.",
)
@click.option("--admin-subject", default=None, help="google: the administrator to act as.")
@click.option(
    "--interval",
    type=int,
    default=None,
    metavar="SECONDS",
    help=f"Directories: seconds between two rounds (default {DEFAULT_POLL_INTERVAL_S}).",
)
@json_option
@pass_app
def add(app: App, name: str, kind: str, map_domain: tuple[str, ...], secret: str | None,
        as_json: bool, **poll: object) -> None:  # fmt: skip
    """Add a source NAME. A push source: prints its path and its secret (shown this once). A
    directory: its credential is sealed, and its first round is due at once."""
    if kind in POLL_KINDS:
        _add_directory(app, name, kind, map_domain, poll, as_json)
        return
    given = [
        f"--{flag.replace('_', '-')}" for flag in _POLL_FLAGS if poll.get(flag) not in (None, ())
    ]
    if given:
        raise InvalidInput(f"{given[0]} is for the directories asked on a schedule, not {kind}")
    added = service.add_source(
        app.sources, name, kind, now=app.now(), secret=_read_secret(secret), map_domain=map_domain
    )
    if as_json:
        print_json({**added.source.describe(app.now()), "secret": added.secret})
        return
    click.echo(f"added source {added.source.name!r} ({added.source.kind})")
    click.echo(f"path:   {added.source.path()}")
    click.echo(f"secret: {added.secret}")
    note("the secret is shown this once; tokenwarden keeps only its hash")


def _add_directory(
    app: App, name: str, kind: str, map_domain: tuple[str, ...], poll: dict, as_json: bool
) -> None:
    foreign = [
        f"--{flag.replace('_', '-')}"
        for flag in _POLL_FLAGS
        if poll.get(flag) not in (None, ()) and flag not in _FLAGS_OF[kind] + _SHARED_FLAGS
    ]
    if foreign:
        raise InvalidInput(f"{foreign[0]} is not an option of --kind {kind}")
    credentials = {
        "api_token": _read_credential(poll.get("api_token"), "--api-token"),
        "client_secret": _read_credential(poll.get("client_secret"), "--client-secret"),
        "service_account_text": _read_file(poll.get("service_account_file")),
    }
    interval = poll.get("interval")
    source = service.add_directory(
        app.sources,
        name,
        kind,
        now=app.now(),
        options={option: poll.get(option) for option in POLL_OPTIONS[kind]},
        credentials=credentials,
        map_domain=map_domain,
        domains=poll.get("domain") or (),
        interval_s=DEFAULT_POLL_INTERVAL_S if interval is None else interval,
    )
    if as_json:
        print_json(source.describe(app.now()))
        return
    click.echo(f"added source {source.name!r} ({source.kind}), asked every {source.interval_s} s")
    note(f"its credential is sealed; `tokenwarden sources check {source.name}` asks it now")


#: The flags every directory kind takes.
_SHARED_FLAGS = ("interval", "domain")

#: The flags of each directory kind (its options and its credential).
_FLAGS_OF = {
    "okta-api": ("org_url", "api_token"),
    "entra": ("tenant_id", "client_id", "client_secret"),
    "google": ("service_account_file", "admin_subject"),
}


@group.command("list")
@json_option
@pass_app
def list_sources(app: App, as_json: bool) -> None:
    """Every source, its kind and path; a directory's last successful round."""
    listed = service.list_sources(app.sources)
    states = service.poll_states(app.sources, listed)
    described = [_described(app, s, states.get(s.name)) for s in listed]
    if as_json:
        print_json(described)
        return
    print_table(
        ("NAME", "KIND", "PATH OR OPTIONS", "DOMAIN MAPS", "LAST ROUND", "STATE"),
        [
            (
                d["name"],
                d["kind"],
                d["path"] or ", ".join(f"{k}={v}" for k, v in d["options"].items()),
                ", ".join(d["map_domain"]) or "-",
                (d.get("last_success") or "never") if d["kind"] in POLL_KINDS else "-",
                _state_cell(d),
            )
            for d in described
        ],
        empty="no sources; add one with `tokenwarden sources add NAME --kind ...`",
    )


def _described(app: App, source: Source, state: PollState | None) -> dict:
    described = source.describe(app.now())
    if not source.polls:
        return described
    state = state or PollState()
    return {
        **described,
        "last_success": format_rfc3339(state.last_success) if state.last_success else None,
        "last_round": format_rfc3339(state.last_round) if state.last_round else None,
        "failures_in_a_row": state.failures,
        "failing_since": format_rfc3339(state.failing_since) if state.failing_since else None,
        "error": state.error,
        "last_summary": state.summary,
    }


def _state_cell(described: dict) -> str:
    if described["kind"] not in POLL_KINDS:
        until = described["previous_secret_until"]
        return f"old secret until {until}" if until else "ok"
    if described["failing_since"]:
        return f"FAILING since {described['failing_since']}: {described['error']}"
    if described["failures_in_a_row"]:
        return f"{described['failures_in_a_row']} round(s) failed"
    if described["last_success"]:
        return "ok"
    return "nobody to ask about yet" if described["last_round"] else "waiting for its first round"


@group.command("rotate-secret")
@click.argument("name")
@click.option(
    "--grace",
    type=click.IntRange(0, 30 * 24),
    default=int(DEFAULT_GRACE.total_seconds() // 3600),
    show_default=True,
    metavar="HOURS",
    help="Hours the old secret keeps working (0: it stops at once).",
)
@click.option("--secret", default=None, help="'-' reads it from stdin; default: generated.")
@json_option
@pass_app
def rotate_secret(app: App, name: str, grace: int, secret: str | None, as_json: bool) -> None:
    """A new secret for NAME; the old one keeps working for --grace hours."""
    rotated = service.rotate_secret(
        app.sources, name, now=app.now(), grace=timedelta(hours=grace), secret=_read_secret(secret)
    )
    if as_json:
        print_json({**rotated.source.describe(app.now()), "secret": rotated.secret})
        return
    click.echo(f"secret: {rotated.secret}")
    until = rotated.source.describe(app.now())["previous_secret_until"]
    note(f"the old secret works until {until}" if until else "the old secret no longer works")


@group.command("set-credential")
@click.argument("name")
@click.option("--api-token", default=None, help="okta-api: '-' reads it from stdin.")
@click.option("--client-secret", default=None, help="entra: '-' reads it from stdin.")
@click.option(
    "--service-account-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="google: the service account's new JSON key file.",
)
@pass_app
def set_credential(
    app: App, name: str, api_token: str | None, client_secret: str | None,
    service_account_file: Path | None,
) -> None:  # fmt: skip
    """Give the directory source NAME a new credential (sealed); it is asked again at once."""
    credentials = {
        "api_token": _read_credential(api_token, "--api-token"),
        "client_secret": _read_credential(client_secret, "--client-secret"),
        "service_account_text": _read_file(service_account_file),
    }
    source = service.set_credential(app.sources, name, credentials, now=app.now())
    click.echo(f"new credential sealed for source {source.name!r}; its next round is due now")


@group.command("remove")
@click.argument("name")
@pass_app
def remove(app: App, name: str) -> None:
    """Remove NAME: its path answers 404 from now on; a directory is asked no more."""
    service.remove_source(app.sources, name)
    click.echo(f"removed source {name.strip().lower()!r}")
