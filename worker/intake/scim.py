"""The scim source kind: a SCIM 2.0 service provider at `/sources/NAME/scim/v2` for Okta's and
Entra ID's user provisioning, `Authorization: Bearer SECRET`.

scim2-server does the protocol (routing, validation with scim2-models, filters, PATCH, PUT,
ETags, discovery, SCIM error bodies); tokenwarden gives it the source check in front and a
storage behind (scim_storage.py: users in Redis, and the events their changes mean).

What the service publishes is what it keeps: a User schema cut down to userName, name,
displayName, active, emails and password (write-only, never stored), no Groups, no Bulk, no
sorting. Attributes a directory sends beyond it (title, the enterprise extension...) are
accepted and dropped, and a PATCH that adds to an `emails[type eq "work"]` entry that is not
there yet creates it, as Entra ID expects.
"""

from __future__ import annotations

from typing import Any

import structlog
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    ETag,
    External,
    Filter,
    Patch,
    Reference,
    ResourceType,
    Schema,
    SCIMException,
    ScimPolicy,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
)
from scim2_server.applications.asgi import ASGIApplication
from scim2_server.applications.base import VERSION_PREFIX
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.service import ScimService
from scim2_server.utils import load_json_resource
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount
from starlette.types import Receive, Scope, Send

from worker.intake import scim_events
from worker.intake.context import Intake
from worker.intake.scim_storage import RedisScimStorage
from worker.intake.sources import SCIM
from worker.store.scim_users import ScimUserStore

log = structlog.get_logger(__name__)

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"

#: The attributes of the User schema the service publishes (and, but the password, keeps).
USER_ATTRIBUTES = frozenset({"userName", "name", "displayName", "active", "password", "emails"})

#: Most users one search answers (a larger `count` is cut to this).
MAX_RESULTS = 200

#: How much of what Okta and Entra ID send is taken although the RFCs would refuse it.
POLICY = ScimPolicy(
    # attributes beyond the published schema (Entra's default mappings send many): dropped
    unknown=ScimPolicy.Unknown.ignore,
    # Entra's `remove` with a value naming the entry to remove
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    # Entra's `add` to `emails[type eq "work"].value` on a user without a work e-mail
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)

BEARER = AuthenticationScheme(
    type=AuthenticationScheme.Type.oauthbearertoken,
    name="Bearer token",
    description="The source's secret, from `tokenwarden sources add NAME --kind scim`",
    spec_uri=Reference[External]("https://www.rfc-editor.org/rfc/rfc6750"),
    primary=True,
)


def build_provider() -> ScimProvider:
    """The service as it describes itself on its discovery endpoints."""
    core = next(s for s in load_json_resource("default-schemas.json") if s["id"] == USER_SCHEMA)
    kept = [a for a in core["attributes"] if a["name"] in USER_ATTRIBUTES]
    schema = Schema.model_validate({**core, "attributes": kept})
    resource_type = ResourceType.model_validate(
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "A user provisioned by the directory",
            "schema": USER_SCHEMA,
        }
    )
    config = ServiceProviderConfig(
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=MAX_RESULTS),
        change_password=ChangePassword(supported=True),
        sort=Sort(supported=False),
        etag=ETag(supported=True),
        authentication_schemes=[BEARER],
    )
    return ScimProvider.from_discovery([schema], [resource_type], config=config, policy=POLICY)


def routes(intake: Intake) -> list[BaseRoute]:
    return [Mount("/sources/{name}/scim", app=ScimEndpoint(intake))]


class ScimEndpoint:
    """Every request under /sources/NAME/scim: the source and its secret checked (404, 401),
    the body read within the intake's limit (413), then, under /v2 only (404 elsewhere: the
    path a directory is given is the only one), served by scim2-server over this source's
    users."""

    def __init__(self, intake: Intake):
        self.intake = intake
        self.provider = build_provider()
        self.service = _Service(self.provider)
        self.model = self.service.get_model(self.provider.resource_types[0])
        self._users: ScimUserStore | None = None

    @property
    def users(self) -> ScimUserStore:
        if self._users is None:  # built on first use: no Redis work when the app is made
            self._users = ScimUserStore(self.intake.app.redis)
        return self._users

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise HTTPException(404, "not found")
        request = Request(scope, receive)
        source = await self.intake.source(request, SCIM)
        if not _under_version_prefix(ASGIApplication.get_path(scope)):
            raise HTTPException(404, "not found")
        body = await self.intake.body(request, source.name)
        storage = RedisScimStorage(
            self.intake,
            self.users,
            source,
            self.model,
            self.intake.now(),
            scim_events.request_digest(source, body),
        )
        application = _SourceApplication(storage, self.provider, self.service)
        application.source = source.name
        await application(scope, _replay(body), send)


class _Service(ScimService):
    def patch_response(self, base_url, resource, response_parameters) -> ScimResponse:
        """The user after the PATCH, 200 (RFC 7644 allows a bare 204; Okta reads the user)."""
        return self.replacement_response(base_url, resource, response_parameters)


class _SourceApplication(ASGIApplication):
    """scim2-server's ASGI application for one request of one source (the source is already
    authenticated in front of it)."""

    source = ""

    def handle_exception(self, request: ScimRequest, exception: Exception) -> ScimResponse:
        """Logged with the source, the status and the SCIM error type: never the body or
        the detail, which can quote what the client sent."""
        if isinstance(exception, SCIMException):
            log.info(
                "scim_refused",
                source=self.source,
                method=request.method,
                status=exception.status,
                scim_type=exception.scim_type or None,
            )
        else:
            log.exception("scim_failed", source=self.source, method=request.method)
        return self.service.error_response(exception)


def _under_version_prefix(path: str) -> bool:
    """Whether a path (below the mount) is /v2 or under it; scim2-server would also serve it
    without the prefix."""
    return path == VERSION_PREFIX or path.startswith(f"{VERSION_PREFIX}/")


def _replay(body: bytes) -> Receive:
    """The body the intake already read, handed to scim2-server as one ASGI message."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
