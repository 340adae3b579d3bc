"""A fake of Apple's device enrollment service: a real HTTP server on 127.0.0.1 in the test
process. It checks each `/session` request's OAuth 1.0a signature with oauthlib's server side
against the enrolled tokens, as a real provider does, hands out session tokens, expires them by
its own clock, and can be told to answer each of Apple's errors.

    fake = start_fake_apple()
    fake.enroll(credentials(expiry), admin_id="ann@school.example")
    AppleClient(AppleSettings(url=fake.url)).account(...)
"""

from __future__ import annotations

import hmac
import json
import secrets
import string
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, RequestValidator, ResourceEndpoint
from oauthlib.oauth1.rfc5849.errors import OAuth1Error

#: Seconds a "hang" behaviour keeps the request open (past any timeout the tests use).
HANG_S = 5.0


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class _Enrolled:
    creds: dict[str, str]
    account: dict[str, str]
    revoked: str | None = None  # the oauth_problem Apple answers for this token, once revoked
    terms_signed: bool = True


@dataclass(frozen=True)
class _Session:
    consumer_key: str
    access_token: str
    issued_at: float  # on the fake's clock


def default_account() -> dict[str, str]:
    return {
        "server_uuid": str(uuid.uuid4()),
        "server_name": "MDM Server",
        "admin_id": "admin@school.example",
        "org_name": "Example School",
        "org_email": "it@school.example",
        "org_id": "1234567",
        "org_type": "edu",
        "org_version": "v2",
        "org_phone": "+1 555 0100",
        "org_address": "1 School Road, Springfield",
    }


class _Validator(RequestValidator):
    """oauthlib's server-side questions, answered from the fake's enrolled tokens."""

    enforce_ssl = False
    safe_characters = frozenset(string.ascii_letters + string.digits + "_-")
    client_key_length = (3, 256)
    access_token_length = (3, 256)
    nonce_length = (8, 64)
    allowed_signature_methods = (SIGNATURE_HMAC_SHA1,)
    #: Seconds a request's timestamp may be off the fake's wall clock.
    timestamp_lifetime = 600
    dummy_client = "dummy_client"
    dummy_access_token = "dummy_access_token"

    def __init__(self, fake: FakeApple):
        super().__init__()
        self._fake = fake
        self._nonces: set[tuple[str, str, str]] = set()
        self._nonce_order: deque[tuple[str, str, str]] = deque()

    def validate_client_key(self, client_key, request):
        return self._fake._enrolled(client_key) is not None

    def validate_access_token(self, client_key, token, request):
        enrolled = self._fake._enrolled(client_key)
        return enrolled is not None and hmac.compare_digest(enrolled.creds["access_token"], token)

    def get_client_secret(self, client_key, request):
        enrolled = self._fake._enrolled(client_key)
        return enrolled.creds["consumer_secret"] if enrolled else "dummy-secret"

    def get_access_token_secret(self, client_key, token, request):
        enrolled = self._fake._enrolled(client_key)
        return enrolled.creds["access_secret"] if enrolled else "dummy-secret"

    def validate_timestamp_and_nonce(
        self, client_key, timestamp, nonce, request, request_token=None, access_token=None
    ):
        seen = (client_key, timestamp, nonce)
        with self._fake._lock:
            if seen in self._nonces:
                request.nonce_used = True
                return False
            self._nonces.add(seen)
            self._nonce_order.append(seen)
            if len(self._nonce_order) > 100_000:  # bounded: old ones are past the lifetime
                self._nonces.discard(self._nonce_order.popleft())
        return True

    def validate_realms(self, client_key, token, request, uri=None, realms=None):
        return True


class FakeApple:
    """Apple's enrollment service as the tests see it. See the module docstring."""

    def __init__(self) -> None:
        self.url = ""
        #: Seconds a session lives, on the fake's clock.
        self.session_lifetime_s: float = 300
        #: Each `/account` answer carries a new session (the old one stops working).
        self.rotate_sessions = False
        #: (method, path, status) of every request in order; status None when not answered.
        self.requests: list[tuple[str, str, int | None]] = []
        #: Every session token handed out, for the secrets drill.
        self.sessions_issued: list[str] = []
        self.user_agents: list[str] = []
        self._lock = threading.RLock()
        self._tokens: dict[str, _Enrolled] = {}
        self._sessions: dict[str, _Session] = {}
        self._behaviours: deque[object] = deque()
        self._clock_offset_s = 0.0
        self._closing = threading.Event()
        self._endpoint = ResourceEndpoint(_Validator(self))
        self._server: ThreadingHTTPServer | None = None

    # What a test tells the fake

    def enroll(self, creds: dict[str, str], **account: str) -> dict[str, str]:
        """Register a token (replacing any earlier token of its consumer key, as Apple does
        when a new token is downloaded) and the account `/account` answers for it; a field
        given as None is left out of the answer."""
        answer = _without_nones(default_account() | account)
        with self._lock:
            self._tokens[creds["consumer_key"]] = _Enrolled(dict(creds), answer)
        return dict(answer)

    def account(self, consumer_key: str, **changes: str) -> dict[str, str]:
        with self._lock:
            enrolled = self._tokens[consumer_key]
            enrolled.account = _without_nones(enrolled.account | changes)
            return dict(enrolled.account)

    def revoke(self, consumer_key: str, code: str = "token_rejected") -> None:
        with self._lock:
            self._tokens[consumer_key].revoked = code

    def terms(self, consumer_key: str, signed: bool) -> None:
        with self._lock:
            self._tokens[consumer_key].terms_signed = signed

    def then(self, *behaviours: object) -> FakeApple:
        """Queue one-off answers, one per request: a status (int), a (status, headers, body)
        tuple, "hang", "close" or "garbage"."""
        with self._lock:
            self._behaviours.extend(behaviours)
        return self

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._clock_offset_s += seconds

    def expire_sessions(self) -> None:
        """Move the fake's clock past the life of every session handed out so far."""
        self.advance(self.session_lifetime_s + 1)

    def now(self) -> float:
        return time.monotonic() + self._clock_offset_s

    def paths(self) -> list[str]:
        return [path for _method, path, _status in self.requests]

    def close(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # Answering

    def _enrolled(self, consumer_key: str) -> _Enrolled | None:
        with self._lock:
            return self._tokens.get(consumer_key)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        with self._lock:
            self.user_agents.append(handler.headers.get("User-Agent", ""))
            behaviour = self._behaviours.popleft() if self._behaviours else None
        if behaviour is not None:
            reply = _played(behaviour)
        elif path == "/session":
            reply = self._session(handler)
        elif path == "/account":
            reply = self._account(handler)
        else:
            reply = Reply(404, {"Content-Type": "text/plain"}, b"NOT_FOUND")
        with self._lock:  # recorded before the answer goes out: a test reading it never races
            status = reply.status if isinstance(reply, Reply) else None
            self.requests.append((handler.command, path, status))
        _send(handler, reply, self._closing)

    def _session(self, handler: BaseHTTPRequestHandler) -> Reply:
        problem, enrolled = self._verify(handler)
        if problem is not None or enrolled is None:
            return oauth_problem(problem or "token_rejected")
        if enrolled.revoked:
            return oauth_problem(enrolled.revoked)
        if not enrolled.terms_signed:
            return Reply(403, {"Content-Type": "text/plain"}, b"T_C_NOT_SIGNED")
        token = self._issue(enrolled)
        return _json_reply({"auth_session_token": token})

    def _verify(self, handler: BaseHTTPRequestHandler) -> tuple[str | None, _Enrolled | None]:
        """(None, the token) for a well signed request, else (Apple's oauth_problem, None)."""
        uri = f"http://{handler.headers.get('Host', '')}{handler.path}"
        try:
            valid, request = self._endpoint.validate_protected_resource_request(
                uri, "GET", None, dict(handler.headers.items())
            )
        except OAuth1Error:
            return "parameter_rejected", None
        if valid:
            return None, self._enrolled(request.client_key)
        if request is None:
            return "parameter_absent", None
        if getattr(request, "nonce_used", False):
            return "nonce_used", None
        checked = request.validator_log
        if "signature" not in checked:  # refused before the signature: timestamp or format
            return _timestamp_or_format(request.timestamp), None
        if not checked["client"]:
            return "consumer_key_rejected", None
        if not checked["resource_owner"]:
            return "token_rejected", None
        return "signature_invalid", None

    def _issue(self, enrolled: _Enrolled) -> str:
        token = secrets.token_hex(24)
        with self._lock:
            creds = enrolled.creds
            self._sessions[token] = _Session(
                creds["consumer_key"], creds["access_token"], self.now()
            )
            self.sessions_issued.append(token)
        return token

    def _account(self, handler: BaseHTTPRequestHandler) -> Reply:
        presented = handler.headers.get("X-ADM-Auth-Session", "")
        with self._lock:
            session = self._sessions.get(presented)
        if session is None or self.now() - session.issued_at > self.session_lifetime_s:
            return Reply(401, {"Content-Type": "text/plain"}, b"UNAUTHORIZED")
        if not handler.headers.get("X-Server-Protocol-Version"):
            return Reply(400, {"Content-Type": "text/plain"}, b"MISSING_PROTOCOL_VERSION")
        enrolled = self._enrolled(session.consumer_key)
        if enrolled is None or enrolled.creds["access_token"] != session.access_token:
            return oauth_problem("token_rejected")  # replaced by a newer token
        if enrolled.revoked:
            return oauth_problem(enrolled.revoked)
        if not enrolled.terms_signed:
            return Reply(403, {"Content-Type": "text/plain"}, b"T_C_NOT_SIGNED")
        headers = {}
        if self.rotate_sessions:
            headers["X-ADM-Auth-Session"] = self._issue(enrolled)
            with self._lock:
                del self._sessions[presented]
        with self._lock:
            answer = dict(enrolled.account)
        return _json_reply(answer, headers)


def _without_nones(fields: dict) -> dict:
    return {name: value for name, value in fields.items() if value is not None}


def oauth_problem(code: str) -> Reply:
    return Reply(
        401,
        {
            "WWW-Authenticate": f'OAuth realm="ADM", oauth_problem="{code}"',
            "Content-Type": "text/plain",
        },
        b"UNAUTHORIZED",
    )


def _timestamp_or_format(timestamp: str | None) -> str:
    try:
        off = abs(time.time() - int(timestamp or ""))
    except ValueError:
        return "parameter_rejected"
    return "timestamp_refused" if off > _Validator.timestamp_lifetime else "parameter_rejected"


def _json_reply(document: dict, headers: dict[str, str] | None = None) -> Reply:
    headers = {"Content-Type": "application/json;charset=UTF8", **(headers or {})}
    return Reply(200, headers, json.dumps(document).encode())


def _played(behaviour: object) -> Reply | str:
    if behaviour in ("hang", "close"):
        return str(behaviour)
    if behaviour == "garbage":
        return Reply(200, {"Content-Type": "application/json"}, b"\x00\xffnot json at all")
    if isinstance(behaviour, int):
        return Reply(behaviour)
    if isinstance(behaviour, tuple) and len(behaviour) == 3:
        status, headers, body = behaviour
        return Reply(int(status), dict(headers), bytes(body))
    raise ValueError(f"the fake Apple does not know the behaviour {behaviour!r}")


def _send(handler: BaseHTTPRequestHandler, reply: Reply | str, closing: threading.Event) -> None:
    if reply == "hang":
        closing.wait(HANG_S)
        handler.close_connection = True
        return
    if reply == "close":
        handler.close_connection = True
        handler.connection.shutdown(2)
        return
    assert isinstance(reply, Reply)
    handler.send_response(reply.status)
    for name, value in reply.headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(reply.body)))
    handler.end_headers()
    handler.wfile.write(reply.body)


def start_fake_apple() -> FakeApple:
    fake = FakeApple()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Apple's servers
        # The headers and the body go out in two writes: without this, Nagle's algorithm and
        # the client's delayed ACK hold each answer for ~40 ms.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            fake.handle(self)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake._server = server
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return fake
