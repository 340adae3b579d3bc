"""A fake of Microsoft Entra ID's login endpoint and of Microsoft Graph, in one Starlette app
served by uvicorn over TLS on 127.0.0.1 (msal takes only https authorities), with a
certificate for 127.0.0.1 from a CA made by `trustme` in the test; its PEM is the
`ca_bundle` of `fake.directory_settings()`.

It checks what Entra checks: the tenant, the client-credentials grant (grant_type, client_id,
client_secret, the scope `<graph url>/.default`), answering Entra's JSON errors
(invalid_client AADSTS7000215, unauthorized_client AADSTS700016, ...); Graph takes only the
opaque bearers it issued, while they last (401 InvalidAuthenticationToken otherwise), answers
in Graph's shapes, refuses a `$batch` of more than 20 lookups, and answers 403
Authorization_RequestDenied while the app lacks User.Read.All (`deny_permission()`).

The failures a test asks for (`fail`, `fail_html_404`, `fail_page`, `hang`, `throttle`) apply
to Graph's requests unless `where="login"` (discovery and token) or `where="all"`. A 3xx page
of `fail_page` points to `/elsewhere`, which counts what reaches it (`elsewhere_requests`).
`pad_batch` and `pad_token` make answers larger (valid JSON still).

    def test_x(entra_fake):
        entra_fake.add_user("ann@school.example")
        client = EntraClient(**entra_fake.source_options(), **entra_fake.credentials(),
                             settings=entra_fake.directory_settings())
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import parse_qs, unquote, unquote_plus, urlsplit

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.helpers import loopback_tls_files, serving
from worker.config import DirectorySettings

#: Most lookups Graph takes in one `$batch`.
MAX_BATCH = 20
#: Seconds an issued access token lasts (Entra's are about an hour).
TOKEN_LIFETIME_S = 3599
#: Graph's default properties of a user (those answered without `$select`).
DEFAULT_PROPERTIES = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
GRAPH_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;charset=utf-8"
HTML_404 = b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>"


@dataclass
class _Failure:
    kind: str  # "status", "html_404", "page", "throttle"
    where: str
    remaining: int | None
    status: int = 500
    retry_after: int = 1
    after: int = 0  # requests answered normally before the failure starts
    location: str = ""


@dataclass
class _User:
    id: str
    upn: str
    enabled: bool = True
    password_changed_at: datetime | None = None


class FakeEntra:
    """Entra ID and Graph as the tests see them. See the module docstring."""

    def __init__(self) -> None:
        self.url = ""
        self.ca_bundle = None
        self.tenant_id = str(uuid.uuid4())
        self.client_id = str(uuid.uuid4())
        self.client_secret = "Qx8Q~" + secrets.token_urlsafe(30)  # the shape of Entra's values
        #: Requests served, every endpoint.
        self.requests = 0
        self.token_requests = 0
        #: Sub-requests in each `$batch` answered, in order.
        self.batch_sizes: list[int] = []
        #: Every bearer issued, for the secrets drill.
        self.bearers_issued: list[str] = []
        self.permission_granted = True
        self.secret_expired = False
        self._lock = threading.Lock()
        self._users: dict[str, _User] = {}
        self._ids: dict[str, _User] = {}
        self._tokens: dict[str, float] = {}  # bearer -> expires at (monotonic)
        self._failure: _Failure | None = None
        self._throttled_users: dict[str, list[int]] = {}  # login -> [times, retry_after]
        self._hang_s = 0.0
        self._hang_where = "graph"
        self.closing = threading.Event()
        #: Requests that reached `/elsewhere` (where a redirect points).
        self.elsewhere_requests = 0
        self._batch_padding = [0, 0]  # [bytes, times]
        self._token_padding = 0

    # What a test tells the fake

    def add_user(self, login: str, *, enabled: bool = True, password_changed_at=None) -> str:
        """Add a user (UPN `login`); its object id is returned."""
        user = _User(str(uuid.uuid4()), login, enabled, password_changed_at)
        with self._lock:
            self._users[login.lower()] = user
            self._ids[user.id] = user
        return user.id

    def set_password_changed(self, login: str, when: datetime | None) -> None:
        with self._lock:
            self._users[login.lower()].password_changed_at = when

    def disable(self, login: str) -> None:
        with self._lock:
            self._users[login.lower()].enabled = False

    def delete(self, login: str) -> None:
        with self._lock:
            user = self._users.pop(login.lower())
            self._ids.pop(user.id, None)

    def fail(self, status: int = 500, times: int | None = None, where: str = "graph") -> None:
        """Answer the next `times` requests (None: all; 0: stop) with `status`."""
        self._set_failure(_Failure("status", where, times, status=status))

    def fail_html_404(self, times: int | None = None, where: str = "graph") -> None:
        self._set_failure(_Failure("html_404", where, times, status=404))

    def fail_page(
        self, status: int, times: int | None = None, where: str = "graph", *, after: int = 0
    ) -> None:
        """A proxy's HTML page with `status` (a 3xx pointing to `/elsewhere`), after `after`
        requests answered normally."""
        failure = _Failure("page", where, times, status=status, after=after)
        failure.location = f"{self.url}/elsewhere/token"
        self._set_failure(failure)

    def pad_batch(self, size: int, times: int | None = None) -> None:
        """The next `times` `$batch` answers (None: all) carry `size` more bytes."""
        with self._lock:
            self._batch_padding = [size, -1 if times is None else times]

    def pad_token(self, size: int) -> None:
        """The token endpoint's answers carry `size` more bytes (0: stop)."""
        self._token_padding = size

    def throttle(self, times: int = 1, retry_after: int = 1, where: str = "graph") -> None:
        """429 with Retry-After for the next `times` requests (a whole `$batch`)."""
        self._set_failure(_Failure("throttle", where, times, 429, retry_after))

    def throttle_user(self, login: str, times: int = 1, retry_after: int = 1) -> None:
        """429 with Retry-After in this login's sub-response of the next `times` batches."""
        with self._lock:
            self._throttled_users[login.lower()] = [times, retry_after]

    def hang(self, seconds: float, where: str = "graph") -> None:
        """Hold requests open for `seconds` (0: stop)."""
        with self._lock:
            self._hang_s, self._hang_where = seconds, where

    def revoke_credentials(self) -> None:
        """The client secret expires (AADSTS7000222) and the tokens issued stop working."""
        with self._lock:
            self.secret_expired = True
            self._tokens.clear()

    def deny_permission(self, denied: bool = True) -> None:
        """The app loses (or gets back) its User.Read.All: Graph answers 403."""
        self.permission_granted = not denied

    def expire_tokens(self) -> None:
        """Every access token issued so far is past its lifetime."""
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    def directory_settings(self, **overrides) -> DirectorySettings:
        settings = DirectorySettings(
            entra_login_url=self.url, graph_url=self.url, ca_bundle=self.ca_bundle, timeout_s=5
        )
        return replace(settings, **overrides)

    def source_options(self) -> dict:
        return {"tenant_id": self.tenant_id, "client_id": self.client_id}

    def credentials(self) -> dict:
        return {"client_secret": self.client_secret}

    def _set_failure(self, failure: _Failure) -> None:
        with self._lock:
            self._failure = None if failure.remaining == 0 else failure

    # Arrival: count, then play a failure if one applies

    async def _arrive(self, where: str) -> Response | None:
        with self._lock:
            self.requests += 1
            hang_s = self._hang_s if self._hang_where in (where, "all") else 0
            failure = self._failure
            if failure is not None and failure.where in (where, "all") and failure.after > 0:
                failure.after -= 1
                failure = None
            elif failure is not None and failure.where in (where, "all"):
                if failure.remaining is not None:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failure = None
            else:
                failure = None
        if hang_s:
            await self._hold(hang_s)
        return _played(failure) if failure else None

    async def _hold(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self._hang_s and not self.closing.is_set():
            await asyncio.sleep(0.02)

    # The login endpoint

    async def discovery(self, request: Request) -> Response:
        if (played := await self._arrive("login")) is not None:
            return played
        tenant = request.path_params["tenant"]
        if tenant != self.tenant_id:
            return self._tenant_not_found(tenant)
        base = f"{self.url}/{tenant}"
        return JSONResponse(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{self.url}/{tenant}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
            }
        )

    async def token(self, request: Request) -> Response:
        with self._lock:
            self.token_requests += 1
        if (played := await self._arrive("login")) is not None:
            return played
        tenant = request.path_params["tenant"]
        if tenant != self.tenant_id:
            return self._tenant_not_found(tenant)
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode(), True).items()}
        basic_id, basic_secret = _basic(request.headers.get("authorization", ""))
        client_id = form.get("client_id") or basic_id
        secret = form.get("client_secret") or basic_secret
        refused = self._refuse_grant(form, client_id, secret)
        if refused is not None:
            return refused
        bearer = secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[bearer] = time.monotonic() + TOKEN_LIFETIME_S
            self.bearers_issued.append(bearer)
        answer = {
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_S,
            "ext_expires_in": TOKEN_LIFETIME_S,
            "access_token": bearer,
        }
        if self._token_padding:
            answer["x_padding"] = "x" * self._token_padding
        return JSONResponse(answer)

    async def elsewhere(self, request: Request) -> Response:
        with self._lock:
            self.elsewhere_requests += 1
        return JSONResponse({"error": "not_here"}, 400)

    def _refuse_grant(self, form: dict, client_id: str | None, secret: str | None):
        grant = form.get("grant_type")
        if not grant:
            return self._missing("grant_type")
        if grant != "client_credentials":
            return self._entra_error(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        if not client_id:
            return self._missing("client_id")
        if client_id != self.client_id:
            return self._entra_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.tenant_id}'. This can happen if the application has not been installed "
                "by the administrator of the tenant or consented to by any user in the tenant.",
            )
        if not secret:
            return self._entra_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )
        if not secrets.compare_digest(secret.encode(), self.client_secret.encode()):
            return self._entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request "
                "is the client secret value, not the client secret ID, for a secret added to "
                f"app '{self.client_id}'.",
            )
        if self.secret_expired:
            return self._entra_error(
                401,
                "invalid_client",
                7000222,
                f"The provided client secret keys for app '{self.client_id}' are expired. "
                "Visit the Azure portal to create new keys for your app.",
            )
        return self._refuse_scope(form.get("scope"))

    def _refuse_scope(self, scope: str | None):
        if not scope:
            return self._missing("scope")
        if scope == f"{self.url}/.default":
            return None
        if scope.endswith("/.default"):
            return self._entra_error(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {scope[:-9]} was not found in the tenant named "
                f"{self.tenant_id}.",
            )
        return self._entra_error(
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {scope} is not valid. Client credential flows must "
            "have a scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
        )

    def _missing(self, name: str) -> Response:
        return self._entra_error(
            400,
            "invalid_request",
            900144,
            f"The request body must contain the following parameter: '{name}'.",
        )

    def _tenant_not_found(self, tenant: str) -> Response:
        return self._entra_error(
            400,
            "invalid_tenant",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud.",
        )

    def _entra_error(self, status: int, error: str, code: int, description: str) -> Response:
        trace, correlation = uuid.uuid4(), uuid.uuid4()
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return JSONResponse(
            status_code=status,
            content={
                "error": error,
                "error_description": f"AADSTS{code}: {description}\r\nTrace ID: {trace}\r\n"
                f"Correlation ID: {correlation}\r\nTimestamp: {stamp}",
                "error_codes": [code],
                "timestamp": stamp,
                "trace_id": str(trace),
                "correlation_id": str(correlation),
                "error_uri": f"{self.url}/error?code={code}",
            },
        )

    # Graph

    async def user(self, request: Request) -> Response:
        if (played := await self._arrive("graph")) is not None:
            return played
        refused = self._refuse_bearer(request.headers.get("authorization", ""))
        if refused is not None:
            return _graph_response(*refused)
        return _graph_response(
            *self._user_answer(request.path_params["who"], request.query_params.get("$select"))
        )

    async def batch(self, request: Request) -> Response:
        if (played := await self._arrive("graph")) is not None:
            return played
        refused = self._refuse_bearer(request.headers.get("authorization", ""))
        if refused is not None:
            return _graph_response(*refused)
        try:
            asked = json.loads(await request.body())["requests"]
            assert isinstance(asked, list) and asked
            ids = [str(sub["id"]) for sub in asked]
        except (ValueError, KeyError, TypeError, AssertionError):
            return _graph_response(400, graph_error("BadRequest", "Invalid batch payload format."))
        if len(asked) > MAX_BATCH:
            return _graph_response(
                400,
                graph_error(
                    "BadRequest",
                    f"The batch holds {len(asked)} requests; at most {MAX_BATCH} are allowed.",
                ),
            )
        if len(set(ids)) != len(ids):
            return _graph_response(400, graph_error("BadRequest", "Request ids must be unique."))
        with self._lock:
            self.batch_sizes.append(len(asked))
        answers = [self._sub_answer(sub) for sub in reversed(asked)]  # any order, as Graph
        answer: dict = {"responses": answers}
        with self._lock:
            size, times = self._batch_padding
            if size and times:
                self._batch_padding[1] = times - 1
                answer["@odata.padding"] = "x" * size
        return JSONResponse(answer)

    def _sub_answer(self, sub: dict) -> dict:
        if sub.get("method") != "GET" or not str(sub.get("url", "")).startswith("/users/"):
            status, body = 400, graph_error("BadRequest", "This fake answers GET /users/ only.")
            return {"id": str(sub["id"]), "status": status, "headers": {}, "body": body}
        parts = urlsplit(str(sub["url"]))
        who = unquote(parts.path[len("/users/") :])
        select = parse_qs(parts.query).get("$select", [None])[0]
        throttled = self._throttled(who)
        if throttled is not None:
            body = graph_error("TooManyRequests", "Too many requests.")
            headers = {"Retry-After": str(throttled), "Content-Type": GRAPH_JSON}
            return {"id": str(sub["id"]), "status": 429, "headers": headers, "body": body}
        status, body = self._user_answer(who, select)
        headers = {"Content-Type": GRAPH_JSON, "Cache-Control": "no-cache"}
        return {"id": str(sub["id"]), "status": status, "headers": headers, "body": body}

    def _throttled(self, who: str) -> int | None:
        with self._lock:
            entry = self._throttled_users.get(who.lower())
            if not entry:
                return None
            entry[0] -= 1
            if entry[0] <= 0:
                del self._throttled_users[who.lower()]
            return entry[1]

    def _refuse_bearer(self, authorization: str) -> tuple[int, dict] | None:
        scheme, _, bearer = authorization.partition(" ")
        if scheme.lower() != "bearer" or not bearer.strip():
            return 401, graph_error("InvalidAuthenticationToken", "Access token is empty.")
        with self._lock:
            expires_at = self._tokens.get(bearer.strip())
        if expires_at is None:
            return 401, graph_error(
                "InvalidAuthenticationToken", "Access token validation failure. Invalid audience."
            )
        if time.monotonic() >= expires_at:
            return 401, graph_error(
                "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."
            )
        if not self.permission_granted:
            return 403, graph_error(
                "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
            )
        return None

    def _user_answer(self, who: str, select: str | None) -> tuple[int, dict]:
        with self._lock:
            user = self._users.get(who.lower()) or self._ids.get(who)
            user = replace(user) if user else None
        if user is None:
            return 404, graph_error(
                "Request_ResourceNotFound",
                f"Resource '{who}' does not exist or one of its queried reference-property "
                "objects are not present.",
            )
        fields = [f.strip() for f in select.split(",")] if select else list(DEFAULT_PROPERTIES)
        everything = {
            "id": user.id,
            "userPrincipalName": user.upn,
            "accountEnabled": user.enabled,
            "lastPasswordChangeDateTime": _iso(user.password_changed_at),
            "displayName": user.upn.split("@")[0].title(),
            "mail": user.upn,
            "givenName": None,
            "surname": None,
            "jobTitle": None,
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": None,
            "businessPhones": [],
        }
        shown = ",".join(fields) if select else ""
        body = {"@odata.context": f"{self.url}/v1.0/$metadata#users({shown})/$entity"}
        body.update({f: everything[f] for f in fields if f in everything})
        return 200, body


def graph_error(code: str, message: str) -> dict:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": str(uuid.uuid4()),
                "client-request-id": str(uuid.uuid4()),
            },
        }
    }


def _graph_response(status: int, body: dict) -> Response:
    headers = {"request-id": str(uuid.uuid4())}
    if status == 401:
        headers["WWW-Authenticate"] = (
            'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
            'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
        )
    return JSONResponse(body, status, headers, media_type=GRAPH_JSON)


def _played(failure: _Failure) -> Response:
    if failure.kind == "html_404":
        return Response(HTML_404, 404, media_type="text/html")
    if failure.kind == "page":
        page = f"<html><body><h1>{failure.status}</h1>the proxy says no</body></html>"
        headers = {"Location": failure.location} if 300 <= failure.status < 400 else None
        return Response(page, failure.status, headers, media_type="text/html")
    if failure.kind == "throttle":
        body = graph_error("TooManyRequests", "Too many requests.")
        response = _graph_response(429, body)
        response.headers["Retry-After"] = str(failure.retry_after)
        return response
    codes = {
        500: "UnknownError",
        502: "BadGateway",
        503: "serviceNotAvailable",
        504: "GatewayTimeout",
    }
    code = codes.get(failure.status, "UnknownError")
    return _graph_response(
        failure.status, graph_error(code, f"HTTP {failure.status} from the fake")
    )


def _basic(authorization: str) -> tuple[str | None, str | None]:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        user, _, password = base64.b64decode(value).decode().partition(":")
    except ValueError:
        return None, None
    return unquote_plus(user), unquote_plus(password)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def entra_app(fake: FakeEntra) -> Starlette:
    return Starlette(
        routes=[
            Route("/{tenant}/v2.0/.well-known/openid-configuration", fake.discovery),
            Route("/{tenant}/oauth2/v2.0/token", fake.token, methods=["POST"]),
            Route("/v1.0/$batch", fake.batch, methods=["POST"]),
            Route("/v1.0/users/{who:path}", fake.user),
            Route("/elsewhere/{rest:path}", fake.elsewhere, methods=["GET", "POST"]),
        ]
    )


@contextlib.contextmanager
def running_fake_entra(directory):
    """A FakeEntra served over TLS, its CA's PEM written in `directory`."""
    ca_pem, cert_pem, key_pem = loopback_tls_files(directory, prefix="entra-")
    fake = FakeEntra()
    fake.ca_bundle = ca_pem
    with serving(entra_app(fake), certfile=cert_pem, keyfile=key_pem) as url:
        fake.url = url
        try:
            yield fake
        finally:
            fake.closing.set()


@pytest.fixture
def entra_fake(tmp_path):
    with running_fake_entra(tmp_path) as fake:
        yield fake
