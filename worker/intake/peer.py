"""Who connected: the address of the peer of the TCP connection, remembered before a trusted
proxy's X-Forwarded-For replaces the client's address (uvicorn's ProxyHeadersMiddleware,
added by create_app). A header only a proxy may set (the web pages' trusted user header) is
believed on the peer's word, never on the client's."""

from __future__ import annotations

import ipaddress

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

#: Where RememberPeer keeps the peer's host in the request's state.
PEER = "peer"


class RememberPeer:
    """Keeps scope["client"]'s host as the request's state `peer` (outermost, so before
    X-Forwarded-For is read)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            scope.setdefault("state", {})[PEER] = client[0] if client else None
        await self.app(scope, receive, send)


def peer_of(request: Request) -> str | None:
    """The connecting address (the client's when RememberPeer did not run)."""
    state = request.scope.get("state", {})
    if PEER in state:
        return state[PEER]
    return request.client.host if request.client else None


class TrustedProxies:
    """TOKENWARDEN_HTTP_TRUSTED_PROXIES: addresses, networks, or `*` (any)."""

    def __init__(self, entries: tuple[str, ...]):
        self.any = "*" in entries
        self._networks = []
        self._names = set()
        for entry in entries:
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._names.add(entry)  # a literal, as uvicorn compares it (a unix socket)

    def trust(self, host: str | None) -> bool:
        if host is None:
            return False
        if self.any or host in self._names:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)
