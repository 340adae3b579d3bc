"""A fake Okta org: a real HTTP server on 127.0.0.1 in the test process (Starlette on uvicorn)
serving `GET /api/v1/users/{id or login}` as Okta does. It requires `Authorization: SSWS
<its token>` (401 E0000011 otherwise), finds users by id or by login (case-insensitive),
answers Okta's user shape and its JSON errors, and sends Okta's rate-limit headers on every
answer, with a limit per window a test can lower to watch the client wait.

    def test_x(okta_api_fake):
        okta_api_fake.add_user("ann@school.example")
        client = OktaApiClient(**okta_api_fake.source_options(), **okta_api_fake.credentials(),
                               settings=okta_api_fake.directory_settings())
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tests.helpers import serving
from worker.config import DirectorySettings

#: The fake's requests per window unless a test lowers it (high: the benchmark's 10,000 users).
DEFAULT_LIMIT = 1_000_000
#: Seconds of the fake's rate-limit window (Okta's are a minute).
DEFAULT_WINDOW_S = 60
#: What a hanging request polls, in seconds, to notice hang(0).
HANG_STEP_S = 0.02

ERRORS = {
    "E0000007": "Not found: Resource not found: {} (User)",
    "E0000011": "Invalid token provided",
    "E0000006": "You do not have permission to perform the requested action",
    "E0000047": "API call exceeded rate limit due to too many requests.",
    "E0000009": "Internal Server Error",
}


def okta_time(when: datetime | None) -> str | None:
    if when is None:
        return None
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class _User:
    id: str
    login: str
    status: str
    created: datetime
    status_changed: datetime
    password_changed: datetime | str | None  # a str: sent as it is (an unreadable one)

    def shape(self) -> dict:
        first, _, domain = self.login.partition("@")
        changed = self.password_changed
        raw = isinstance(changed, str)
        return {
            "id": self.id,
            "status": self.status,
            "created": okta_time(self.created),
            "activated": okta_time(self.created),
            "statusChanged": okta_time(self.status_changed),
            "lastLogin": None,
            "lastUpdated": okta_time(
                max(self.status_changed, (None if raw else changed) or self.created)
            ),
            "passwordChanged": changed if raw else okta_time(changed),
            "type": {"id": "oty1abcdEFGH2345ijk6"},
            "profile": {
                "login": self.login,
                "email": self.login,
                "firstName": first.split(".")[0].title(),
                "lastName": (domain.split(".")[0] or "User").title(),
            },
            "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
        }


@dataclass
class _Fault:
    kind: str  # "status", "html404", "page", "throttle"
    left: int | None  # None: every request until heal()
    status: int = 500
    retry_after: int = 1
    retry_after_header: bool = True
    after: int = 0  # requests answered normally before the fault starts
    location: str | None = None  # a "page" fault's Location header


@dataclass
class _Window:
    limit: int = DEFAULT_LIMIT
    seconds: int = DEFAULT_WINDOW_S
    used: int = 0
    reset: int = 0  # epoch seconds

    def take(self, now: float) -> tuple[bool, dict[str, str]]:
        """(within the limit, the headers to send) for one more request."""
        if now >= self.reset:
            self.used, self.reset = 0, int(now) + self.seconds
        self.used += 1
        remaining = max(0, self.limit - self.used)
        headers = {
            "X-Rate-Limit-Limit": str(self.limit),
            "X-Rate-Limit-Remaining": str(remaining),
            "X-Rate-Limit-Reset": str(self.reset),
        }
        return self.used <= self.limit, headers


@dataclass
class FakeOktaOrg:
    """See the module docstring. Control it from the test's thread; it answers on uvicorn's."""

    url: str = ""
    token: str = field(default_factory=lambda: "00" + secrets.token_urlsafe(30), repr=False)
    #: Requests served, every endpoint and answer included.
    requests: int = 0
    _users: dict[str, _User] = field(default_factory=dict)  # by login, lower case
    _ids: dict[str, str] = field(default_factory=dict)  # id -> login, lower case
    _faults: deque[_Fault] = field(default_factory=deque)
    _window: _Window = field(default_factory=_Window)
    _hang_s: float = 0.0
    _revoked: bool = False
    _forbidden: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # What a test tells the fake

    def add_user(
        self, login: str, *, enabled: bool = True, password_changed_at: datetime | None = None
    ) -> str:
        """Add (or replace) a user; its Okta id is returned."""
        now = datetime.now(UTC)
        user_id = "00u" + secrets.token_hex(9)[:17]
        status = "ACTIVE" if enabled else "SUSPENDED"
        with self._lock:
            self._users[login.lower()] = _User(
                user_id, login, status, now, now, password_changed_at
            )
            self._ids[user_id] = login.lower()
        return user_id

    def set_password_changed(self, login: str, when: datetime | None) -> None:
        with self._lock:
            self._users[login.lower()].password_changed = when

    def set_password_changed_raw(self, login: str, value: str) -> None:
        """passwordChanged sent as `value`, whatever it is."""
        with self._lock:
            self._users[login.lower()].password_changed = value

    def set_status(self, login: str, status: str) -> None:
        """Any of Okta's statuses (STAGED, PROVISIONED, ACTIVE, RECOVERY, LOCKED_OUT,
        PASSWORD_EXPIRED, SUSPENDED, DEPROVISIONED)."""
        with self._lock:
            user = self._users[login.lower()]
            user.status, user.status_changed = status, datetime.now(UTC)

    def disable(self, login: str) -> None:
        self.set_status(login, "SUSPENDED")

    def deprovision(self, login: str) -> None:
        self.set_status(login, "DEPROVISIONED")

    def delete(self, login: str) -> None:
        with self._lock:
            user = self._users.pop(login.lower())
            self._ids.pop(user.id, None)

    def fail(self, status: int = 500, times: int | None = None, *, after: int = 0) -> None:
        """Okta's E0000009 with `status` for `times` requests (None: all), from the request
        `after` more from now."""
        self._add_fault(_Fault("status", times, status=status, after=after))

    def fail_html_404(self, times: int | None = None) -> None:
        self._add_fault(_Fault("html404", times, status=404))

    def fail_page(
        self, status: int, times: int | None = None, *, after: int = 0, location=None
    ) -> None:
        """A proxy's HTML page (not Okta's JSON) with `status` (a 3xx with `location`)."""
        self._add_fault(_Fault("page", times, status=status, after=after, location=location))

    def throttle(self, times: int = 1, retry_after: int = 1, retry_after_header: bool = True):
        """429 E0000047 with Okta's headers (X-Rate-Limit-Reset `retry_after` s ahead of the
        Date) and, unless told otherwise, Retry-After."""
        self._add_fault(_Fault("throttle", times, 429, retry_after, retry_after_header))

    def heal(self) -> None:
        """Forget every fault not yet played."""
        with self._lock:
            self._faults.clear()

    def hang(self, seconds: float) -> None:
        """Hold each request open this long before answering; hang(0) stops (and releases
        the requests held)."""
        self._hang_s = seconds

    def rate_limit(self, limit: int, window_s: int = DEFAULT_WINDOW_S) -> None:
        """`limit` requests per window; beyond them 429 E0000047, as Okta does."""
        with self._lock:
            self._window = _Window(limit, window_s)

    def new_window(self) -> None:
        """The rate-limit window ends now (what a test's sleep does, instead of waiting)."""
        with self._lock:
            self._window.reset = 0

    def revoke_credentials(self) -> None:
        self._revoked = True

    def forbid(self) -> None:
        """The token's admin lost the rights to read users: 403 E0000006."""
        self._forbidden = True

    def directory_settings(self, **overrides) -> DirectorySettings:
        return DirectorySettings(**({"timeout_s": 5.0} | overrides))

    def source_options(self) -> dict:
        return {"org_url": self.url}

    def credentials(self) -> dict:
        return {"api_token": self.token}

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    # Answering

    async def users(self, request: Request) -> Response:
        with self._lock:
            self.requests += 1
            fault = self._next_fault()
            allowed, limits = self._window.take(time.time())
        if self._hang_s:
            await self._held()
        if fault is not None:
            return self._faulty(fault, request, limits)
        if not self._authorized(request):
            return _error(401, "E0000011", limits)
        if self._forbidden:
            return _error(403, "E0000006", limits)
        if not allowed:
            return _error(429, "E0000047", limits)
        key = request.path_params["key"]
        with self._lock:
            user = self._users.get(self._ids.get(key, key.lower()))
            shape = user.shape() if user is not None else None
        if shape is None:
            return _error(404, "E0000007", limits, key)
        return JSONResponse(shape, headers=limits)

    async def elsewhere(self, request: Request) -> Response:
        with self._lock:
            self.requests += 1
        return _error(404, "E0000022", {}, detail="The endpoint does not exist.")

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        valid = secrets.compare_digest(given, self.token.encode())
        return scheme == "SSWS" and valid and not self._revoked

    def _next_fault(self) -> _Fault | None:
        if not self._faults:
            return None
        fault = self._faults[0]
        if fault.after > 0:
            fault.after -= 1
            return None
        if fault.left is not None:
            fault.left -= 1
            if fault.left <= 0:
                self._faults.popleft()
        return fault

    def _faulty(self, fault: _Fault, request: Request, limits: dict[str, str]) -> Response:
        if fault.kind == "html404":
            page = "<html><head><title>404 Not Found</title></head><body>nginx</body></html>"
            return HTMLResponse(page, status_code=404)
        if fault.kind == "page":
            page = f"<html><body><h1>{fault.status}</h1>the proxy says no</body></html>"
            headers = {"Location": fault.location} if fault.location else None
            return HTMLResponse(page, status_code=fault.status, headers=headers)
        if fault.kind == "throttle":
            headers = limits | {
                "X-Rate-Limit-Remaining": "0",
                "X-Rate-Limit-Reset": str(int(time.time()) + fault.retry_after),
            }
            if fault.retry_after_header:
                headers["Retry-After"] = str(fault.retry_after)
            return _error(429, "E0000047", headers)
        return _error(fault.status, "E0000009", limits)

    async def _held(self) -> None:
        deadline = time.monotonic() + self._hang_s
        while self._hang_s and time.monotonic() < deadline:
            await asyncio.sleep(HANG_STEP_S)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v1/users/{key:path}", self.users, methods=["GET"]),
                Route("/{rest:path}", self.elsewhere),
            ]
        )


def _error(
    status: int, code: str, headers: dict[str, str], subject: str = "", detail: str = ""
) -> JSONResponse:
    body = {
        "errorCode": code,
        "errorSummary": detail or ERRORS[code].format(subject),
        "errorLink": code,
        "errorId": "oae" + secrets.token_hex(11),
        "errorCauses": [],
    }
    return JSONResponse(body, status_code=status, headers=headers)


@pytest.fixture
def okta_api_fake():
    fake = FakeOktaOrg()
    with serving(fake.app()) as url:
        fake.url = url
        try:
            yield fake
        finally:
            fake.hang(0)
