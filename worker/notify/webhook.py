"""Sending one outgoing event to a webhook: CloudEvents structured JSON, signed per Standard
Webhooks (`webhook-id` = the event id, the same on every attempt, so receivers de-duplicate).

The response body is never read: a receiver that streams garbage forever cannot hold a worker
longer than the timeout, and redirects are not followed (a 3xx is a failed attempt).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import httpx
from standardwebhooks.webhooks import Webhook

USER_AGENT = "tokenwarden-webhooks/1"
CONTENT_TYPE = "application/cloudevents+json"


@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    status: str  # the HTTP status code, or "error"
    error: str
    latency_ms: float

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver asks never to be called again."""
        return self.status == "410"


def signed_headers(secret: str, message_id: str, body: str, now: datetime) -> dict[str, str]:
    return {
        "content-type": CONTENT_TYPE,
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body),
    }


def post_event(
    client: httpx.Client, url: str, secret: str, message_id: str, body: str, now: datetime
) -> AttemptResult:
    headers = signed_headers(secret, message_id, body, now)
    started = time.perf_counter()
    try:
        with client.stream("POST", url, content=body.encode(), headers=headers) as response:
            status = response.status_code
    except httpx.TimeoutException:
        return _failed("timed out", started)
    except httpx.HTTPError as exc:
        return _failed(f"{type(exc).__name__}: {str(exc)[:200]}", started)
    elapsed = (time.perf_counter() - started) * 1000
    if 200 <= status < 300:
        return AttemptResult(True, str(status), "", elapsed)
    return AttemptResult(False, str(status), f"answered HTTP {status}", elapsed)


def _failed(reason: str, started: float) -> AttemptResult:
    return AttemptResult(False, "error", reason, (time.perf_counter() - started) * 1000)


def http_client(timeout_s: float) -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
        follow_redirects=False,
        headers={"user-agent": USER_AGENT},
    )
