"""Asking Okta's Users API about the people who downloaded tokens.

`GET {org}/api/v1/users/{login}` with `Authorization: SSWS <api token>` answers the user:
`status` (SUSPENDED and DEPROVISIONED are disabled), `passwordChanged`, `statusChanged`.
What an answer means is decided by the pure functions at the end of this module:

    200 with a user                   Observation
    404 with Okta's E0000007          Observation(found=False): Okta says no such user
    401 / 403 with an Okta errorCode  DirectoryCredentialsRejected (E0000011 invalid token,
                                      E0000006 insufficient rights): raised at once
    429, 5xx, timeout, connection     retried (Retry-After or X-Rate-Limit-Reset, capped at
                                      max_wait_s, else backoff 1 s, 2 s ...), then Unobserved
    anything else (an HTML 404 ...)   Unobserved, never a departure

In one observe() call, logins are asked one at a time until Okta answers one; after 3 in a
row fail (anything but Okta's answer about the user: a 5xx, a timeout, a proxy's page ...)
the rest are not asked, and when none was answered, DirectoryUnreachable. One warning per call
sums up the logins left unobserved.

Okta reports its rate limit on every answer (X-Rate-Limit-Remaining, X-Rate-Limit-Reset in
epoch seconds, read against the answer's own Date): when none remain, every thread of the
client waits for the reset (at most max_wait_s) before its next request, instead of running
into 429s. The API token never leaves this module: not in a message, a log line or a repr.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote

import httpx
import structlog

from worker.config import DirectorySettings
from worker.directories.base import Observation, Unobserved, WatchedLogin
from worker.errors import DirectoryCredentialsRejected, DirectoryUnreachable
from worker.logs import REDACTED
from worker.outbound import USER_AGENT, retry_after_s, tls_context

log = structlog.get_logger(__name__)

USERS_PATH = "/api/v1/users/"
#: Okta's statuses of an account that can no longer sign in.
DISABLED_STATUSES = frozenset({"SUSPENDED", "DEPROVISIONED"})
#: Okta's errorCode for "Not found: Resource not found: <login> (User)".
NOT_FOUND_CODE = "E0000007"
#: Logins failing in a row (anything but Okta's answer about them) after which a call stops.
STOP_AFTER_FAILURES = 3
STOPPED = "the directory stopped answering"
#: First wait before a retry without Retry-After, in seconds; doubled for each further one.
BACKOFF_FIRST_S = 1.0
#: Largest answer read, in bytes (a user is a few KiB).
MAX_BODY_BYTES = 256 * 1024
#: Longest piece of Okta's errorSummary kept in a message, in characters.
MAX_SUMMARY = 200


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes
    #: Why the body could not be read (too large, undecodable); "" when it was.
    unreadable: str = ""


@dataclass
class _Round:
    """One observe() call: the run of failing logins, whether Okta answered any. Until it
    has, and while logins fail, they are asked one at a time (`turn()`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    probe: threading.Lock = field(default_factory=threading.Lock)
    streak: int = 0
    stopped: bool = False
    answered: bool = False
    unobserved: int = 0
    first_failure: str = ""

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        if self.streak or not self.answered:
            with self.probe:
                if self.streak or not self.answered:  # this login is the probe
                    yield
                    return
        yield

    def record(self, result: Observation | Unobserved, failed: bool) -> Observation | Unobserved:
        """`failed`: not an answer of Okta about the user (a 5xx, an error page ...)."""
        with self.lock:
            if isinstance(result, Unobserved):
                self.unobserved += 1
                self.first_failure = self.first_failure or result.why
            if not failed:
                self.answered, self.streak = True, 0
                return result
            self.streak += 1
            self.stopped = self.stopped or self.streak >= STOP_AFTER_FAILURES
            return result


class OktaApiClient:
    """A client of one Okta org's Users API, its threads sharing the rate limit."""

    def __init__(
        self,
        org_url: str,
        api_token: str,
        *,
        settings: DirectorySettings,
        sleep: Callable[[float], None] = time.sleep,
        max_wait_s: float = 60,
        attempts: int = 3,
    ):
        self._base = org_url.rstrip("/")
        self._host = httpx.URL(self._base).host or self._base
        self._token = api_token
        self._timeout_s = settings.timeout_s
        self._concurrency = max(1, settings.concurrency)
        self._sleep = sleep
        self._max_wait_s = max_wait_s
        self._attempts = max(1, attempts)
        self._lock = threading.Lock()
        self._paused_until = 0.0  # time.monotonic() before which no request is sent
        self.requests_made = 0
        self._http = httpx.Client(
            verify=tls_context(settings.ca_bundle),
            timeout=settings.timeout_s,
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
        )

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"<OktaApiClient {self._base} requests_made={self.requests_made}>"

    def observe(self, logins: Sequence[WatchedLogin]) -> list[Observation | Unobserved]:
        if not logins:
            return []
        call = _Round()
        workers = min(self._concurrency, len(logins))
        with ThreadPoolExecutor(workers, thread_name_prefix="okta") as pool:
            futures = [pool.submit(self._observe_one, w.login, call) for w in logins]
            results = [future.result() for future in futures]
        why = call.first_failure
        if not call.answered:
            log.warning("okta_unreachable", host=self._host, why=why)
            raise DirectoryUnreachable(f"Okta ({self._host}) cannot be asked: {why}")
        if call.unobserved:  # one line per call, the first why
            log.warning("okta_unobserved", host=self._host, unobserved=call.unobserved, why=why)
        return results

    def _observe_one(self, login: str, call: _Round) -> Observation | Unobserved:
        with call.turn():
            if call.stopped:
                return call.record(Unobserved(login, STOPPED), failed=True)
            try:
                result, failed = self._ask(login)
            except DirectoryCredentialsRejected:
                call.stopped = True  # the logins not yet asked are not asked
                raise
            call.record(result, failed)
        if isinstance(result, Unobserved):
            log.debug("okta_unobserved_login", host=self._host, login=login, why=result.why)
        return result

    def _ask(self, login: str) -> tuple[Observation | Unobserved, bool]:
        """What Okta says of `login`, and whether it failed: anything but Okta's answer about
        the user (a user, Okta's not found, a user it could not read) is a failure."""
        path = USERS_PATH + quote(login, safe="")
        for attempt in range(1, self._attempts + 1):
            answer, failure = self._attempt(path)
            if failure is None:
                assert answer is not None
                result = self._meaning(login, answer)
                return result, isinstance(result, Unobserved) and not about_user(answer)
            if attempt == self._attempts:
                return Unobserved(login, f"{failure}, {attempt} attempts"), True
            wait = self._wait_before_retry(attempt, answer)
            if wait > self._max_wait_s:
                why = f"{failure}, asked to wait {wait:g} s (more than {self._max_wait_s:g} s)"
                return Unobserved(login, why), True
            log.info("okta_retry", host=self._host, why=failure, attempt=attempt, wait_s=wait)
            self._pause_for(wait, shared=answer is not None and answer.status == 429)
        raise AssertionError("unreachable: the loop returns")  # pragma: no cover

    def _attempt(self, path: str) -> tuple[_Answer | None, str | None]:
        """An answer, and why it is worth retrying (None: it is not)."""
        self._wait_for_rate_limit()
        try:
            answer = self._fetch(path)
        except httpx.TimeoutException:
            return None, f"no answer within {self._timeout_s:g} s"
        except httpx.TransportError as exc:  # its text may name the URL: only its kind is kept
            return None, f"cannot connect ({type(exc).__name__})"
        if answer.status == 429 or answer.status >= 500:
            error = okta_error(answer.body)
            code = f" {error[0]}" if error else ""
            return answer, f"HTTP {answer.status}{code}"
        self._note_rate_limit(answer.headers)
        return answer, None

    def _fetch(self, path: str) -> _Answer:
        with self._lock:
            self.requests_made += 1
        headers = {"Authorization": f"SSWS {self._token}"}
        # httpx's timeouts are per read: one deadline for the whole body stops a trickle.
        deadline = time.monotonic() + self._timeout_s
        with self._http.stream("GET", self._base + path, headers=headers) as response:
            body = bytearray()
            try:
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        why = f"larger than {MAX_BODY_BYTES // 1024} KiB"
                        return _Answer(response.status_code, response.headers, b"", why)
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("the answer came too slowly")
            except httpx.DecodingError as exc:
                why = f"undecodable ({type(exc).__name__})"
                return _Answer(response.status_code, response.headers, b"", why)
            return _Answer(response.status_code, response.headers, bytes(body))

    def _meaning(self, login: str, answer: _Answer) -> Observation | Unobserved:
        if answer.status in (401, 403) and (error := okta_error(answer.body)):
            code, summary = error
            raise DirectoryCredentialsRejected(self._rejected(answer.status, code, summary))
        if answer.unreadable:
            return Unobserved(login, f"HTTP {answer.status} from Okta {answer.unreadable}")
        return read_answer(login, answer.status, answer.body)

    def _rejected(self, status: int, code: str, summary: str) -> str:
        summary = summary.replace(self._token, REDACTED) if self._token else summary
        log.warning("okta_credentials_rejected", host=self._host, status=status, code=code)
        todo = (
            "give the admin who created the token the Read-only Administrator role"
            if status == 403
            else "create a new API token in Okta's admin console (Security > API > Tokens) "
            "and give it with `tokenwarden sources set-credential NAME --api-token -`"
        )
        return (
            f"Okta ({self._host}) refused the API token: {code} {summary} (HTTP {status}); {todo}"
        )

    # Waiting

    def _wait_before_retry(self, attempt: int, answer: _Answer | None) -> float:
        """What a 429 or 5xx asks (Retry-After, else X-Rate-Limit-Reset), else backoff."""
        if answer is not None:
            now = datetime.now(UTC)
            asked = retry_after_s(answer.headers.get("retry-after"), now)
            if asked is None and answer.status == 429:
                asked = reset_wait_s(answer.headers, now)
            if asked is not None:
                return asked
        return BACKOFF_FIRST_S * 2 ** (attempt - 1)

    def _note_rate_limit(self, headers: Mapping[str, str]) -> None:
        """None left in Okta's window: every thread waits for its reset (at most max_wait_s)."""
        if (headers.get("x-rate-limit-remaining") or "").strip() != "0":
            return
        wait = reset_wait_s(headers, datetime.now(UTC))
        if not wait:
            return
        wait = min(wait, self._max_wait_s)
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + wait)

    def _wait_for_rate_limit(self) -> None:
        with self._lock:
            until = self._paused_until
        wait = until - time.monotonic()
        if wait > 0:
            log.info("okta_rate_limit_wait", host=self._host, wait_s=round(wait, 3))
            self._sleep(wait)
            self._end_pause(until)

    def _pause_for(self, wait: float, *, shared: bool) -> None:
        """Sleep `wait`; for a 429 the other threads hold their requests meanwhile."""
        if not shared:
            self._sleep(wait)
            return
        with self._lock:
            until = self._paused_until = max(self._paused_until, time.monotonic() + wait)
        self._sleep(wait)
        self._end_pause(until)

    def _end_pause(self, until: float) -> None:
        """The pause is over (a sleep passed in by a test does not move the clock)."""
        with self._lock:
            if self._paused_until == until:
                self._paused_until = 0.0


# What Okta's answers mean: pure functions


def about_user(answer: _Answer) -> bool:
    """A user Okta answered (with a status), its stamps readable or not."""
    try:
        user = json.loads(answer.body) if answer.status == 200 and not answer.unreadable else 0
    except ValueError:
        return False
    return isinstance(user, dict) and isinstance(user.get("status"), str) and bool(user["status"])


def read_answer(login: str, status: int, body: bytes) -> Observation | Unobserved:
    """An answer that is neither transient nor a rejection of the token."""
    if status == 200:
        return read_user(login, body)
    error = okta_error(body)
    if status == 404 and error is not None and error[0] == NOT_FOUND_CODE:
        return Observation(login, found=False, enabled=False, status="not found")
    if error is not None:
        return Unobserved(login, f"unexpected answer from Okta: HTTP {status} {error[0]}")
    return Unobserved(login, f"unexpected answer from Okta: HTTP {status} without Okta's error")


def read_user(login: str, body: bytes) -> Observation | Unobserved:
    try:
        user = json.loads(body)
    except ValueError:
        return Unobserved(login, "unexpected answer from Okta: a user that is not JSON")
    status = user.get("status") if isinstance(user, dict) else None
    if not isinstance(status, str) or not status:
        return Unobserved(login, "unexpected answer from Okta: a user without a status")
    stamps = {}
    for name in ("passwordChanged", "statusChanged"):
        value = user.get(name)
        stamps[name] = parse_timestamp(value)
        if value is not None and stamps[name] is None:
            return Unobserved(login, f"Okta's {name} {str(value)[:40]!r} is not a timestamp")
    return Observation(
        login,
        found=True,
        enabled=status not in DISABLED_STATUSES,
        status=status,
        password_changed_at=stamps["passwordChanged"],
        status_changed_at=stamps["statusChanged"],
    )


def parse_timestamp(value: object) -> datetime | None:
    """Okta's `2024-05-01T08:30:00.000Z` as an aware UTC datetime; None when unreadable."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when.astimezone(UTC)


def okta_error(body: bytes) -> tuple[str, str] | None:
    """(errorCode, errorSummary) of Okta's JSON error, or None when the body is not one."""
    try:
        error = json.loads(body)
    except ValueError:
        return None
    if not isinstance(error, dict):
        return None
    code, summary = error.get("errorCode"), error.get("errorSummary")
    if not isinstance(code, str) or not code.isascii() or not code.isalnum():
        return None
    summary = summary if isinstance(summary, str) else ""
    return code, " ".join(summary.split())[:MAX_SUMMARY]


def reset_wait_s(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds until X-Rate-Limit-Reset (epoch seconds), counted from the answer's own Date
    (Okta's clock) or else from `now`; None when absent or unreadable, never negative."""
    reset = (headers.get("x-rate-limit-reset") or "").strip()
    if not (reset.isascii() and reset.isdigit()):
        return None
    return max(0.0, int(reset) - _answer_date(headers, now).timestamp())


def _answer_date(headers: Mapping[str, str], now: datetime) -> datetime:
    try:
        date = parsedate_to_datetime(headers.get("date") or "")
    except (TypeError, ValueError, IndexError):
        return now
    return date if date.tzinfo is not None else now
