"""The settings of the web pages `tokenwarden serve` serves under /ui/ (read by
worker/config.py's Settings.from_env, and carried as Settings.ui).

TOKENWARDEN_UI                      on: serve the pages; anything else but off is refused
                                                                             default off
TOKENWARDEN_UI_TRUSTED_USER_HEADER  the request header an SSO proxy in front of serve sets to
                                    the signed-in user (oauth2-proxy: X-Forwarded-Email, or
                                    X-Auth-Request-Email with --set-xauthrequest). Believed
                                    only from TOKENWARDEN_HTTP_TRUSTED_PROXIES, which must be
                                    set with it                       default: none (log in)
TOKENWARDEN_UI_SESSION_LIFETIME     seconds a login through the form lasts     default 28800

And the secret of the renewal calendar feed (TOKENWARDEN_CALENDAR_TOKEN, carried as
Settings.http.calendar_token).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.environment import Environment
from worker.errors import ConfigError

#: Seconds a login lasts (a working day), and the bounds of the setting (5 minutes, 30 days).
DEFAULT_SESSION_LIFETIME_S = 8 * 3600
MIN_SESSION_LIFETIME_S, MAX_SESSION_LIFETIME_S = 300, 30 * 86400

#: A header name (an HTTP token, short).
_HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")

#: Headers that cannot name a user: they carry something else a proxy or browser sets.
_NOT_A_USER_HEADER = {"authorization", "cookie", "host", "x-forwarded-for", "x-forwarded-proto"}


@dataclass(frozen=True)
class UiSettings:
    enabled: bool = False
    #: The header naming the user, lowercase (None: viewers log in through the form).
    trusted_user_header: str | None = None
    session_lifetime_s: int = DEFAULT_SESSION_LIFETIME_S


def read_ui(env: Environment, trusted_proxies: tuple[str, ...]) -> UiSettings:
    """The web pages' settings; ConfigError names a variable that cannot be used."""
    enabled = env.choice("TOKENWARDEN_UI", ("on", "off"), "off") == "on"
    header = env.text("TOKENWARDEN_UI_TRUSTED_USER_HEADER", "") or None
    if header is not None:
        if not _HEADER.fullmatch(header) or header.lower() in _NOT_A_USER_HEADER:
            raise ConfigError(
                f"TOKENWARDEN_UI_TRUSTED_USER_HEADER {header!r} is not a header that can name "
                "the user: give the one the SSO proxy sets, e.g. X-Forwarded-Email"
            )
        if "*" in trusted_proxies:
            raise ConfigError(
                "TOKENWARDEN_UI_TRUSTED_USER_HEADER with TOKENWARDEN_HTTP_TRUSTED_PROXIES=* "
                "would let any client name its own user: name the SSO proxy's address instead"
            )
        if not trusted_proxies:
            raise ConfigError(
                "TOKENWARDEN_UI_TRUSTED_USER_HEADER is believed only from the proxies in "
                "TOKENWARDEN_HTTP_TRUSTED_PROXIES, which is unset: set it to the SSO proxy's "
                "address (127.0.0.1 when it runs beside serve)"
            )
    return UiSettings(
        enabled=enabled,
        trusted_user_header=header.lower() if header else None,
        session_lifetime_s=env.seconds(
            "TOKENWARDEN_UI_SESSION_LIFETIME",
            DEFAULT_SESSION_LIFETIME_S,
            MIN_SESSION_LIFETIME_S,
            MAX_SESSION_LIFETIME_S,
        ),
    )


#: The calendar feed's secret: too long to guess, in characters a URL carries as they are.
CALENDAR_TOKEN = re.compile(r"[A-Za-z0-9._~-]{32,256}")


def read_calendar_token(env: Environment) -> str | None:
    """TOKENWARDEN_CALENDAR_TOKEN, checked; the refusal never repeats the value."""
    value = env.secret("TOKENWARDEN_CALENDAR_TOKEN")
    if value is not None and not CALENDAR_TOKEN.fullmatch(value):
        raise ConfigError(
            "TOKENWARDEN_CALENDAR_TOKEN must be 32 to 256 letters, digits, '-', '_', '.' or '~' "
            "(its value is not shown); make one with `openssl rand -hex 32`"
        )
    return value
