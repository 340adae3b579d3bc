"""Google's OAuth 2.0 access token for a service account with domain-wide delegation, and the
service account key file `sources add --kind google` reads.

google-auth builds and signs the JWT bearer grant (RFC 7523) and posts it to the token endpoint
through tokenwarden's own transport: a requests session trusting tokenwarden's CAs, that never
follows a redirect (a 307 would post the signed assertion wherever it points), reads the answer
streamed up to MAX_BODY_BYTES, and counts every request. google-auth's own retries of a busy
token endpoint sleep for real; the transport turns a 429 or 5xx into an exception instead, so
that the client retries with its own (injectable) sleep.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime

import google.auth.exceptions
import google.auth.transport
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from google.oauth2 import service_account

from worker.config import DirectorySettings
from worker.directories.google_answers import REFUSED_GRANT_CODES, one_line
from worker.errors import (
    DirectoryCredentialsRejected,
    DirectoryError,
    DirectoryUnreachable,
    InvalidInput,
)
from worker.outbound import requests_session, retry_after_s

#: Read-only: the users' state, and the audit of password changes.
SCOPES = (
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
    "https://www.googleapis.com/auth/admin.reports.audit.readonly",
)
#: Largest token endpoint answer read, in bytes (a token answer is about 1 KiB).
MAX_BODY_BYTES = 256 * 1024
#: What a key file must hold besides `"type": "service_account"`.
REQUIRED_FIELDS = ("client_email", "private_key", "private_key_id")


def read_service_account(text: str) -> dict:
    """A service account key file (Google Cloud console → IAM → Service accounts → Keys →
    JSON) as a dict; InvalidInput with one line of why, never quoting the key."""
    try:
        info = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidInput(
            "the service account key is not JSON: give the JSON key file downloaded from the "
            "Google Cloud console"
        ) from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise InvalidInput(
            'the key file is not a service account key (no "type": "service_account"): give '
            "the JSON key of the service account that has domain-wide delegation"
        )
    missing = [f for f in REQUIRED_FIELDS if not isinstance(info.get(f), str) or not info[f]]
    if missing:
        raise InvalidInput(
            f"the service account key lacks {', '.join(missing)}: download a new JSON key"
        )
    try:
        key = load_pem_private_key(info["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidInput(
            "the service account key's private_key is not a readable RSA private key: "
            "download a new JSON key"
        )
    return info


class _TokenEndpointBusy(DirectoryError):
    """A 429 or 5xx from the token endpoint (caught by TokenSource, never leaves it)."""

    def __init__(self, status: int, wait_s: float | None):
        super().__init__(f"HTTP {status} from Google's token endpoint")
        self.status = status
        self.wait_s = wait_s


class _TokenEndpointUnusable(DirectoryError):
    """An answer of the token endpoint not worth retrying: a redirect, an oversized body."""


class _Answer(google.auth.transport.Response):
    def __init__(self, status: int, headers, data: bytes):
        self._status, self._headers, self._data = status, headers, data

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self):
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class _CountingRequest(google.auth.transport.Request):
    """google-auth's transport, over requests: counting each request, with tokenwarden's
    timeout (for the whole answer), never following a redirect, reading at most
    MAX_BODY_BYTES, and raising on a busy token endpoint rather than letting google-auth
    sleep. Like google-auth's own, it never logs the request (whose body is the assertion)."""

    def __init__(self, settings: DirectorySettings, count: Callable[[], None], now):
        self._session = requests_session(settings.ca_bundle)
        self._timeout_s = settings.timeout_s
        self._count = count
        self._now = now

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        self._count()
        deadline = time.monotonic() + self._timeout_s
        try:
            with self._session.request(
                method,
                url,
                data=body,
                headers=headers,
                timeout=self._timeout_s,
                allow_redirects=False,
                stream=True,
            ) as response:
                if 300 <= response.status_code < 400:
                    raise _TokenEndpointUnusable(
                        f"Google's token endpoint answered a redirect (HTTP "
                        f"{response.status_code}), not followed"
                    )
                data = _capped(response, deadline)
        except requests.exceptions.RequestException as exc:
            raise google.auth.exceptions.TransportError(exc) from exc
        if response.status_code == 429 or response.status_code >= 500:
            wait = retry_after_s(response.headers.get("retry-after"), self._now())
            raise _TokenEndpointBusy(response.status_code, wait)
        return _Answer(response.status_code, response.headers, data)


def _capped(response: requests.Response, deadline: float) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(chunk_size=16 * 1024):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _TokenEndpointUnusable(
                f"Google's token endpoint answered more than {MAX_BODY_BYTES // 1024} KiB"
            )
        if time.monotonic() > deadline:
            raise requests.exceptions.ReadTimeout("the answer came too slowly")
    return bytes(body)


class TokenSource:
    """The current access token, refreshed when it expires (or when Google refused it), one
    refresh at a time. Its repr shows the service account, never the key or the token."""

    def __init__(
        self,
        info: dict,
        subject: str,
        *,
        settings: DirectorySettings,
        count: Callable[[], None],
        pause: Callable[[int, float | None], bool],
        attempts: int,
        now: Callable[[], datetime],
    ):
        url = settings.google_token_url
        self.client_email = str(info.get("client_email", ""))
        self._secrets = [str(info.get("private_key", ""))]
        try:
            credentials = service_account.Credentials.from_service_account_info(
                {**info, "token_uri": url}, scopes=list(SCOPES), subject=subject
            )
        except (ValueError, KeyError, TypeError):
            raise DirectoryCredentialsRejected(
                f"google: the service account key of {self.client_email or '(no client_email)'} "
                "cannot be used: add the source again with a new JSON key"
            ) from None
        self._credentials = credentials.with_token_uri(url)
        self._request = _CountingRequest(settings, count, now)
        self._pause = pause
        self._attempts = attempts
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<TokenSource {self.client_email}>"

    def current(self) -> str:
        with self._lock:
            if not self._credentials.valid:
                self._refresh()
            return self._credentials.token

    def renew(self, stale: str) -> str:
        """A new token, unless another thread already replaced `stale`."""
        with self._lock:
            if self._credentials.token == stale or not self._credentials.valid:
                self._refresh()
            return self._credentials.token

    def _refresh(self) -> None:
        for attempt in range(1, self._attempts + 1):
            wait = None
            try:
                self._credentials.refresh(self._request)
                return
            except _TokenEndpointUnusable as exc:
                raise DirectoryUnreachable(f"google: {exc}") from None
            except _TokenEndpointBusy as exc:
                failure, wait = str(exc), exc.wait_s
            except google.auth.exceptions.TransportError as exc:
                cause = exc.__cause__ or exc
                failure = f"cannot reach Google's token endpoint ({type(cause).__name__})"
            except google.auth.exceptions.RefreshError as exc:
                raise self._refused(exc) from None
            if attempt == self._attempts or not self._pause(attempt, wait):
                raise DirectoryUnreachable(f"google: {failure}, {attempt} attempts")
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _refused(self, exc: google.auth.exceptions.RefreshError) -> Exception:
        data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        code, description = data.get("error"), data.get("error_description")
        if not isinstance(code, str):
            shown = self._scrub(str(exc.args[0]) if exc.args else "")
            return DirectoryUnreachable(f"google: the token endpoint answered: {shown}")
        shown = self._scrub(f"{code}: {description}" if isinstance(description, str) else code)
        if code not in REFUSED_GRANT_CODES:
            return DirectoryUnreachable(f"google: the token endpoint answered {shown}")
        hint = (
            "grant domain-wide delegation for the two read-only scopes to the service "
            "account's client ID in the Admin console"
            if code == "unauthorized_client"
            else "check the service account key and the admin to impersonate"
        )
        return DirectoryCredentialsRejected(
            f"google refused the service account {self.client_email} ({shown}): {hint}"
        )

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "[redacted]")
        return one_line(text)
