"""Asking Google Workspace about the people who downloaded tokens.

For each login, the Admin SDK's Directory API (`GET /admin/directory/v1/users/{login}`) says
whether the user exists and is suspended or archived. For a found, enabled user, the Reports
API is asked three questions, each since the login's `since`: the user's own password changes
(`password_edit`) under application `user_accounts` (where Google's current documentation puts
them) and under `login` (where older documentation did), and the admins' resets of their
password (`CHANGE_PASSWORD`, application `admin`, filtered by the user's `USER_EMAIL`). The
latest of all is the password change. The Reports API keeps 180 days: older `since`s are
clamped. Its data lags a few minutes behind the change.

Answers are read streamed, up to MAX_BODY_BYTES; a redirect is never followed. A login whose
answers fail is unobserved; after STOP_AFTER logins in a row failed (whatever the failure:
a 5xx, or an error page from a proxy), the rest of the call is not asked.

The credential is a service account key with domain-wide delegation, impersonating an admin
(worker/directories/google_token.py). No key, assertion or bearer is ever logged or put in an
error: httpx's exceptions are replaced by messages of our own.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import structlog

from worker.config import DirectorySettings
from worker.directories import google_answers as answers
from worker.directories.base import Observation, Unobserved, WatchedLogin
from worker.directories.google_answers import Kind
from worker.directories.google_token import TokenSource, read_service_account
from worker.errors import DirectoryCredentialsRejected, DirectoryError, DirectoryUnreachable
from worker.outbound import retry_after_s, tls_context

__all__ = ["GoogleClient", "read_service_account"]

log = structlog.get_logger(__name__)

USERS_PATH = "/admin/directory/v1/users/"
ACTIVITY_PATH = "/admin/reports/v1/activity/users/{user}/applications/{application}"
#: How far back the Reports API answers, and the margin kept from that edge.
REPORTS_REACH = timedelta(days=180)
REPORTS_MARGIN = timedelta(hours=1)
#: Activities asked per page (the Reports API's largest), and the most pages read per question
#: (beyond it, the login is unobserved rather than judged on part of its history).
PAGE_SIZE = 1000
MAX_PAGES = 10
#: Largest answer read, in bytes (a user is a few KiB, a full page of activities ~ 100 KiB).
MAX_BODY_BYTES = 256 * 1024
#: Where a user's own `password_edit` is listed: Google's current docs, then the older ones.
OWN_CHANGE_APPLICATIONS = ("user_accounts", "login")
#: Logins failing in a row (any failure to answer, not only 5xx) after which the rest of a
#: call is not asked.
STOP_AFTER = 3
STOPPED = "the directory stopped answering"
BACKOFF_FIRST_S = 1.0
BACKOFF_JITTER = 0.2


class _NotObserved(DirectoryError):
    """One login could not be observed (never leaves the client)."""

    def __init__(self, why: str, transient: bool = False, answered: bool = False):
        super().__init__(why)
        self.why = why
        self.transient = transient
        #: Google answered, meaningfully, about this login (a user it will not show, a history
        #: too long): not a sign that the directory stopped answering.
        self.answered = answered


class _Refused(DirectoryCredentialsRejected):
    """Google refused the credential; `code` is its reason (forbidden, authError...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


#: Why a user the admin may not read is unobserved (its credential reads the admin itself).
NOT_READABLE = (
    "Google does not let the admin read this user (a domain outside the organization, or an "
    "organizational unit outside the admin role's reach)"
)


@dataclass
class _Run:
    """One observe() call's tally, shared by its threads."""

    lock: threading.Lock
    in_a_row: int = 0
    transient: int = 0
    other: int = 0
    stopped: bool = False

    def record(self, failure: _NotObserved | None) -> None:
        with self.lock:
            if failure is not None and failure.transient:
                self.transient += 1
            elif failure is not None:
                self.other += 1
            if failure is None or failure.answered:
                self.in_a_row = 0
                return
            self.in_a_row += 1
            self.stopped = self.stopped or self.in_a_row >= STOP_AFTER


@dataclass(frozen=True)
class _Answer:
    verdict: answers.Verdict
    headers: httpx.Headers | None = None
    body: bytes = b""


class GoogleClient:
    """A Google Workspace directory, asked through the Admin SDK; shared by threads."""

    def __init__(
        self,
        service_account_info: dict,
        admin_subject: str,
        *,
        settings: DirectorySettings,
        sleep: Callable[[float], None] = time.sleep,
        max_wait_s: float = 60,
        attempts: int = 3,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._base = settings.google_admin_url.rstrip("/")
        self._subject = admin_subject
        self._timeout_s = settings.timeout_s
        self._concurrency = max(1, settings.concurrency)
        self._sleep = sleep
        self._max_wait_s = max_wait_s
        self._attempts = max(1, attempts)
        self._now = now
        self._count_lock = threading.Lock()
        self.requests_made = 0
        self._tokens = TokenSource(
            service_account_info,
            admin_subject,
            settings=settings,
            count=self._counted,
            pause=self._pause,
            attempts=self._attempts,
            now=now,
        )
        self._http = httpx.Client(
            verify=tls_context(settings.ca_bundle),
            timeout=settings.timeout_s,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"<GoogleClient {self._base} as {self._tokens.client_email}>"

    def close(self) -> None:
        self._http.close()

    def observe(self, logins: Sequence[WatchedLogin]) -> list[Observation | Unobserved]:
        if not logins:
            return []
        self._tokens.current()  # a refused credential or a dead token endpoint: raised here
        run = _Run(threading.Lock())
        with ThreadPoolExecutor(max_workers=min(self._concurrency, len(logins))) as pool:
            results = list(pool.map(lambda w: self._observe_one(w, run), logins))
        unobserved = [r for r in results if isinstance(r, Unobserved)]
        if not unobserved:
            return results
        whys = [r.why for r in unobserved if r.why != STOPPED]
        why = whys[0] if whys else STOPPED
        log.warning(
            "google_logins_unobserved", unobserved=len(unobserved), of=len(results), first=why
        )
        if run.transient and not run.other and len(unobserved) == len(results):
            raise DirectoryUnreachable(f"google: {why}")
        return results

    def _observe_one(self, watched: WatchedLogin, run: _Run) -> Observation | Unobserved:
        if run.stopped:
            return Unobserved(watched.login, STOPPED)
        try:
            result = self._look_up(watched)
        except DirectoryCredentialsRejected:
            run.stopped = True  # every other request would be refused the same way
            raise
        except DirectoryUnreachable as exc:  # the token endpoint, when renewing mid-call
            why = str(exc).removeprefix("google: ")
            return self._unobserved(watched, run, _NotObserved(why, transient=True))
        except _NotObserved as exc:
            return self._unobserved(watched, run, exc)
        run.record(None)
        return result

    @staticmethod
    def _unobserved(watched: WatchedLogin, run: _Run, exc: _NotObserved) -> Unobserved:
        run.record(exc)
        log.debug("google_login_unobserved", login=watched.login, why=exc.why)
        return Unobserved(watched.login, exc.why)

    def _look_up(self, watched: WatchedLogin) -> Observation:
        login = watched.login
        try:
            user = self._get(USERS_PATH + quote(login, safe="@"), {})
        except _Refused as exc:
            # Google answers 403 forbidden for a user the admin may not see, as for an admin
            # without the right: the credential is refused only if the admin cannot read itself.
            if exc.code != "forbidden" or login.lower() == self._subject.lower():
                raise
            self._get(USERS_PATH + quote(self._subject, safe="@"), {})
            raise _NotObserved(NOT_READABLE, answered=True) from None
        if user is None:
            return Observation(login, found=False, enabled=False, status="not found")
        state = answers.user_state(user)
        if state is None:
            raise _NotObserved("Google answered something that is not a Directory API user")
        enabled, status = state
        observation = Observation(login, found=True, enabled=enabled, status=status)
        if not enabled:
            return observation
        key = user.get("id") if isinstance(user.get("id"), str) else user["primaryEmail"]
        changed = self._password_changed(key, user["primaryEmail"], self._clamped(watched.since))
        return replace(observation, password_changed_at=changed)

    def _password_changed(self, key: str, email: str, since: datetime) -> datetime | None:
        """The latest of the user's own password changes and the admins' resets of it."""
        times = []
        for application in OWN_CHANGE_APPLICATIONS:
            found = self._activities(key, application, "password_edit", since)
            times += [self._time_of(a) for a in found if "password_edit" in answers.event_names(a)]
        wanted = email.lower()
        resets = self._activities("all", "admin", "CHANGE_PASSWORD", since, f"USER_EMAIL=={email}")
        for activity in resets:
            named = answers.parameter_values(activity, "CHANGE_PASSWORD", "USER_EMAIL")
            if wanted in (n.lower() for n in named):
                times.append(self._time_of(activity))
        return max(times, default=None)

    @staticmethod
    def _time_of(activity: dict) -> datetime:
        try:
            return answers.activity_time(activity)
        except ValueError as exc:
            raise _NotObserved(f"an activity with an unreadable time ({exc})") from None

    def _clamped(self, since: datetime) -> datetime:
        return max(since.astimezone(UTC), self._now() - REPORTS_REACH + REPORTS_MARGIN)

    def _activities(
        self, user: str, application: str, event: str, since: datetime, filters: str = ""
    ) -> list:
        path = ACTIVITY_PATH.format(user=quote(user, safe="@"), application=application)
        params = {"eventName": event, "startTime": answers.rfc3339(since)}
        params |= {"filters": filters} if filters else {}
        params["maxResults"] = str(PAGE_SIZE)
        items: list[dict] = []
        for _ in range(MAX_PAGES):
            page = self._get(path, params)
            batch = answers.activities(page) if page is not None else None
            if batch is None:
                raise _NotObserved(f"Google answered something that is not a page of {event}")
            items += batch
            token = page.get("nextPageToken") if page else None
            if not isinstance(token, str) or not token:
                return items
            params = {**params, "pageToken": token}
        raise _NotObserved(
            f"more than {MAX_PAGES} pages of {application} {event} activities since "
            f"{since:%Y-%m-%d}: not all read",
            answered=True,
        )

    def _get(self, path: str, params: dict[str, str]) -> dict | None:
        """The JSON object Google answers, or None for its own "not found"; raises
        _NotObserved (after the retries for a transient failure) or
        DirectoryCredentialsRejected."""
        renewed = False
        attempt = 0
        while True:
            attempt += 1
            token = self._tokens.current()
            answer = self._fetch(path, params, token)
            verdict = answer.verdict
            if verdict.kind is Kind.EXPIRED and not renewed:
                self._tokens.renew(token)  # expired, or dropped early: one new token, one replay
                renewed, attempt = True, attempt - 1
                continue
            if verdict.kind in (Kind.EXPIRED, Kind.REFUSED):
                raise _Refused(
                    verdict.code,
                    f"google refused {self._tokens.client_email} impersonating the admin "
                    f"({verdict.detail}): check the domain-wide delegation and the admin's "
                    "privileges (Users: Read, Reports)",
                )
            if verdict.kind is Kind.OK:
                return self._read(path, answer.body)
            if verdict.kind is Kind.NOT_FOUND:
                return None
            if verdict.kind is Kind.UNREADABLE:
                raise _NotObserved(f"{verdict.detail} from {_api(path)}")
            asked = None
            if answer.headers is not None:
                asked = retry_after_s(answer.headers.get("retry-after"), self._now())
            if attempt >= self._attempts or not self._pause(attempt, asked):
                raise _NotObserved(f"{verdict.detail}, {attempt} attempts", transient=True)

    @staticmethod
    def _read(path: str, body: bytes) -> dict:
        document = answers.json_object(body)
        if document is None:
            raise _NotObserved(f"an answer from {_api(path)} that is not a JSON object")
        return document

    def _fetch(self, path: str, params: dict[str, str], token: str) -> _Answer:
        self._counted()
        try:
            return self._streamed(path, params, token)
        except httpx.TimeoutException:
            why = f"no answer from Google within {self._timeout_s:g} s"
            return _Answer(answers.Verdict(Kind.TRANSIENT, "timeout", why))
        except httpx.TransportError as exc:  # its text may name the URL: only its kind is kept
            why = f"cannot reach Google ({type(exc).__name__})"
            return _Answer(answers.Verdict(Kind.TRANSIENT, "connection", why))
        except httpx.DecodingError as exc:
            why = f"an undecodable answer ({type(exc).__name__})"
            return _Answer(answers.Verdict(Kind.UNREADABLE, "undecodable", why))

    def _streamed(self, path: str, params: dict[str, str], token: str) -> _Answer:
        """The answer, read up to MAX_BODY_BYTES; httpx's timeouts are per read, so one
        deadline for the whole body stops a trickle."""
        deadline = time.monotonic() + self._timeout_s
        headers = {"Authorization": f"Bearer {token}"}
        with self._http.stream("GET", self._base + path, params=params, headers=headers) as got:
            body = bytearray()
            for chunk in got.iter_bytes():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    why = f"an answer larger than {MAX_BODY_BYTES // 1024} KiB"
                    return _Answer(answers.Verdict(Kind.UNREADABLE, "too_large", why))
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the answer came too slowly")
        content_type = got.headers.get("content-type", "")
        verdict = answers.classify(got.status_code, content_type, bytes(body))
        return _Answer(verdict, got.headers, bytes(body))

    def _pause(self, attempt: int, asked_s: float | None) -> bool:
        """Wait before retry `attempt + 1`: Retry-After when given (False when it asks for
        longer than max_wait_s), else exponential backoff."""
        if asked_s is not None and asked_s > self._max_wait_s:
            return False
        if asked_s is None:
            backoff = BACKOFF_FIRST_S * 2 ** (attempt - 1)
            asked_s = round(backoff * (1 + BACKOFF_JITTER * random.random()), 3)
        self._sleep(asked_s)
        return True

    def _counted(self) -> None:
        with self._count_lock:
            self.requests_made += 1


def _api(path: str) -> str:
    return "the Reports API" if path.startswith("/admin/reports/") else "the Directory API"
