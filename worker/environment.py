"""Reading settings from environment variables: one parser per kind of value.

Each parser takes the variable's name and what to use when it is unset or blank, and turns a
value it cannot use into a ConfigError of one line that names the variable, repeats the value
(never a secret's) and says what to write instead. worker/config.py says which variable is
which kind.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from worker.crypto.sealing import Keyring
from worker.errors import ConfigError

#: The schemes redis-py connects to.
REDIS_SCHEMES = ("redis", "rediss", "unix")

#: Redis behind Sentinel: `redis+sentinel://`, and over TLS (to the sentinels and to Redis)
#: `rediss+sentinel://`.
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")

#: Port of a sentinel named without one.
DEFAULT_SENTINEL_PORT = 26379

#: What a Sentinel URL looks like, for messages.
SENTINEL_EXAMPLE = "redis+sentinel://:password@host1:26379,host2:26379/mymaster/0"

#: Query parameters a Sentinel URL may carry: the sentinels' own password, when it is not the
#: one of Redis (empty: the sentinels ask none), and the TLS checks of rediss+sentinel://.
SENTINEL_PARAMETERS = ("sentinel_password", "ssl_ca_certs", "ssl_cert_reqs")

#: A master's name as Sentinel monitors it, and a sentinel's host[:port] (IPv6 in brackets).
_MASTER_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SENTINEL_HOST = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?"
)

#: The path of a redis:// URL: nothing, or the database number.
_DATABASE_PATH = re.compile(r"(/[0-9]{0,5})?/?")

#: Query parameters of a URL whose values are secrets (redis-py reads `?password=`).
_SECRET_QUERY_PARTS = ("pass", "secret", "token", "key")

#: What a true or false setting may be written as.
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


class Environment:
    """The variables settings are read from (the process environment at start-up, or a
    mapping a test or an embedding program hands in)."""

    def __init__(self, variables: Mapping[str, str]):
        self._variables = variables

    def _given(self, name: str) -> str:
        return self._variables.get(name, "").strip()

    def text(self, name: str, default: str) -> str:
        return self._given(name) or default

    def secret(self, name: str) -> str | None:
        """A password: taken as written (spaces count), None when unset or empty."""
        return self._variables.get(name) or None

    def path(self, name: str, default: str) -> Path:
        return Path(self.text(name, default)).expanduser().absolute()

    def choice(self, name: str, choices: Collection[str], default: str) -> str:
        value = self._given(name).lower() or default
        if value not in choices:
            raise ConfigError(f"{name} {value!r} is not one of {', '.join(choices)}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._given(name).lower()
        if not value:
            return default
        if value not in _TRUE + _FALSE:
            raise ConfigError(f"{name} {value!r} is not true or false")
        return value in _TRUE

    def whole_number(self, name: str, default: int, least: int, most: int, unit: str = "") -> int:
        text = self._given(name)
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if not least <= value <= most:
            of_unit = f" of {unit}" if unit else ""
            raise ConfigError(
                f"{name} {text!r} is not a whole number{of_unit} from {least} to {most}"
            )
        return value

    def seconds(self, name: str, default: int, least: int, most: int) -> int:
        return self.whole_number(name, default, least, most, unit="seconds")

    def number(self, name: str, default: float, least: float, most: float) -> float:
        text = self._given(name)
        if not text:
            return default
        try:
            value = float(text)
        except ValueError:
            value = least - 1
        if not least <= value <= most:  # also refuses nan
            raise ConfigError(f"{name} {text!r} is not a number from {least:g} to {most:g}")
        return value

    def whole_numbers(
        self, name: str, default: tuple[int, ...], least: int, most: int, unit: str, example: str
    ) -> tuple[int, ...]:
        """`5,300,1800` -> (5, 300, 1800), in the order written. Unset: the default; set but
        blank: refused (an empty list is never meant)."""
        text = self._variables.get(name)
        if text is None:
            return default
        advice = f"write it like {example}"
        parts = [part.strip() for part in text.split(",")]
        if not all(parts):
            raise ConfigError(
                f"{name} {text!r} is not a list of {unit} separated by commas; {advice}"
            )
        try:
            values = tuple(int(part) for part in parts)
        except ValueError:
            raise ConfigError(
                f"{name} {text!r} holds something that is not a whole number of {unit}; {advice}"
            ) from None
        if not all(least <= value <= most for value in values):
            raise ConfigError(f"{name} {text!r}: each must be {least} to {most} {unit}; {advice}")
        return values

    def master_keys(self, name: str) -> str | None:
        """Master keys separated by commas, the primary first; checked here so that a wrong one
        stops the program at start-up, not at the first secret."""
        text = self._given(name)
        if text:
            Keyring.from_text(text, where=name)
        return text or None

    def redis_url(self, name: str, default: str) -> str:
        url = self._given(name) or default
        if url.partition("://")[0].lower() in SENTINEL_SCHEMES:
            try:
                parse_sentinel_url(url)
            except ValueError as exc:
                raise ConfigError(
                    f"{name} {redact_url(url)!r} {exc}; write it like {SENTINEL_EXAMPLE}"
                ) from None
            return url
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ConfigError(
                f"{name} has an invalid host or port; write it like redis://127.0.0.1:6379/0"
            ) from None
        if parts.scheme not in REDIS_SCHEMES:
            raise ConfigError(
                f"{name} {redact_url(url)!r} is not a redis://, rediss://, unix:// or "
                "redis+sentinel:// URL"
            )
        if parts.scheme != "unix" and not _DATABASE_PATH.fullmatch(parts.path):
            raise ConfigError(
                f"{name} {redact_url(url)!r} names database {parts.path[1:]!r}; a Redis "
                "database is a number: write it like redis://127.0.0.1:6379/0"
            )
        return url

    def host_port(self, name: str, default_host: str, default_port: int) -> tuple[str, int]:
        """`host:port` (`[::1]:8080` for IPv6; `:8080` for every address; port 0: any free
        one, for tests)."""
        text = self._given(name)
        if not text:
            return default_host, default_port
        host, colon, port = text.rpartition(":")
        host = host.strip("[]") if host.startswith("[") else host
        if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(
                f"{name} {text!r} is not host:port; write it like {default_host}:{default_port}"
            )
        return host or "0.0.0.0", int(port)

    def http_url(self, name: str, default: str) -> str:
        """A service's base URL (http or https), without a trailing slash."""
        url = self._given(name) or default
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{name} {redact_url(url)!r} is not an http:// or https:// URL; "
                f"write it like {default}"
            )
        if parts.query or parts.fragment:
            raise ConfigError(f"{name} {redact_url(url)!r} must not have a query or fragment")
        return url.rstrip("/")

    def https_url(self, name: str, default: str) -> str:
        """A provider's base URL: https, or http only on a loopback address (a test's fake)."""
        url = self.http_url(name, default)
        if urlsplit(url).scheme != "https" and not is_loopback(urlsplit(url).hostname or ""):
            raise ConfigError(
                f"{name} {redact_url(url)!r} must be an https:// URL (http:// is taken only "
                f"on a loopback address, for tests); write it like {default}"
            )
        return url

    def ca_bundle(self, name: str) -> Path | None:
        """A PEM file of extra trusted CAs, checked now; None when unset."""
        if not self._given(name):
            return None
        from worker.outbound import check_ca_bundle  # imports httpx and requests: only if set

        return check_ca_bundle(self.path(name, ""))


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: where only a test's or a lab's own server listens."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SentinelUrl:
    """A `redis+sentinel://` URL read: the sentinels to ask, the master they watch, and how to
    speak to both."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: The sentinels' own password: Redis's unless `?sentinel_password=` says otherwise.
    sentinel_password: str | None = field(default=None, repr=False)
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: str | None = None


def parse_sentinel_url(url: str) -> SentinelUrl:
    """`redis+sentinel://[[user]:password@]host1[:26379],host2[:26379]/MASTER[/DB][?...]`;
    ValueError saying what is wrong (never repeating a password)."""
    scheme, _, rest = url.partition("://")
    userinfo, after = _split_userinfo(rest)
    if userinfo is not None and any(c in userinfo for c in "/?#"):
        raise ValueError("has '/', '?' or '#' in its password: percent-encode them (%2F, %3F, %23)")
    at = userinfo is not None
    hosts, slash, path = after.partition("/")
    path, _, query = path.partition("?")
    if "#" in query or "#" in path:
        raise ValueError("must not have a fragment (#)")
    user, colon, password = (userinfo or "").partition(":")
    sentinels = tuple(_sentinel_address(part.strip()) for part in hosts.split(","))
    master, _, db = path.strip("/").partition("/")
    if not slash or not _MASTER_NAME.fullmatch(master):
        raise ValueError("does not name the master the sentinels watch after the hosts")
    if db and not (db.isascii() and db.isdigit() and len(db) <= 5):
        raise ValueError(f"names database {db!r}; a Redis database is a number")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(SENTINEL_PARAMETERS))
    if unknown:
        raise ValueError(
            f"has {unknown[0]!r}, which is not one of {', '.join(SENTINEL_PARAMETERS)}"
        )
    if options.get("ssl_cert_reqs", "required") not in ("none", "optional", "required"):
        raise ValueError("has ssl_cert_reqs that is not none, optional or required")
    password_text = unquote(password) if colon else None
    given = options.get("sentinel_password")
    return SentinelUrl(
        sentinels=sentinels,
        master=master,
        db=int(db or 0),
        tls=scheme.lower() == "rediss+sentinel",
        username=unquote(user) if at and user else None,
        password=password_text or None,
        sentinel_password=(password_text if given is None else given) or None,
        ssl_ca_certs=options.get("ssl_ca_certs") or None,
        ssl_cert_reqs=options.get("ssl_cert_reqs") or None,
    )


def _sentinel_address(text: str) -> tuple[str, int]:
    found = _SENTINEL_HOST.fullmatch(text)
    port = int(found["port"] or DEFAULT_SENTINEL_PORT) if found else 0
    if not found or not 1 <= port <= 65535:
        raise ValueError(f"has {text!r} where a sentinel's host[:port] belongs")
    return found["v6"] or found["host"], port


def redact_url(url: str) -> str:
    """The URL with any password replaced, in the user part or the query (`?password=`), for
    messages and logs."""
    if url.partition("://")[0].lower() in SENTINEL_SCHEMES:
        return _redact_sentinel_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(an unreadable URL)"
    if parts.password is not None:
        host = parts.hostname or ""
        if port:
            host = f"{host}:{port}"
        user = f"{parts.username}:***@" if parts.username else ":***@"
        url = urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))
    before, mark, rest = url.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    return before + mark + _redact_query(query) + hash_mark + fragment


#: The `@` that ends a Sentinel URL's user part: the last one followed by the hosts and the
#: master's path (a password written without percent-encoding may hold `@`, `/`, `?`, `#`);
#: failing that, the last one followed by hosts alone (a URL that forgot the master).
_END_OF_USERINFO = (
    re.compile(r"@(?=[\w.\-\[\]:,]+/)"),
    re.compile(r"@(?=[\w.\-\[\]:,]+(?:[?#]|$))"),
)


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """(user part or None, the rest) of what follows `scheme://` in a Sentinel URL; parsing
    and redacting cut it the same way, so what one reads as the password the other hides."""
    for pattern in _END_OF_USERINFO:
        found = list(pattern.finditer(rest))
        if found:
            at = found[-1].start()
            return rest[:at], rest[at + 1 :]
    return None, rest


def _redact_sentinel_url(url: str) -> str:
    """A Sentinel URL names several hosts, which urlsplit cannot read: cut it by hand. The
    password, a secret query parameter and any fragment are hidden."""
    scheme, _, rest = url.partition("://")
    userinfo, after = _split_userinfo(rest)
    shown = ""
    if userinfo is not None:
        shown = f"{userinfo.partition(':')[0]}:***@" if ":" in userinfo else f"{userinfo}@"
    before, mark, query = after.partition("?")
    before, hash_mark, _ = before.partition("#")
    query, query_hash, _ = query.partition("#")
    fragment = "#***" if hash_mark or query_hash else ""
    return f"{scheme}://{shown}{before}{mark}{_redact_query(query)}{fragment}"


def _redact_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(_is_secret_parameter(name) for name, _ in pairs):
        return query
    redacted = [(name, "***" if _is_secret_parameter(name) else value) for name, value in pairs]
    return urlencode(redacted, safe="*")


def _is_secret_parameter(name: str) -> bool:
    return any(part in name.lower() for part in _SECRET_QUERY_PARTS)
