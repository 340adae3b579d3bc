"""What setting or clearing a rotation policy layer decides: the layer written (guarded on the
version it was read at, so two changes at once cannot lose one), the audit entry, and the
`tokenwarden.server.policy_changed` event, so the change reaches the audit trail and every
system subscribed, like any other decision. Pure: `now` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events import catalog
from events.cloudevent import outgoing_event, stable_id
from worker.records import Server
from worker.rules import policy
from worker.rules.decision import (
    EXISTS,
    POLICY,
    SERVER,
    VERSION,
    AuditEntry,
    Decision,
    Guard,
    PolicyWrite,
)
from worker.rules.facts import next_version
from worker.rules.policy import PolicyLayer


@dataclass(frozen=True)
class PolicyTarget:
    """Whose layer: a server's own, an organization's default, or the global default."""

    scope: str
    kind: str  # policy.SERVER | policy.ORG | policy.GLOBAL
    server: Server | None = None
    org: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "scope": self.kind,
            "server": self.server.name if self.server else None,
            "server_id": self.server.id if self.server else None,
            "org": self.org or None,
        }

    @property
    def subject(self) -> str:
        if self.server is not None:
            return self.server.name
        return self.org if self.kind == policy.ORG else "global"


def decide_policy_change(
    target: PolicyTarget,
    before: PolicyLayer,
    version: str,
    after: PolicyLayer,
    now: datetime,
    source: str,
) -> Decision:
    new_version = next_version(version, target.scope, now.isoformat(), repr(after))
    decision = Decision(now=now)
    decision.guards.append(Guard(POLICY, target.scope, VERSION, version))
    if target.server is not None:
        decision.guards.append(Guard(SERVER, target.server.id, EXISTS, target.server.id))
    decision.policies.append(PolicyWrite(target.scope, after, new_version))
    data = {
        **target.describe(),
        "policy": after.describe(),
        "previous": before.describe(),
        "cleared": after.is_empty,
        "changed_by": source,
    }
    event = outgoing_event(
        catalog.POLICY_CHANGED,
        event_id=stable_id(catalog.POLICY_CHANGED, target.scope, new_version),
        subject=target.subject,
        time=now,
        data=data,
        source=source,
    )
    decision.outgoing.append(event)
    decision.audit = AuditEntry("policy", {"type": catalog.POLICY_CHANGED, **data})
    action = "policy cleared" if after.is_empty else "policy set"
    decision.results.append({"action": action, **target.describe()})
    return decision
