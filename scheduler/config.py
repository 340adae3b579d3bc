"""The scheduler's settings, read once from the environment at start-up.

TOKENWARDEN_EXPIRY_THRESHOLDS    days before expiry to warn at     default 120,60,30,14,7,3,1
TOKENWARDEN_SCAN_INTERVAL        seconds between scans              default 3600
TOKENWARDEN_SCHEDULER_LEASE_TTL  seconds a silent leader keeps the lease; it is renewed every
                                 third of that, and another replica takes over within
                                 about 1.33x it                     default 15
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from scheduler.thresholds import DEFAULT_THRESHOLDS, ThresholdError, parse_thresholds
from worker.errors import ConfigError

DEFAULT_SCAN_INTERVAL_S = 3600
DEFAULT_LEASE_TTL_S = 15


@dataclass(frozen=True)
class SchedulerSettings:
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    scan_interval_s: int = DEFAULT_SCAN_INTERVAL_S
    lease_ttl_s: int = DEFAULT_LEASE_TTL_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SchedulerSettings:
        env = os.environ if env is None else env
        text = env.get("TOKENWARDEN_EXPIRY_THRESHOLDS")
        try:
            thresholds = DEFAULT_THRESHOLDS if text is None else parse_thresholds(text)
        except ThresholdError as exc:
            raise ConfigError(f"TOKENWARDEN_EXPIRY_THRESHOLDS {exc}") from None
        return cls(
            thresholds=thresholds,
            scan_interval_s=_seconds(
                env, "TOKENWARDEN_SCAN_INTERVAL", DEFAULT_SCAN_INTERVAL_S, 1, 7 * 86400
            ),
            lease_ttl_s=_seconds(
                env, "TOKENWARDEN_SCHEDULER_LEASE_TTL", DEFAULT_LEASE_TTL_S, 3, 600
            ),
        )


def _seconds(env: Mapping[str, str], name: str, default: int, least: int, most: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if not least <= value <= most:
        raise ConfigError(
            f"{name} {text!r} is not a whole number of seconds from {least} to {most}"
        )
    return value
