"""A fake of Google's OAuth 2.0 token endpoint and of the Admin SDK (Directory API users,
Reports API activities) in one Starlette app, served on 127.0.0.1 by the `google_fake` fixture.

The token endpoint checks the JWT bearer grant as Google does: the grant type, the assertion's
RS256 signature against the service account's public key (google-auth's own
`google.auth.jwt.decode`), its issuer, its audience (Google's token endpoint, whatever URL
the grant is posted to), and a lifetime of at most an hour; it refuses
a subject that is not a user of the domain (invalid_grant) and scopes the Admin console has not
delegated (unauthorized_client). It issues opaque bearers that the API endpoints require; a
subject that is not an admin gets a token, and the Admin SDK's 403 "Not Authorized". Answers
are in Google's documented shapes, with values of our own.

The Reports API serves a user's own `password_edit` under application `user_accounts` (where
Google's current documentation lists it; `set_password_changed` records it there unless told
`application="login"`, the older place) and the admins' `CHANGE_PASSWORD` under `admin`, for
`users/all`, with `filters=USER_EMAIL==...` (the parameter Google records: the user's primary
e-mail).

    fake.add_user("ann@school.example", password_changed_at=when)
    GoogleClient(**fake.credentials(), **fake.source_options(),
                 settings=fake.directory_settings())
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import itertools
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import google.auth.exceptions
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tests.helpers import serving
from worker.config import DirectorySettings

DOMAIN = "school.example"
ADMIN = f"it-admin@{DOMAIN}"
CUSTOMER_ID = "C03az79cb"
CLIENT_EMAIL = "tokenwarden@tokenwarden-test.iam.gserviceaccount.com"
CLIENT_ID = "109876543210987654321"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: The audience Google requires in a grant assertion, whatever URL the grant is posted to
#: (google-auth always writes this one).
AUDIENCE = "https://oauth2.googleapis.com/token"
DIRECTORY_SCOPE = "https://www.googleapis.com/auth/admin.directory.user.readonly"
REPORTS_SCOPE = "https://www.googleapis.com/auth/admin.reports.audit.readonly"
#: How far back the Reports API answers.
REPORTS_REACH = timedelta(days=180)
#: Longest life Google accepts for a grant assertion (exp - iat), in seconds.
MAX_ASSERTION_LIFE_S = 3600
UNAUTHORIZED_CLIENT = (
    "Client is unauthorized to retrieve access tokens using this method, or client not "
    "authorized for any of the scopes requested."
)
INVALID_CREDENTIALS = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential."
)


@functools.cache
def rsa_key_pem(label: str) -> str:
    """A 2048-bit RSA private key (PKCS#8 PEM), one per label for the test run."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def service_account_info(token_url: str, key_label: str = "main", key_id: str = "") -> dict:
    """A service account key file's content, as the Google Cloud console downloads it."""
    return {
        "type": "service_account",
        "project_id": "tokenwarden-test",
        "private_key_id": key_id or "3f1c0d5e7a9b2c4d6e8f0a1b3c5d7e9f1a2b3c4d",
        "private_key": rsa_key_pem(key_label),
        "client_email": CLIENT_EMAIL,
        "client_id": CLIENT_ID,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_url,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/tokenwarden",
        "universe_domain": "googleapis.com",
    }


@dataclass
class _User:
    email: str
    id: str
    suspended: bool = False
    archived: bool = False
    is_admin: bool = False
    created: datetime = field(default_factory=lambda: datetime(2023, 8, 28, 9, 0, tzinfo=UTC))


@dataclass(frozen=True)
class _Bearer:
    subject: str
    scopes: frozenset[str]
    expires: float  # time.monotonic()


@dataclass(frozen=True)
class _Activity:
    time: datetime
    actor: str
    application: str  # user_accounts, login, admin
    event: str  # password_edit, CHANGE_PASSWORD
    user_email: str | None = None  # the USER_EMAIL parameter of an admin event

    @property
    def parameters(self) -> dict[str, str]:
        return {"USER_EMAIL": self.user_email} if self.user_email is not None else {}


def google_error(status: int, reason: str, message: str, state: str = "") -> JSONResponse:
    error = {
        "code": status,
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}],
    }
    if state:
        error["status"] = state
    return JSONResponse({"error": error}, status_code=status)


def oauth_error(status: int, code: str, description: str) -> JSONResponse:
    return JSONResponse({"error": code, "error_description": description}, status_code=status)


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class GoogleFake:
    """Google's token endpoint and Admin SDK as the tests see them (see the module docstring)."""

    def __init__(self) -> None:
        self.url = ""
        #: Activities per Reports API page (small, so that the client has to page).
        self.page_size = 2
        self.token_lifetime_s = 3599
        #: Scopes the Admin console delegates to the service account's client ID.
        self.delegated_scopes = {DIRECTORY_SCOPE, REPORTS_SCOPE}
        self.requests = 0
        self.token_requests = 0
        self.bearers_issued: list[str] = []
        #: Requests that reached the place a redirect pointed to (a client following it).
        self.redirects_followed = 0
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._ids = itertools.count(104_857_600_000_000_000_001)
        self._users: dict[str, _User] = {}
        self._by_id: dict[str, str] = {}
        self._activities: dict[str, list[_Activity]] = {
            application: [] for application in ("user_accounts", "login", "admin")
        }
        self._by_actor: dict[str, list[_Activity]] = {}
        self._by_user_email: dict[str, list[_Activity]] = {}
        self._bearers: dict[str, _Bearer] = {}
        self._keys = {"3f1c0d5e7a9b2c4d6e8f0a1b3c5d7e9f1a2b3c4d": public_pem(rsa_key_pem("main"))}
        self._fault: tuple[str, dict, int | None] | None = None
        self._fault_after = 0
        self._hang_s = 0.0
        self.add_user(ADMIN, admin=True)
        self.app = Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/elsewhere", self._elsewhere, methods=["GET", "POST"]),
                Route("/admin/directory/v1/users/{key}", self._user),
                Route(
                    "/admin/reports/v1/activity/users/{key}/applications/{application}",
                    self._activity,
                ),
            ]
        )

    # The control surface every directory fake shares

    def add_user(self, login, *, enabled=True, password_changed_at=None, admin=False) -> str:
        email = login.lower()
        with self._lock:
            user = _User(login, str(next(self._ids)), suspended=not enabled, is_admin=admin)
            self._users[email] = user
            self._by_id[user.id] = email
        if password_changed_at is not None:
            self.set_password_changed(login, password_changed_at)
        return user.id

    def set_password_changed(
        self, login: str, when: datetime, *, application: str = "user_accounts"
    ) -> None:
        """The user changed their own password: a `password_edit` activity of `application`
        (`user_accounts`, or `login` as older documentation had it)."""
        activity = _Activity(when.astimezone(UTC), login.lower(), application, "password_edit")
        self._record(activity)

    def admin_reset_password(self, login: str, when: datetime, by: str = ADMIN) -> None:
        """An admin set the user's password: a `CHANGE_PASSWORD` admin activity, whose
        USER_EMAIL is the user's primary e-mail (`login` as given for no user)."""
        with self._lock:
            user = self._find(login)
        email = user.email if user is not None else login
        self._record(_Activity(when.astimezone(UTC), by, "admin", "CHANGE_PASSWORD", email))

    def disable(self, login: str) -> None:
        self._change(login, suspended=True)

    def archive(self, login: str) -> None:
        self._change(login, archived=True)

    def delete(self, login: str) -> None:
        with self._lock:
            user = self._users.pop(login.lower())
            del self._by_id[user.id]

    def fail(self, status: int = 500, times: int | None = None, *, after: int = 0) -> None:
        """Answer `status` to the next `times` requests (None: all), once `after` requests
        have been answered normally."""
        self._set_fault("status", {"status": status}, times, after)

    def fail_html_404(self, times: int | None = None) -> None:
        self._set_fault("html_404", {}, times)

    def throttle(self, times: int = 1, retry_after: int | None = 1, status: int = 429) -> None:
        """429 RESOURCE_EXHAUSTED (or, with status=403, the Admin SDK's 403
        rateLimitExceeded), with Retry-After when given."""
        self._set_fault("throttle", {"retry_after": retry_after, "status": status}, times)

    def redirect(self, times: int | None = None, status: int = 307, *, after: int = 0) -> None:
        """Answer a redirect to /elsewhere (which counts `redirects_followed`)."""
        where = {"status": status, "to": f"{self.url}/elsewhere"}
        self._set_fault("redirect", where, times, after)

    def oversize(self, times: int | None = None, size: int = 300 * 1024, *, after: int = 0):
        """Answer 200 with a JSON object of `size` bytes."""
        self._set_fault("oversize", {"size": size}, times, after)

    def hang(self, seconds: float) -> None:
        with self._lock:
            self._hang_s = seconds

    def revoke_credentials(self) -> None:
        """The service account key is deleted in the Cloud console: grants signed with it are
        refused, and the bearers issued so far stop working."""
        with self._lock:
            self._keys.clear()
            self._bearers.clear()

    def expire_tokens(self) -> None:
        """The bearers issued so far expire (the key still works: a new one can be had)."""
        with self._lock:
            self._bearers.clear()

    def directory_settings(self, **overrides) -> DirectorySettings:
        fields = {"google_token_url": self.token_url, "google_admin_url": self.url}
        return DirectorySettings(**(fields | {"timeout_s": 5.0} | overrides))

    def source_options(self) -> dict:
        return {"admin_subject": ADMIN}

    def credentials(self) -> dict:
        return {"service_account": service_account_info(self.token_url)}

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    # Helpers

    def _record(self, activity: _Activity) -> None:
        with self._lock:
            self._activities[activity.application].append(activity)
            self._by_actor.setdefault(activity.actor, []).append(activity)
            if activity.user_email is not None:
                self._by_user_email.setdefault(activity.user_email, []).append(activity)

    def _change(self, login: str, **changes) -> None:
        with self._lock:
            email = login.lower()
            self._users[email] = replace(self._users[email], **changes)

    def _set_fault(self, kind: str, params: dict, times: int | None, after: int = 0) -> None:
        with self._lock:
            self._fault, self._fault_after = (kind, params, times), after

    def _find(self, key: str) -> _User | None:
        email = self._by_id.get(key, key.lower())
        return self._users.get(email)

    # Answering

    async def _before(self) -> Response | None:
        """Counts the request, holds it while hanging, and plays the fault set, if any."""
        with self._lock:
            self.requests += 1
            fault = self._fault if self._fault_after == 0 else None
            self._fault_after = max(0, self._fault_after - 1)
            if fault is not None and fault[2] is not None:
                left = fault[2] - 1
                self._fault = (fault[0], fault[1], left) if left > 0 else None
        started = time.monotonic()
        while self._hang_s > 0 and time.monotonic() - started < self._hang_s:
            if self.closing.is_set():
                return Response(status_code=503)
            await asyncio.sleep(0.02)
        return _played(fault) if fault is not None else None

    async def _elsewhere(self, request: Request) -> Response:
        with self._lock:
            self.redirects_followed += 1
        return JSONResponse({"error": "you followed a redirect"}, status_code=418)

    async def _token(self, request: Request) -> Response:
        with self._lock:
            self.token_requests += 1
        played = await self._before()
        if played is not None:
            return played
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != JWT_GRANT:
            return oauth_error(400, "unsupported_grant_type", "Invalid grant_type: ")
        assertion = form.get("assertion")
        if not isinstance(assertion, str) or not assertion:
            return oauth_error(400, "invalid_request", "Missing required parameter: assertion")
        claims, refused = self._verified(assertion)
        if refused is not None:
            return refused
        scopes = frozenset(str(claims.get("scope", "")).split())
        subject = self._find(str(claims.get("sub", "")))
        if subject is None or subject.suspended:
            return oauth_error(400, "invalid_grant", "Invalid email or User ID")
        if not scopes or not scopes <= self.delegated_scopes:
            return oauth_error(401, "unauthorized_client", UNAUTHORIZED_CLIENT)
        bearer = "ya29." + secrets.token_urlsafe(96)
        with self._lock:
            expires = time.monotonic() + self.token_lifetime_s
            self._bearers[bearer] = _Bearer(subject.email, scopes, expires)
            self.bearers_issued.append(bearer)
        answer = {"access_token": bearer, "expires_in": self.token_lifetime_s}
        return JSONResponse(answer | {"token_type": "Bearer"})

    def _verified(self, assertion: str) -> tuple[dict, Response | None]:
        """The assertion's claims, or Google's invalid_grant."""
        with self._lock:
            keys = dict(self._keys)
        try:
            claims = jwt.decode(assertion, certs=keys, audience=AUDIENCE)
        except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
            text = str(exc)
            if "signature" in text.lower() or "key id" in text.lower() or not keys:
                return {}, oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
            return {}, oauth_error(400, "invalid_grant", f"Invalid JWT: {text}")
        if claims.get("iss") != CLIENT_EMAIL:
            return {}, oauth_error(400, "invalid_grant", "Invalid grant: account not found")
        if not 0 < claims.get("exp", 0) - claims.get("iat", 0) <= MAX_ASSERTION_LIFE_S:
            return {}, oauth_error(
                400,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim.",
            )
        return claims, None

    def _authorized(self, request: Request, scope: str) -> tuple[_Bearer | None, Response | None]:
        presented = request.headers.get("authorization", "")
        with self._lock:
            bearer = self._bearers.get(presented.removeprefix("Bearer "))
        if bearer is None or bearer.expires < time.monotonic():
            refused = google_error(401, "authError", INVALID_CREDENTIALS, "UNAUTHENTICATED")
            refused.headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
            return None, refused
        if scope not in bearer.scopes:
            return None, google_error(
                403,
                "insufficientPermissions",
                "Request had insufficient authentication scopes.",
                "PERMISSION_DENIED",
            )
        subject = self._find(bearer.subject)
        if subject is None or not subject.is_admin:
            return None, google_error(
                403, "forbidden", "Not Authorized to access this resource/api"
            )
        return bearer, None

    async def _user(self, request: Request) -> Response:
        played = await self._before()
        if played is not None:
            return played
        _bearer, refused = self._authorized(request, DIRECTORY_SCOPE)
        if refused is not None:
            return refused
        key = request.path_params["key"]
        with self._lock:
            user = self._find(key)
        if user is None and "@" in key and not key.lower().endswith("@" + DOMAIN):
            # a user of a domain the customer does not own: Google says "not authorized"
            return google_error(403, "forbidden", "Not Authorized to access this resource/api")
        if user is None:
            return google_error(404, "notFound", "Resource Not Found: userKey")
        return JSONResponse(_user_json(user))

    async def _activity(self, request: Request) -> Response:
        played = await self._before()
        if played is not None:
            return played
        _bearer, refused = self._authorized(request, REPORTS_SCOPE)
        if refused is not None:
            return refused
        application = request.path_params["application"]
        if application not in self._activities:
            return google_error(400, "invalid", "Invalid value for: applicationName")
        start, refused = _start_time(request.query_params.get("startTime"))
        if refused is not None:
            return refused
        filters, refused = _filters(request.query_params.get("filters"))
        if refused is not None:
            return refused
        with self._lock:
            chosen = self._chosen(request.path_params["key"], application, filters)
        if chosen is None:
            return google_error(400, "invalid", "Invalid value for: userKey")
        event = request.query_params.get("eventName")
        chosen = [
            a
            for a in chosen
            if a.time >= start
            and (event is None or a.event == event)
            and all((a.parameters.get(name) == value) is equal for name, equal, value in filters)
        ]
        chosen.sort(key=lambda a: a.time, reverse=True)
        return self._page(request, chosen)

    def _chosen(self, key: str, application: str, filters: list) -> list[_Activity] | None:
        if key == "all":
            email = next((v for n, eq, v in filters if n == "USER_EMAIL" and eq), None)
            if email is None:
                return list(self._activities[application])
            return [a for a in self._by_user_email.get(email, ()) if a.application == application]
        user = self._find(key)
        if user is None:
            return None
        return [
            a for a in self._by_actor.get(user.email.lower(), ()) if a.application == application
        ]

    def _page(self, request: Request, chosen: list[_Activity]) -> Response:
        offset = int(base64.urlsafe_b64decode(request.query_params.get("pageToken", "MA==")))
        size = min(self.page_size, int(request.query_params.get("maxResults", "1000")))
        page = chosen[offset : offset + size]
        answer: dict = {"kind": "admin#reports#activities", "etag": '"fake-etag"'}
        if page:
            answer["items"] = [self._activity_json(a) for a in page]
        if offset + size < len(chosen):
            answer["nextPageToken"] = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
        return JSONResponse(answer)

    def _activity_json(self, activity: _Activity) -> dict:
        actor = self._find(activity.actor)
        event: dict = {"type": "login", "name": activity.event}
        if activity.application == "user_accounts":
            event = {"type": "password_change", "name": activity.event}
        if activity.event == "CHANGE_PASSWORD":
            event = {
                "type": "USER_SETTINGS",
                "name": "CHANGE_PASSWORD",
                "parameters": [{"name": "USER_EMAIL", "value": activity.user_email}],
            }
        return {
            "kind": "admin#reports#activity",
            "id": {
                "time": _rfc3339(activity.time),
                "uniqueQualifier": str(secrets.randbits(62)),
                "applicationName": activity.application,
                "customerId": CUSTOMER_ID,
            },
            "etag": '"fake-etag"',
            "actor": {"email": activity.actor, "profileId": actor.id if actor else ""},
            "ipAddress": "203.0.113.7",
            "events": [event],
        }


def _user_json(user: _User) -> dict:
    given = user.email.split("@")[0].capitalize()
    answer = {
        "kind": "admin#directory#user",
        "id": user.id,
        "etag": '"fake-etag"',
        "primaryEmail": user.email,
        "name": {"givenName": given, "familyName": "Example", "fullName": f"{given} Example"},
        "isAdmin": user.is_admin,
        "isDelegatedAdmin": False,
        "lastLoginTime": "2025-02-27T08:12:44.000Z",
        "creationTime": _rfc3339(user.created),
        "agreedToTerms": True,
        "suspended": user.suspended,
        "archived": user.archived,
        "changePasswordAtNextLogin": False,
        "ipWhitelisted": False,
        "emails": [{"address": user.email, "primary": True}],
        "customerId": CUSTOMER_ID,
        "orgUnitPath": "/Staff",
        "isMailboxSetup": True,
        "includeInGlobalAddressList": True,
    }
    if user.suspended:
        answer["suspensionReason"] = "ADMIN"
    return answer


def _start_time(value: str | None) -> tuple[datetime, Response | None]:
    if value is None:
        return datetime.min.replace(tzinfo=UTC), None
    try:
        start = datetime.fromisoformat(value)
    except ValueError:
        start = None
    if start is None or start.tzinfo is None:
        return start, google_error(400, "invalid", "Invalid value for: startTime")
    if start < datetime.now(UTC) - REPORTS_REACH:
        return start, google_error(
            400, "invalid", "Start time is beyond the data retention period of 180 days."
        )
    return start, None


def _filters(value: str | None) -> tuple[list[tuple[str, bool, str]], Response | None]:
    """`filters=NAME==value,NAME<>value` as (name, equal, value)s, or Google's 400."""
    conditions = []
    for condition in (value or "").split(",") if value else []:
        for operator, equal in (("==", True), ("<>", False)):
            name, found, wanted = condition.partition(operator)
            if found and name and wanted:
                conditions.append((name, equal, wanted))
                break
        else:
            return [], google_error(400, "invalid", "Invalid value for: filters")
    return conditions, None


def _played(fault: tuple[str, dict, int | None]) -> Response:
    kind, params, _times = fault
    if kind == "redirect":
        return Response(status_code=params["status"], headers={"Location": params["to"]})
    if kind == "oversize":
        padding = "x" * params["size"]
        return JSONResponse({"kind": "admin#directory#user", "padding": padding})
    if kind == "html_404":
        page = "<html><head><title>404 Not Found</title></head><body>Not Found</body></html>"
        return HTMLResponse(page, status_code=404)
    if kind == "throttle":
        status = params["status"]
        reply = google_error(
            status,
            "rateLimitExceeded",
            "Quota exceeded for quota metric 'Queries' of service 'admin.googleapis.com'.",
            "RESOURCE_EXHAUSTED" if status == 429 else "PERMISSION_DENIED",
        )
        if params["retry_after"] is not None:
            reply.headers["Retry-After"] = str(params["retry_after"])
        return reply
    status = params["status"]
    reason = "backendError" if status >= 500 else "invalid"
    return google_error(status, reason, "Internal error encountered.", "INTERNAL")


@contextlib.contextmanager
def running_fake_google(directory=None):
    """A GoogleFake served on loopback (`directory` unused: the other fakes' signature)."""
    fake = GoogleFake()
    with serving(fake.app) as url:
        fake.url = url
        try:
            yield fake
        finally:
            fake.closing.set()


@pytest.fixture
def google_fake():
    with running_fake_google() as fake:
        yield fake
