"""Structured logging: one line per unit of work, JSON off a terminal, secrets redacted.

Redaction is a processor that runs before rendering, so a secret passed by mistake in a log call
is caught by key name and by shape (Apple's `CK_`/`CS_`/`AT_`/`AS_` credentials, PEM private
keys). Tracebacks are rendered without local variables, which could hold secrets.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"

#: Event-dict keys whose values are never logged, whatever they hold.
SECRET_KEY_PARTS = (
    "secret",
    "password",
    "private_key",
    "credential",
    "consumer_key",
    "access_token",
    "master_key",
    "signature",
)

#: Libraries whose loggers are held at warning: httpx logs every request with its full URL
#: (some webhook URLs carry secrets); oauthlib logs the signature base string, which holds the
#: consumer key and access token URL-encoded, out of reach of the redaction by shape.
QUIET_LOGGERS = ("httpx", "httpcore", "oauthlib")

_SECRET_SHAPES = re.compile(
    r"\b(?:CK|CS|AT|AS)_[A-Za-z0-9+/=_-]{8,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"
    r"|whsec_[A-Za-z0-9+/=]{8,}"
    r"|(?<=[?&]password=)(?!\*\*\*)[^&#\s'\"]+",
    re.DOTALL,
)


def redact_text(text: str) -> str:
    return _SECRET_SHAPES.sub(REDACTED, text)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {key: (REDACTED if _is_secret_key(key) else _redact(v)) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(v) for v in value)
    return value


def _is_secret_key(key: object) -> bool:
    lowered = str(key).lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if _is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(event_dict[key])
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", stream=None) -> None:
    """Configure structlog, and route the stdlib loggers (dramatiq's) through the same
    processors, so every line is one structured, redacted record."""
    stream = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        render = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            redact_secrets,
            structlog.processors.JSONRenderer(),
        ]
    else:
        render = [
            # The traceback becomes text before redaction, so secrets in it are redacted too.
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
        ]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # redis-py reports at debug level that old servers lack a feature; that is not news.
    logging.getLogger("redis").setLevel(max(numeric, logging.INFO))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # APScheduler logs every run of every job (the lease is renewed every few seconds).
    logging.getLogger("apscheduler").setLevel(max(numeric, logging.WARNING))
