"""Notification settings, read once from the environment (part of worker.config.Settings).

TOKENWARDEN_WEBHOOK_TIMEOUT         seconds a receiver has to answer          default 10
TOKENWARDEN_WEBHOOK_RETRY_SCHEDULE  waits before each retry, seconds          default
                                    5,300,1800,7200,18000,36000,36000 (Standard Webhooks)
TOKENWARDEN_WEBHOOK_RETRY_JITTER    share by which each wait may vary         default 0.1
TOKENWARDEN_SMTP_HOST               SMTP server for e-mail; unset = no e-mail
TOKENWARDEN_SMTP_PORT               default 587 with STARTTLS, else 25
TOKENWARDEN_SMTP_STARTTLS           true/false                                default true
TOKENWARDEN_SMTP_USERNAME, TOKENWARDEN_SMTP_PASSWORD   login, when both are set
TOKENWARDEN_SMTP_FROM               sender address                  default tokenwarden@<host>
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from worker.errors import ConfigError
from worker.notify.schedule import DEFAULT_JITTER, DEFAULT_SCHEDULE_S, parse_schedule

DEFAULT_WEBHOOK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    starttls: bool
    sender: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NotifySettings:
    webhook_timeout_s: float = DEFAULT_WEBHOOK_TIMEOUT_S
    retry_schedule_s: tuple[int, ...] = DEFAULT_SCHEDULE_S
    retry_jitter: float = DEFAULT_JITTER
    smtp: SmtpSettings | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NotifySettings:
        timeout = _number(env, "TOKENWARDEN_WEBHOOK_TIMEOUT", DEFAULT_WEBHOOK_TIMEOUT_S, 0.1, 300)
        jitter = _number(env, "TOKENWARDEN_WEBHOOK_RETRY_JITTER", DEFAULT_JITTER, 0, 0.5)
        schedule_text = env.get("TOKENWARDEN_WEBHOOK_RETRY_SCHEDULE", "").strip()
        schedule = parse_schedule(schedule_text) if schedule_text else DEFAULT_SCHEDULE_S
        return cls(
            webhook_timeout_s=timeout,
            retry_schedule_s=schedule,
            retry_jitter=jitter,
            smtp=_smtp(env),
        )


def _smtp(env: Mapping[str, str]) -> SmtpSettings | None:
    host = env.get("TOKENWARDEN_SMTP_HOST", "").strip()
    if not host:
        return None
    starttls_text = env.get("TOKENWARDEN_SMTP_STARTTLS", "true").strip().lower()
    if starttls_text not in {"true", "false", "1", "0", "yes", "no"}:
        raise ConfigError(f"TOKENWARDEN_SMTP_STARTTLS {starttls_text!r} is not true or false")
    starttls = starttls_text in {"true", "1", "yes"}
    port = int(_number(env, "TOKENWARDEN_SMTP_PORT", 587 if starttls else 25, 1, 65535))
    username = env.get("TOKENWARDEN_SMTP_USERNAME", "").strip() or None
    password = env.get("TOKENWARDEN_SMTP_PASSWORD", "") or None
    sender = env.get("TOKENWARDEN_SMTP_FROM", "").strip() or f"tokenwarden@{socket.getfqdn()}"
    return SmtpSettings(
        host=host, port=port, starttls=starttls, sender=sender, username=username, password=password
    )


def _number(env: Mapping[str, str], name: str, default: float, least: float, most: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = least - 1
    if not least <= value <= most:
        raise ConfigError(f"{name} {text!r} is not a number from {least:g} to {most:g}")
    return value
