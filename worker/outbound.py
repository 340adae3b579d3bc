"""What every outgoing HTTP client of tokenwarden shares (Apple's, the webhooks', the
directories' through httpx, msal's and google-auth's through requests): the certificate
authorities it trusts, and how it reads a `Retry-After`.

The trusted CAs are the system's, plus those of `TOKENWARDEN_CA_BUNDLE` when set (a lab's own
CA, or a TLS-inspecting proxy's). A context is built once per bundle: loading the system store
costs about 18 ms of CPU, and a context is safe to share between threads.
"""

from __future__ import annotations

import functools
import ssl
from datetime import datetime
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from worker.errors import ConfigError

if TYPE_CHECKING:
    import requests


def _user_agent() -> str:
    try:
        return f"tokenwarden/{version('tokenwarden')}"
    except PackageNotFoundError:
        return "tokenwarden/dev"


#: What tokenwarden calls itself to Apple and to the directories.
USER_AGENT = _user_agent()


@functools.cache
def tls_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """The system's trusted CAs, and `ca_bundle`'s besides."""
    context = httpx.create_ssl_context()
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"TOKENWARDEN_CA_BUNDLE {str(ca_bundle)!r} cannot be used ({exc.__class__.__name__}"
                f": {exc}); give a PEM file of CA certificates"
            ) from None
    return context


def check_ca_bundle(path: Path) -> Path:
    """A CA bundle that exists and holds PEM certificates (refused at start-up, not at the
    first request)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ConfigError(
            f"TOKENWARDEN_CA_BUNDLE {str(path)!r} cannot be read ({exc.strerror or exc}); "
            "give a PEM file of CA certificates"
        ) from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(
            f"TOKENWARDEN_CA_BUNDLE {str(path)!r} holds no PEM certificate "
            "(-----BEGIN CERTIFICATE-----); give a PEM file of CA certificates"
        )
    tls_context(path)  # a PEM that does not load is refused now too
    return path


def requests_session(ca_bundle: Path | None = None) -> requests.Session:
    """A requests session (for msal and google-auth) trusting what tls_context trusts, that
    never reads proxies or CAs from the environment on its own. requests is imported here:
    only the directory clients use it, and worker processes need not carry it."""
    import requests
    from requests.adapters import HTTPAdapter

    class TrustingAdapter(HTTPAdapter):
        """requests' adapter with tokenwarden's TLS context (requests alone takes one CA file,
        which would replace the system's CAs instead of adding to them)."""

        def init_poolmanager(self, *args, **kwargs):
            kwargs["ssl_context"] = tls_context(ca_bundle)
            return super().init_poolmanager(*args, **kwargs)

    session = requests.Session()
    session.trust_env = False
    session.mount("https://", TrustingAdapter())
    return session


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delta-seconds or an HTTP date), or None
    when it is absent or unreadable; never negative."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²", which isdigit() takes too
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT even when it does not say so
        return None
    return max(0.0, (when - now).total_seconds())
