"""Settings, read once from the environment at start-up into a frozen object.

REDIS_URL                  state and broker           default redis://127.0.0.1:6379/0
TOKENWARDEN_DATA_DIR       local files (master.key)   default ./var
TOKENWARDEN_MASTER_KEY     encryption at rest: keys separated by commas, the primary first;
                           when unset, <data dir>/master.key is used (created on first use)
TOKENWARDEN_LOG_LEVEL      debug, info, warning, error          default info
TOKENWARDEN_LOG_FORMAT     json, console or auto (console on a terminal)   default auto
TOKENWARDEN_WORKER_PROCESSES   worker processes `tokenwarden worker` starts     default 2
TOKENWARDEN_WORKER_THREADS     threads per worker process                       default 2
TOKENWARDEN_POLL_INTERVAL_MS   longest an idle worker waits before it looks for
                               messages again (bounds the latency)              default 50
TOKENWARDEN_HEARTBEAT_TIMEOUT  seconds without a heartbeat after which a worker is
                               presumed dead and its messages are recovered     default 8

Notification settings (webhooks, SMTP): see worker/notify/config.py.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from worker.crypto.sealing import Keyring
from worker.errors import ConfigError
from worker.notify.config import NotifySettings

#: Where tokenwarden looks for Redis when REDIS_URL is unset (the Redis `make run` starts).
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

#: Local state (the master key file, the dev Redis's AOF) when TOKENWARDEN_DATA_DIR is unset.
DEFAULT_DATA_DIR = "./var"

#: Worker defaults, sized for a 2-core machine. A thread decides a whole batch of events in a
#: few Redis round trips, so two threads a process keep a core busy.
DEFAULT_WORKER_PROCESSES = 2
DEFAULT_WORKER_THREADS = 2
DEFAULT_POLL_INTERVAL_MS = 50
DEFAULT_HEARTBEAT_TIMEOUT_S = 8

#: The path of a redis:// URL: nothing, or the database number.
_DATABASE_PATH = re.compile(r"(/[0-9]{0,5})?/?")

#: Query parameters of a URL whose values are secrets (redis-py reads `?password=`).
_SECRET_QUERY_PARTS = ("pass", "secret", "token", "key")

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")


@dataclass(frozen=True)
class Settings:
    redis_url: str = DEFAULT_REDIS_URL
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    master_key: str | None = field(default=None, repr=False)
    log_level: str = "info"
    log_format: str = "auto"
    worker_processes: int = DEFAULT_WORKER_PROCESSES
    worker_threads: int = DEFAULT_WORKER_THREADS
    poll_interval_ms: int = DEFAULT_POLL_INTERVAL_MS
    heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S
    notify: NotifySettings = field(default_factory=NotifySettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        redis_url = env.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL
        try:
            parts = urlsplit(redis_url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ConfigError(
                "REDIS_URL has an invalid host or port; write it like redis://127.0.0.1:6379/0"
            ) from None
        if parts.scheme not in {"redis", "rediss", "unix"}:
            raise ConfigError(
                f"REDIS_URL {redact_url(redis_url)!r} is not a redis://, rediss:// or unix:// URL"
            )
        if parts.scheme != "unix" and not _DATABASE_PATH.fullmatch(parts.path):
            raise ConfigError(
                f"REDIS_URL {redact_url(redis_url)!r} names database {parts.path[1:]!r}; a Redis "
                "database is a number: write it like redis://127.0.0.1:6379/0"
            )
        log_level = env.get("TOKENWARDEN_LOG_LEVEL", "info").strip().lower() or "info"
        if log_level not in LOG_LEVELS:
            raise ConfigError(
                f"TOKENWARDEN_LOG_LEVEL {log_level!r} is not one of {', '.join(LOG_LEVELS)}"
            )
        log_format = env.get("TOKENWARDEN_LOG_FORMAT", "auto").strip().lower() or "auto"
        if log_format not in LOG_FORMATS:
            raise ConfigError(
                f"TOKENWARDEN_LOG_FORMAT {log_format!r} is not one of {', '.join(LOG_FORMATS)}"
            )
        data_dir = Path(env.get("TOKENWARDEN_DATA_DIR", "").strip() or DEFAULT_DATA_DIR)
        master_key = env.get("TOKENWARDEN_MASTER_KEY", "").strip() or None
        if master_key:
            Keyring.from_text(master_key, where="TOKENWARDEN_MASTER_KEY")  # fail at start-up
        return cls(
            redis_url=redis_url,
            data_dir=data_dir.expanduser().absolute(),
            master_key=master_key,
            log_level=log_level,
            log_format=log_format,
            worker_processes=_positive_int(
                env, "TOKENWARDEN_WORKER_PROCESSES", DEFAULT_WORKER_PROCESSES, 64
            ),
            worker_threads=_positive_int(
                env, "TOKENWARDEN_WORKER_THREADS", DEFAULT_WORKER_THREADS, 256
            ),
            poll_interval_ms=_positive_int(
                env, "TOKENWARDEN_POLL_INTERVAL_MS", DEFAULT_POLL_INTERVAL_MS, 60_000
            ),
            heartbeat_timeout_s=_positive_int(
                env, "TOKENWARDEN_HEARTBEAT_TIMEOUT", DEFAULT_HEARTBEAT_TIMEOUT_S, 3600
            ),
            notify=NotifySettings.from_env(env),
        )

    @property
    def master_key_file(self) -> Path:
        return self.data_dir / "master.key"

    @property
    def redis_url_display(self) -> str:
        return redact_url(self.redis_url)


def _positive_int(env: Mapping[str, str], name: str, default: int, most: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= most:
        raise ConfigError(f"{name} {text!r} is not a whole number from 1 to {most}")
    return value


def redact_url(url: str) -> str:
    """The URL with any password replaced, in the user part or the query (`?password=`), for
    messages and logs."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(REDIS_URL, unreadable)"
    if parts.password is not None:
        host = parts.hostname or ""
        if port:
            host = f"{host}:{port}"
        user = f"{parts.username}:***@" if parts.username else ":***@"
        url = urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))
    before, mark, rest = url.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    return before + mark + _redact_query(query) + hash_mark + fragment


def _redact_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(_is_secret_parameter(name) for name, _ in pairs):
        return query
    redacted = [(name, "***" if _is_secret_parameter(name) else value) for name, value in pairs]
    return urlencode(redacted, safe="*")


def _is_secret_parameter(name: str) -> bool:
    return any(part in name.lower() for part in _SECRET_QUERY_PARTS)
