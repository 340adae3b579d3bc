"""The client of a polling source's directory, made from the source and its opened credential.
Each client is imported only when a source of its kind is asked (msal and google-auth are
heavy, and most installations use one directory)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from worker.config import DirectorySettings
from worker.directories.base import DirectoryClient
from worker.intake.sources import ENTRA, GOOGLE, OKTA_API, Source


def client_for(
    source: Source,
    credentials: dict[str, Any],
    settings: DirectorySettings,
    now: Callable[[], datetime],
) -> DirectoryClient:
    """`now`: the App's clock (Google's Reports API keeps 180 days back from it)."""
    if source.kind == OKTA_API:
        from worker.directories.okta_api import OktaApiClient

        return OktaApiClient(source.option("org_url"), credentials["api_token"], settings=settings)
    if source.kind == ENTRA:
        from worker.directories.entra import EntraClient

        return EntraClient(
            source.option("tenant_id"),
            source.option("client_id"),
            credentials["client_secret"],
            settings=settings,
        )
    if source.kind == GOOGLE:
        from worker.directories.google import GoogleClient

        return GoogleClient(
            credentials["service_account"],
            source.option("admin_subject"),
            settings=settings,
            now=now,
        )
    raise ValueError(f"source {source.name!r} of kind {source.kind} asks no directory")
