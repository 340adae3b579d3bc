"""`tokenwarden`: the command line. Every failure a user can cause ends in one line on stderr
and a non-zero exit, never a traceback."""

from __future__ import annotations

import sys
import unicodedata
from importlib.metadata import entry_points

import click
import redis

from worker.bootstrap import App
from worker.config import Settings
from worker.errors import StoreUnavailable, TokenwardenError
from worker.logs import configure_logging, redact_text

#: Exit code for a command used wrongly (unknown option, missing argument).
USAGE_EXIT = 2

#: Exit code after Ctrl-C.
INTERRUPTED_EXIT = 130


class TokenwardenGroup(click.Group):
    """Turns every expected error into `error: <one line>` and its exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "tokenwarden"
            fail(f"{exc.format_message()} (see `{command} --help`)", USAGE_EXIT)
        except click.exceptions.Abort:
            fail("interrupted", INTERRUPTED_EXIT)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except TokenwardenError as exc:
            fail(str(exc), exc.exit_code)
        except redis.exceptions.ResponseError as exc:
            fail(
                f"Redis refused a command ({exc}); check it is Redis 6.2 or newer and that "
                "REDIS_URL names a database tokenwarden may write",
                StoreUnavailable.exit_code,
            )
        except KeyboardInterrupt:
            fail("interrupted", INTERRUPTED_EXIT)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context):
        """Runs the command, naming the Redis it could not use when that is what failed."""
        try:
            return super().invoke(ctx)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise unreachable(exc, ctx.obj.settings) from None
        except redis.exceptions.InvalidResponse:
            raise not_redis(ctx.obj.settings) from None


def unreachable(exc: Exception, settings: Settings) -> StoreUnavailable:
    reason = str(exc).split("\n")[0] or type(exc).__name__
    return StoreUnavailable(
        f"cannot reach Redis at {settings.redis_url_display} ({reason}); start it with "
        "`make run`, or set REDIS_URL to the Redis tokenwarden should use"
    )


def printable(text: str) -> str:
    """Control characters escaped (\\x1b, \\n): an error repeats what it was given, and that
    must neither drive the terminal nor break the one line."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) == "Cc" else ch
        for ch in text
    )


def not_redis(settings: Settings) -> StoreUnavailable:
    return StoreUnavailable(
        f"the service at {settings.redis_url_display} does not answer as Redis "
        "does; set REDIS_URL to the Redis server tokenwarden should use"
    )


def fail(message: str, code: int) -> None:
    click.echo(f"error: {printable(redact_text(message))}", err=True)
    sys.exit(code)


@click.group(cls=TokenwardenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tokenwarden")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Keep Apple ASM/ABM MDM server tokens valid, and say when one must be replaced."""
    if ctx.obj is None:  # tests hand in their own App
        settings = Settings.from_env()
        configure_logging(settings.log_level, settings.log_format)
        ctx.obj = App(settings)
        ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    from worker.cli import (
        deliveries,
        emit,
        events,
        keys,
        policy,
        replacements,
        run,
        secrets,
        serve,
        servers,
        sources,
        subscriptions,
        tokens,
        viewers,
        worker,
    )

    for entry_point in entry_points(group="tokenwarden.commands"):
        cli.add_command(entry_point.load())
    for module in (
        servers,
        keys,
        tokens,
        emit,
        replacements,
        events,
        subscriptions,
        deliveries,
        worker,
        secrets,
        sources,
        viewers,
        serve,
        run,
    ):
        cli.add_command(module.group)
    servers.group.add_command(policy.server_policy)
    cli.add_command(policy.orgs_group)
    cli.add_command(policy.global_policy)


_register()


def main() -> None:
    cli.main(prog_name="tokenwarden")
