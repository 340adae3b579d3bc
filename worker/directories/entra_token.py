"""The access token for Microsoft Graph: the client-credentials grant of an app registered in
Entra ID, through msal (which discovers the tenant's endpoints, asks for the token and keeps it
until shortly before it expires).

msal's HTTP goes through tokenwarden's TLS (TOKENWARDEN_CA_BUNDLE trusted), with the
directory timeout, and every request is counted. msal's own cache of failed POSTs (which would
answer a retry within 5 s with the same 500, without asking) is not used: the client retries
with its own backoff. No message, log or repr holds the client secret or a bearer.

A redirect is never followed (a 307 would send the client secret on to where it points) and an
answer is read streamed, at most 256 KiB: either is a TokenUnavailable not worth retrying.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import msal
import requests
from msal.exceptions import MsalServiceError

from worker.config import DirectorySettings
from worker.directories.graph import header, quote
from worker.errors import DirectoryCredentialsRejected, DirectoryUnreachable
from worker.logs import REDACTED
from worker.outbound import requests_session

#: Entra's token endpoint errors that mean "busy, ask again" rather than "refused".
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
#: What to do about each of Entra's refusals.
HINTS = {
    "invalid_client": "check the client secret (its Value, not its Secret ID) and that it has "
    "not expired (App registrations → the app → Certificates & secrets)",
    "unauthorized_client": "check the client id (the app's Application ID) and the tenant id",
    "invalid_tenant": "check the tenant id (Entra admin center → Overview → Tenant ID)",
    "invalid_request": "check the tenant id and the client id",
    "invalid_scope": "check TOKENWARDEN_GRAPH_URL (the scope asked is <graph url>/.default)",
}
#: Largest answer of the login endpoint read, in bytes (a token is a few KiB).
MAX_ANSWER_BYTES = 256 * 1024


class TokenUnavailable(DirectoryUnreachable):
    """The token could not be had this time (timeout, connection, 429, 5xx): ask again,
    after `retry_after` (Entra's header as sent) when it gave one. The client retries it and
    raises a DirectoryUnreachable of its own after the last attempt; at once when `final`
    (a redirect, an answer too large: asking again would get the same)."""

    def __init__(self, why: str, retry_after: str | None = None, *, final: bool = False):
        super().__init__(why)
        self.why = why
        self.retry_after = retry_after
        self.final = final


@dataclass
class _Last:
    status: int | None = None
    retry_after: str | None = None
    body: bytes = b""


class _NoPostCache(dict):
    """msal's HTTP cache with its failed-POST entries refused (GET discovery is still kept)."""

    def __setitem__(self, key, value) -> None:
        if isinstance(key, str) and key.startswith("POST "):
            return
        super().__setitem__(key, value)


class _CountingHttp:
    """The HTTP client msal is given: tokenwarden's TLS, a timeout, each request counted, no
    redirect followed, at most MAX_ANSWER_BYTES read, and the last answer remembered (to tell
    Entra's refusals from a proxy's page)."""

    def __init__(self, settings: DirectorySettings, count: Callable[[], None]):
        self._session = requests_session(settings.ca_bundle)
        self._timeout_s = settings.timeout_s
        self._count = count
        self.last = _Last()

    def get(self, url, **kwargs):
        return self._send("GET", url, **kwargs)

    def post(self, url, **kwargs):
        return self._send("POST", url, **kwargs)

    def _send(self, method: str, url: str, **kwargs):
        kwargs.setdefault("timeout", self._timeout_s)
        kwargs.update(allow_redirects=False, stream=True)
        self.last = _Last()
        self._count()
        with self._session.request(method, url, **kwargs) as response:
            status = response.status_code
            if 300 <= status < 400:
                raise TokenUnavailable(
                    f"Entra ID's login endpoint answered HTTP {status}, a redirect (not followed)",
                    final=True,
                )
            body = self._read(response)
        response._content = body  # what msal reads (.text, .json())
        self.last = _Last(status, header(response.headers, "retry-after"), body)
        return response

    def _read(self, response: requests.Response) -> bytes:
        """The body, within one deadline for all of it; at most MAX_ANSWER_BYTES."""
        deadline = time.monotonic() + self._timeout_s
        body = bytearray()
        for chunk in response.iter_content(64 * 1024):
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise TokenUnavailable(
                    f"Entra ID's login endpoint answered more than {MAX_ANSWER_BYTES >> 10} KiB",
                    final=True,
                )
            if time.monotonic() > deadline:
                raise requests.Timeout("the answer came too slowly")
        return bytes(body)

    def close(self) -> None:
        self._session.close()


class EntraToken:
    """One app's token for Graph, shared by threads."""

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        settings: DirectorySettings,
        count: Callable[[], None],
    ):
        self._tenant = tenant_id
        self._client_id = client_id
        self._secret = client_secret
        self._authority = f"{settings.entra_login_url.rstrip('/')}/{tenant_id}"
        self._scope = f"{settings.graph_url.rstrip('/')}/.default"
        self._http = _CountingHttp(settings, count)
        self._lock = threading.Lock()
        self._app: msal.ConfidentialClientApplication | None = None
        self._bearers: list[str] = []

    @property
    def login_host(self) -> str:
        return urlsplit(self._authority).netloc

    def __repr__(self) -> str:
        return f"<EntraToken tenant={self._tenant} client={self._client_id}>"

    def bearer(self) -> str:
        """The access token (msal's cached one while it lasts). Raises
        DirectoryCredentialsRejected or TokenUnavailable."""
        with self._lock:
            result = self._acquire()
            token = result.get("access_token")
            if isinstance(token, str) and token:
                if token not in self._bearers:
                    self._bearers = [*self._bearers[-7:], token]
                return token
            raise self._refusal(result)

    def renew(self, stale: str) -> None:
        """Forget `stale` (Graph refused it), unless another thread already did."""
        with self._lock:
            if self._app is None:
                return
            cache = self._app.token_cache
            for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
                if item.get("secret") == stale:
                    cache.remove_at(item)

    def scrub(self, text: str) -> str:
        for secret in sorted([self._secret, *self._bearers], key=len, reverse=True):
            if secret:
                text = text.replace(secret, REDACTED)
        return text

    def close(self) -> None:
        self._http.close()

    def _acquire(self) -> dict:
        try:
            if self._app is None:
                self._app = msal.ConfidentialClientApplication(
                    self._client_id,
                    client_credential=self._secret,
                    authority=self._authority,
                    http_client=self._http,
                    instance_discovery=False,
                    http_cache=_NoPostCache(),
                )
            return self._app.acquire_token_for_client(scopes=[self._scope])
        except requests.Timeout:
            raise TokenUnavailable("no answer from Entra ID's login endpoint in time") from None
        except requests.RequestException as exc:  # its text may hold a URL: only its kind
            raise TokenUnavailable(
                f"cannot reach Entra ID's login endpoint ({_kind(exc)})"
            ) from None
        except (MsalServiceError, ValueError):
            # a 5xx (msal raises), or an answer that is not Entra's JSON (a proxy's page)
            return self._last_as_result()

    def _last_as_result(self) -> dict:
        last = self._http.last
        try:
            document = json.loads(last.body)
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            return document
        return {"error": f"http_{last.status}", "error_description": "not Entra's error shape"}

    def _refusal(self, result: dict) -> Exception:
        error = str(result.get("error") or "no_access_token")
        description = _first_line(result.get("error_description"))
        last = self._http.last
        status = last.status or 0
        if error in TRANSIENT_ERRORS or status == 429 or status >= 500 or error.startswith("http_"):
            shown = f"HTTP {status}" + (f" {error}" if not error.startswith("http_") else "")
            return TokenUnavailable(f"Entra ID's login endpoint answered {shown}", last.retry_after)
        codes = ", ".join(re.findall(r"AADSTS\d+", description)) or error
        hint = HINTS.get(error, "check the tenant id, the client id and the client secret")
        message = (
            f"Entra ID refused the app's credentials ({error} {codes}: {description}) for "
            f"tenant {self._tenant}, client {self._client_id}: {hint}"
        )
        return DirectoryCredentialsRejected(self.scrub(message))


def _first_line(description: object) -> str:
    """Entra's error_description's first line (the rest: trace and correlation ids, time)."""
    text = str(description or "").strip().splitlines()
    return quote(text[0], 200) if text else ""


def _kind(exc: Exception) -> str:
    return (
        "TLS handshake failed"
        if isinstance(exc, requests.exceptions.SSLError)
        else type(exc).__name__
    )
