"""Sending one outgoing event to a webhook: CloudEvents structured JSON, signed per Standard
Webhooks (`webhook-id` = the event id, the same on every attempt, so receivers de-duplicate).

The whole request has one deadline (httpx's timeouts are per read, so a receiver trickling
bytes could otherwise hold a worker for minutes); the response body is never read, and
redirects are not followed (a 3xx is a failed attempt).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from worker.notify.subscriptions import redact_url
from worker.outbound import tls_context

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
    url: str,
    secret: str,
    message_id: str,
    body: str,
    now: datetime,
    timeout_s: float,
    ca_bundle: Path | None = None,
) -> AttemptResult:
    """POST the event; every failure (network, status, deadline) is a failed attempt."""
    started = time.perf_counter()
    try:
        headers = signed_headers(secret, message_id, body, now)
        status = asyncio.run(_post(url, headers, body.encode(), timeout_s, ca_bundle))
    except TimeoutError:
        return _failed(f"no answer within {timeout_s:g} s", started)
    except Exception as exc:  # httpx.HTTPError, a URL httpx cannot even use, and the like
        return _failed(f"{type(exc).__name__}: {without_url(str(exc), url)[:200]}", started)
    elapsed = (time.perf_counter() - started) * 1000
    if 200 <= status < 300:
        return AttemptResult(True, str(status), "", elapsed)
    return AttemptResult(False, str(status), f"answered HTTP {status}", elapsed)


async def _post(
    url: str, headers: dict[str, str], body: bytes, timeout_s: float, ca_bundle: Path | None
) -> int:
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
    client = httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, verify=tls_context(ca_bundle)
    )
    async with client:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", url, content=body, headers=headers) as response:
                return response.status_code


def without_url(text: str, url: str) -> str:
    """`text` (an HTTP client's error) with the URL shown as redact_url shows it, and any
    piece of its path or query left out: they may hold a secret."""
    shown = redact_url(url)
    parts = urlsplit(url)
    try:
        normalized = str(httpx.URL(url))
    except Exception:  # not a URL httpx can read: only the text as given
        normalized = url
    for whole in sorted({url, normalized}, key=len, reverse=True):
        text = text.replace(whole, shown)
    pieces = {parts.path, parts.query, urlsplit(normalized).path, urlsplit(normalized).query}
    # and each long segment or value on its own, however it is quoted (a secret is long)
    pieces |= {p for piece in set(pieces) for p in re.split(r"[/&=;]", piece) if len(p) >= 8}
    pieces |= {form(piece) for piece in set(pieces) for form in (quote, unquote)}
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) > 1:
            text = text.replace(piece, "…")
    return text


def _failed(reason: str, started: float) -> AttemptResult:
    return AttemptResult(False, "error", reason, (time.perf_counter() - started) * 1000)
