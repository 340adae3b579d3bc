"""Asking Apple's device enrollment service about one token.

`GET {url}/session`, signed with the token's OAuth 1.0a credentials (oauthlib signs, httpx
sends), answers a session token; `GET {url}/account` with that session answers who the token
belongs to. Sessions are kept in memory only, per token fingerprint, a bounded number of them.
Transient failures (timeouts, connection errors, 429, 5xx) are retried with backoff; every
other answer is classified by worker/apple/classify.py.

No credential and no session token is ever logged or put in an error: httpx's own exceptions
(whose text may carry a URL) are replaced by messages of our own, and every message is scrubbed
of the call's secrets before it leaves.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import structlog
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, Client

from worker.apple.classify import (
    classify,
    is_transient,
    quote_body,
    read_account,
    read_session,
    verdict_of,
)
from worker.apple.verdicts import AppleAccount, CheckResult, Verdict
from worker.config import AppleSettings
from worker.crypto.payload import CREDENTIAL_FIELDS, TokenCredentials
from worker.errors import AppleError, AppleMalformed, AppleUnreachable
from worker.logs import REDACTED
from worker.outbound import USER_AGENT, retry_after_s, tls_context

log = structlog.get_logger(__name__)

SESSION_PATH = "/session"
ACCOUNT_PATH = "/account"
SESSION_HEADER = "X-ADM-Auth-Session"
#: The protocol version of Apple's device enrollment API that tokenwarden speaks.
PROTOCOL_VERSION = "7"
#: Session tokens kept at most (least recently used dropped first): ~200 bytes each.
MAX_SESSIONS = 1024
#: Largest answer read, in bytes (an account is well under 1 KiB).
MAX_BODY_BYTES = 256 * 1024
#: First wait before a retry, in seconds; doubled for each further one.
BACKOFF_FIRST_S = 1.0
#: Share by which each backoff wait may grow at random, so many checks do not retry in step.
BACKOFF_JITTER = 0.2


class SessionCache:
    """Session tokens by token fingerprint, in memory only, at most `capacity` of them (the
    least recently used goes first). Thread-safe; its repr never shows a token."""

    def __init__(self, capacity: int = MAX_SESSIONS):
        self._capacity = capacity
        self._tokens: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            token = self._tokens.get(key)
            if token is not None:
                self._tokens.move_to_end(key)
            return token

    def put(self, key: str, token: str) -> None:
        with self._lock:
            self._tokens[key] = token
            self._tokens.move_to_end(key)
            while len(self._tokens) > self._capacity:
                self._tokens.popitem(last=False)

    def drop(self, key: str, token: str) -> None:
        """Forget `token`, unless another thread already replaced it."""
        with self._lock:
            if self._tokens.get(key) == token:
                del self._tokens[key]

    def __len__(self) -> int:
        return len(self._tokens)

    def __repr__(self) -> str:
        return f"<SessionCache {len(self)} of {self._capacity}>"


@dataclass(frozen=True)
class _Answer:
    path: str
    status: int
    headers: httpx.Headers
    body: bytes


@dataclass
class _Call:
    """One `account()` call: the token asked about, and every secret it has seen, so they can
    be scrubbed from what leaves."""

    credentials: TokenCredentials
    key: str
    secrets: list[str] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, credentials: TokenCredentials) -> _Call:
        values = [getattr(credentials, f).get_secret_value() for f in CREDENTIAL_FIELDS]
        return cls(credentials, credentials.fingerprint, values)

    def scrub(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text


class AppleClient:
    """A client of Apple's device enrollment service, shared by threads."""

    def __init__(
        self,
        settings: AppleSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        max_retry_after_s: float = 60,
        attempts: int = 3,
    ):
        self._base = settings.url.rstrip("/")
        self._host = httpx.URL(self._base).host or self._base
        self._timeout_s = settings.timeout_s
        self._sleep = sleep
        self._max_retry_after_s = max_retry_after_s
        self._attempts = max(1, attempts)
        self._sessions = SessionCache()
        self._http = httpx.Client(
            timeout=settings.timeout_s,
            follow_redirects=False,
            transport=transport,
            verify=tls_context(settings.ca_bundle),
            headers={"User-Agent": USER_AGENT},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AppleClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AppleClient {self._base} {self._sessions!r}>"

    def check(self, credentials: TokenCredentials) -> CheckResult:
        """Ask Apple about the token; every failure becomes a verdict, never an AppleError."""
        try:
            account = self.account(credentials)
        except AppleError as exc:
            return CheckResult(verdict_of(exc), code=exc.code, detail=str(exc))
        return CheckResult(Verdict.ACCEPTED, account=account)

    def account(self, credentials: TokenCredentials) -> AppleAccount:
        """Apple's `/account` for the token; raises AppleRejected, AppleTermsNotAccepted,
        AppleUnreachable or AppleMalformed."""
        call = _Call.of(credentials)
        try:
            return self._account(call)
        except AppleError as exc:
            message = call.scrub(str(exc))
            if message == str(exc):
                raise
            raise type(exc)(message, code=exc.code) from None

    def _account(self, call: _Call) -> AppleAccount:
        session = self._sessions.get(call.key) or self._open_session(call)
        answer = self._get_account(call, session)
        if answer.status == 401:
            # Sessions expire (and Apple may drop one early): one new session, one replay.
            self._sessions.drop(call.key, session)
            log.info("apple_session_renewed", token_fingerprint=call.key)
            answer = self._get_account(call, self._open_session(call))
        self._raise_for(call, answer)
        return self._reading(call, answer, read_account)

    def _open_session(self, call: _Call) -> str:
        answer = self._send(SESSION_PATH, lambda: self._signed(call.credentials))
        self._raise_for(call, answer)
        session = self._reading(call, answer, read_session, quote=False)
        call.secrets.append(session)
        self._sessions.put(call.key, session)
        return session

    def _get_account(self, call: _Call, session: str) -> _Answer:
        call.secrets.append(session)
        headers = {SESSION_HEADER: session, "X-Server-Protocol-Version": PROTOCOL_VERSION}
        answer = self._send(ACCOUNT_PATH, lambda: headers)
        renewed = answer.headers.get(SESSION_HEADER, "").strip()
        if renewed and renewed != session:  # Apple hands out a new session: use it from now
            call.secrets.append(renewed)
            self._sessions.put(call.key, renewed)
        return answer

    def _signed(self, credentials: TokenCredentials) -> dict[str, str]:
        """The OAuth 1.0a headers for `GET /session`; a fresh nonce and timestamp each time."""
        signer = Client(
            credentials.consumer_key.get_secret_value(),
            client_secret=credentials.consumer_secret.get_secret_value(),
            resource_owner_key=credentials.access_token.get_secret_value(),
            resource_owner_secret=credentials.access_secret.get_secret_value(),
            signature_method=SIGNATURE_HMAC_SHA1,
        )
        _uri, headers, _body = signer.sign(self._base + SESSION_PATH, "GET")
        return headers

    def _raise_for(self, call: _Call, answer: _Answer) -> None:
        error = classify(answer.path, answer.status, answer.headers, answer.body)
        if error is not None:
            self._log_if_malformed(call, error, answer, quote=True)
            raise error

    def _reading(self, call: _Call, answer: _Answer, read: Callable, *, quote: bool = True):
        try:
            return read(answer.path, answer.status, answer.body)
        except AppleMalformed as exc:
            self._log_if_malformed(call, exc, answer, quote=quote)
            raise

    def _log_if_malformed(
        self, call: _Call, error: AppleError, answer: _Answer, *, quote: bool
    ) -> None:
        if isinstance(error, AppleMalformed):
            log.warning(
                "apple_answer_malformed",
                path=answer.path,
                status=answer.status,
                code=error.code,
                body=call.scrub(quote_body(answer.body)) if quote else "(not shown)",
                token_fingerprint=call.key,
            )

    def _send(self, path: str, headers: Callable[[], dict[str, str]]) -> _Answer:
        """GET `path`, retrying transient failures; after the last attempt AppleUnreachable."""
        for attempt in range(1, self._attempts + 1):
            answer, failure = self._attempt(path, headers())
            if failure is None and answer is not None:
                return answer
            assert failure is not None
            if attempt == self._attempts:
                log.warning("apple_unreachable", path=path, code=failure.code, attempts=attempt)
                raise AppleUnreachable(f"{failure}, {attempt} attempts", code=failure.code)
            wait = self._wait_before_retry(attempt, answer)
            log.info("apple_retry", path=path, code=failure.code, attempt=attempt, wait_s=wait)
            self._sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _attempt(
        self, path: str, headers: dict[str, str]
    ) -> tuple[_Answer | None, AppleUnreachable | None]:
        try:
            answer = self._fetch(path, headers)
        except httpx.TimeoutException:
            return None, AppleUnreachable(
                f"no answer from {self._host} for {path} within {self._timeout_s:g} s",
                code="timeout",
            )
        except httpx.TransportError as exc:  # its text may name the URL: only its kind is kept
            return None, AppleUnreachable(
                f"cannot reach {self._host} for {path} ({type(exc).__name__})", code="connection"
            )
        if is_transient(answer.status):
            transient = classify(path, answer.status, answer.headers, answer.body)
            assert isinstance(transient, AppleUnreachable)
            return answer, transient
        return answer, None

    def _fetch(self, path: str, headers: dict[str, str]) -> _Answer:
        # httpx's timeouts are per read: one deadline for the whole body stops a trickle.
        deadline = time.monotonic() + self._timeout_s
        try:
            with self._http.stream("GET", self._base + path, headers=headers) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise AppleMalformed(
                            f"unexpected answer from Apple's enrollment service: HTTP "
                            f"{response.status_code} from {path} larger than "
                            f"{MAX_BODY_BYTES // 1024} KiB",
                            code="too_large",
                        )
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("the answer came too slowly")
                return _Answer(path, response.status_code, response.headers, bytes(body))
        except httpx.DecodingError as exc:
            raise AppleMalformed(
                f"unexpected answer from Apple's enrollment service: an undecodable body "
                f"from {path} ({type(exc).__name__})",
                code="undecodable",
            ) from None

    def _wait_before_retry(self, attempt: int, answer: _Answer | None) -> float:
        """Retry-After when the answer carries one (capped), else exponential backoff."""
        if answer is not None:
            asked = retry_after_s(answer.headers.get("retry-after"), datetime.now(UTC))
            if asked is not None:
                return min(asked, self._max_retry_after_s)
        backoff = BACKOFF_FIRST_S * 2 ** (attempt - 1)
        return round(backoff * (1 + BACKOFF_JITTER * random.random()), 3)
