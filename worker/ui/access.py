"""Who is looking at the web pages, and the login form.

A viewer is known by one of two things:
- the trusted user header (TOKENWARDEN_UI_TRUSTED_USER_HEADER), set by an SSO proxy in front
  of serve, believed only when the connection comes from TOKENWARDEN_HTTP_TRUSTED_PROXIES;
- the login cookie the form gives (session.py): signed, HttpOnly, SameSite=Strict, Path=/ui,
  Secure unless the request came over plain http on loopback, with an expiry; refused at once
  when its viewer is removed.

Failed logins are counted per client address and per name (LoginThrottle): past the limit,
the form answers 429 with Retry-After without checking the password. Passwords are checked
off the event loop, a few at a time (each Argon2id check takes 64 MiB).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from worker.bootstrap import App
from worker.environment import is_loopback
from worker.errors import StoreUnavailable
from worker.intake.peer import TrustedProxies, peer_of
from worker.store.viewer_store import Limits, LoginThrottle
from worker.ui import session
from worker.ui.render import page, unavailable
from worker.ui.viewers import Viewer, check_password, usable_name

log = structlog.get_logger(__name__)

#: The login cookie's name.
COOKIE = "tokenwarden_ui"

#: Where a login goes when it was asked for by no page, and the login form itself.
HOME, LOGIN = "/ui/", "/ui/login"

#: Failed logins allowed in a window (15 minutes) per name, and per client address (an IPv6
#: client counted by its /64 network).
LOGIN_LIMITS = Limits(per_address=20, per_name=5, window_s=900)

#: Password checks at once, at most (each takes 64 MiB and a core for a moment).
CHECKS_AT_ONCE = 2

#: Largest login form read, in bytes.
MAX_FORM_BYTES = 4096

#: Longest user name taken from the trusted header, in characters.
MAX_HEADER_USER_CHARS = 254

WRONG = "Wrong name or password."

Handler = Callable[[Request], Awaitable[Response]]


class Access:
    def __init__(self, app: App):
        self.app = app
        self.settings = app.settings.ui
        self.proxies = TrustedProxies(app.settings.http.trusted_proxies)
        self.throttle = LoginThrottle(app.redis, LOGIN_LIMITS)
        self._checking = asyncio.Semaphore(CHECKS_AT_ONCE)
        self._derived: tuple[tuple[str, ...], list[bytes]] = ((), [])

    def required(self, handler: Handler) -> Handler:
        """`handler` for viewers only: request.state.viewer is their name; anyone else is sent
        to the login form (303), which brings them back here."""

        @functools.wraps(handler)
        async def guarded(request: Request) -> Response:
            try:
                viewer = await self.viewer(request)
            except (redis.RedisError, StoreUnavailable) as exc:
                return unavailable(request, exc)
            if viewer is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"{LOGIN}?next={quote(target, safe='/')}", 303)
            request.state.viewer = viewer
            return await handler(request)

        return guarded

    async def viewer(self, request: Request) -> str | None:
        """The name of whoever is looking, or None."""
        header = self.settings.trusted_user_header
        if header and (named := request.headers.get(header)) is not None:
            if self.proxies.trust(peer_of(request)):
                return _header_user(named)
            log.info("ui_user_header_ignored", peer=peer_of(request), header=header)
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return None
        return await run_in_threadpool(self._cookie_viewer, cookie)

    def _cookie_viewer(self, cookie: str) -> str | None:
        found = session.read(cookie, self._keys(), self.app.now())
        if found is None:
            return None
        generation = self.app.viewers.generation(found.viewer)
        if generation is None or not hmac.compare_digest(generation, found.generation):
            return None  # removed, or removed and made again
        return found.viewer

    def _keys(self) -> list[bytes]:
        keyring = self.app.keyring()
        ids = tuple(keyring.key_ids)
        if self._derived[0] != ids:
            self._derived = (ids, keyring.derive(session.KEY_PURPOSE))
        return self._derived[1]

    # ---- the form ---------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return _form_page(request, safe_next(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        if _cross_site(request):
            return _refused(request, 403, "A form from another site cannot log in here.")
        form = await _read_form(request)
        if form is None:
            return _refused(request, 400, "The login form could not be read; send it again.")
        typed, password = form.get("name", "")[:200], form.get("password", "")
        target = safe_next(form.get("next"))
        if request.url.scheme != "https" and not is_loopback(_client(request)):
            return _form_page(request, target, typed, _NEEDS_HTTPS, 400)
        address, name_key = _address_key(_client(request)), typed.strip().lower()
        try:
            return await self._log_in(request, typed, password, target, (address, name_key))
        except (redis.RedisError, StoreUnavailable) as exc:
            return unavailable(request, exc)

    async def _log_in(
        self, request: Request, typed: str, password: str, target: str, keys: tuple[str, str]
    ) -> Response:
        """The attempt is counted first, then the password checked (at most CHECKS_AT_ONCE
        at a time, waiting off the thread pool the intake shares)."""
        wait = await run_in_threadpool(self.throttle.attempt, *keys)
        if wait is not None:
            log.info("ui_login_throttled", client=_client(request), wait_s=wait)
            minutes = -(-wait // 60)
            response = _form_page(request, target, typed, _TOO_MANY.format(minutes), 429)
            response.headers["Retry-After"] = str(wait)
            return response
        async with self._checking:
            viewer = await run_in_threadpool(self._check, usable_name(typed), password)
        if viewer is None:
            log.info("ui_login_refused", client=_client(request))
            return _form_page(request, target, typed, WRONG, 401)
        await run_in_threadpool(self.throttle.succeeded, *keys)
        log.info("ui_login", viewer=viewer.name, client=_client(request))
        response = RedirectResponse(target, 303)
        await run_in_threadpool(self._give_cookie, response, request, viewer)
        return response

    def _check(self, name: str | None, password: str) -> Viewer | None:
        return check_password(self.app.viewers, name, password)

    def _give_cookie(self, response: Response, request: Request, viewer: Viewer) -> None:
        lifetime = self.settings.session_lifetime_s
        expires = int(self.app.now().timestamp()) + lifetime
        value = session.sign(session.Session(viewer.name, viewer.generation, expires), self._keys())
        response.set_cookie(COOKIE, value, max_age=lifetime, expires=lifetime, **_flags(request))

    async def logout(self, request: Request) -> Response:
        if _cross_site(request):
            return _refused(request, 403, "A form from another site cannot log out here.")
        cookie = request.cookies.get(COOKIE)
        if cookie:
            try:  # every session of the viewer ends: a copied cookie is refused too
                await run_in_threadpool(self._end_sessions, cookie)
            except (redis.RedisError, StoreUnavailable) as exc:
                return unavailable(request, exc)
        response = RedirectResponse(LOGIN, 303)
        response.delete_cookie(COOKIE, **_flags(request))
        return response

    def _end_sessions(self, cookie: str) -> None:
        found = session.read(cookie, self._keys(), self.app.now())
        if found is not None:
            self.app.viewers.renew_generation(found.viewer, found.generation)
            log.info("ui_logout", viewer=found.viewer)


_NEEDS_HTTPS = (
    "Log in over https: the login cookie is sent only over https. Behind a proxy that does "
    "TLS, name it in TOKENWARDEN_HTTP_TRUSTED_PROXIES."
)
_TOO_MANY = "Too many failed logins: try again in {} minute(s)."


def _flags(request: Request) -> dict:
    """The cookie's attributes: Secure unless the request came over plain http on loopback."""
    plain_loopback = request.url.scheme == "http" and is_loopback(_client(request))
    return {"path": "/ui", "secure": not plain_loopback, "httponly": True, "samesite": "strict"}


def _form_page(
    request: Request, target: str, name: str = "", error: str | None = None, status: int = 200
) -> Response:
    request.state.viewer = None
    response = page(request, "login.html", next=target, name=name, error=error)
    response.status_code = status
    return response


def _refused(request: Request, status: int, message: str) -> Response:
    request.state.viewer = None
    response = page(request, "message.html", title="Refused", message=message)
    response.status_code = status
    return response


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _address_key(host: str) -> str:
    """What failed logins are counted by: the address, or an IPv6 address's /64 (one client
    holds a whole /64)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6 and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)  # an IPv4 client, as a dual-stack proxy names it
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _cross_site(request: Request) -> bool:
    """A form posted from another site (browsers say so in Sec-Fetch-Site)."""
    return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")


async def _read_form(request: Request) -> dict[str, str] | None:
    """The urlencoded form, at most MAX_FORM_BYTES; None when it is not one."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != (
        "application/x-www-form-urlencoded"
    ):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return None
    return {key: values[0] for key, values in fields.items()}


def safe_next(value: str | None) -> str:
    """Where to go after the login: a path under /ui/ of this site, else HOME."""
    if not value or len(value) > 2000 or not value.startswith(HOME):
        return HOME
    if "\\" in value or any(ch < " " or ch == "\x7f" for ch in value):
        return HOME
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or "//" in parts.path:
        return HOME
    # No dot segments: a browser would resolve /ui/../x outside /ui/.
    segments = unquote(parts.path).split("/")
    return HOME if any(s in (".", "..") for s in segments) else value


def _header_user(value: str) -> str | None:
    """The user the proxy names, when the value can be one."""
    name = value.strip()
    if not name or len(name) > MAX_HEADER_USER_CHARS or not name.isprintable():
        return None
    return name
