"""The scim source kind: being built (issue 12)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from worker.intake.context import Intake


def routes(intake: Intake) -> list[BaseRoute]:
    return []
