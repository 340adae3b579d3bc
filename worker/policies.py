"""Setting rotation policies (worker/rules/policy.py): check what the user gave, decide the
change (worker/rules/policy_change.py, pure) and hand it to the store, which writes the layer,
its audit entry and its `policy_changed` event in one step. The scan brings the affected
tokens' checks forward at its next run (scheduler/scan.py): nothing needs a restart.

Nothing here reads the clock or the environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from events import catalog
from worker.errors import ConcurrentChange, InvalidInput, NotFound
from worker.names import clean_label, name_key
from worker.records import Server
from worker.registry import WRITE_ATTEMPTS
from worker.rules import policy
from worker.rules.policy import EMPTY_LAYER, MAX_OWNERS, Policy, PolicyLayer
from worker.rules.policy_change import PolicyTarget, decide_policy_change
from worker.store.protocol import Store

#: An owner's address: a plain ASCII mailbox (no display name, comment or quoting), a domain
#: of dot-separated labels. Stricter than RFC 5322 on purpose: it goes into e-mail headers,
#: events and the audit trail.
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)

#: Longest owner address accepted (RFC 5321's limit on a path).
MAX_ADDRESS_CHARS = 254


def check_renew_before(days: int) -> int:
    if not policy.MIN_RENEW_BEFORE_DAYS <= days <= policy.MAX_RENEW_BEFORE_DAYS:
        raise InvalidInput(
            f"--renew-before {days} is out of range; give days before expiry, "
            f"{policy.MIN_RENEW_BEFORE_DAYS} to {policy.MAX_RENEW_BEFORE_DAYS} "
            "(a token lives a year)"
        )
    return days


def check_owners(addresses: tuple[str, ...]) -> tuple[str, ...]:
    """Owner e-mail addresses, checked, without repeats (compared ignoring case)."""
    owners: dict[str, str] = {}
    for raw in addresses:
        address = raw.strip()
        if address.lower().startswith("mailto:"):
            address = address[len("mailto:") :]
        if len(address) > MAX_ADDRESS_CHARS or not _EMAIL.fullmatch(address):
            raise InvalidInput(
                f"--owner {raw!r} is not a plain e-mail address; give one per --owner, "
                "like --owner it-lead@school.example"
            )
        owners.setdefault(address.casefold(), address)
    if len(owners) > MAX_OWNERS:
        raise InvalidInput(f"{len(owners)} owners given; at most {MAX_OWNERS} per policy")
    return tuple(owners.values())


@dataclass(frozen=True)
class PolicyChange:
    target: PolicyTarget
    before: PolicyLayer
    after: PolicyLayer
    #: Whether anything changed (setting the same values again writes nothing).
    changed: bool


def server_target(server: Server) -> PolicyTarget:
    return PolicyTarget(
        scope=policy.scope_of(policy.SERVER, server.id),
        kind=policy.SERVER,
        server=server,
        org=server.org,
    )


def org_target(servers: Iterable[Server], raw_org: str, layers: Iterable[str] = ()) -> PolicyTarget:
    """An organization's layer: it must name the organization of a registered server (a typo
    would otherwise set a default nothing ever reads), or one whose layer is still stored
    (its last server removed: it can still be shown and cleared)."""
    org = clean_label(raw_org, what="organization")
    if not org:
        raise InvalidInput("give the organization's name, as `servers list` shows it")
    known = {name_key(s.org): s.org for s in servers if s.org}
    stored = policy.scope_of(policy.ORG, name_key(org)) in set(layers)
    if stored and name_key(org) not in known:
        known[name_key(org)] = org
    if name_key(org) not in known:
        shown = ", ".join(sorted(repr(o) for o in known.values())[:10]) or "none yet"
        raise NotFound(
            f"no server is registered in organization {org!r} (organizations: {shown}); "
            "add a server with `servers add NAME --org ORG` first"
        )
    return PolicyTarget(
        scope=policy.scope_of(policy.ORG, name_key(org)), kind=policy.ORG, org=known[name_key(org)]
    )


GLOBAL_TARGET = PolicyTarget(scope=policy.GLOBAL, kind=policy.GLOBAL)


def set_policy(
    store: Store,
    target: PolicyTarget,
    change: PolicyLayer,
    *,
    clear: bool,
    now: datetime,
    source: str = catalog.SOURCE_CLI,
) -> PolicyChange:
    """Overlay `change` on the target's layer (or remove the layer, `clear`), with its audit
    entry and `policy_changed` event, in one step."""
    if clear and not change.is_empty:
        raise InvalidInput("--clear removes the whole override; give it without other options")
    if not clear and change.is_empty:
        raise InvalidInput(
            "give --renew-before, --rotate-key or --owner to set, or --clear to remove; "
            "without them the command shows the policy"
        )
    for _ in range(WRITE_ATTEMPTS):
        if target.server is not None and store.get_server(target.server.id) is None:
            raise NotFound(f"server {target.server.name!r} was removed meanwhile")
        before, version = store.policies.layer(target.scope)
        after = policy.EMPTY_LAYER if clear else before.overlaid_with(change)
        if after == before and version:
            return PolicyChange(target, before, after, changed=False)
        decision = decide_policy_change(target, before, version, after, now, source)
        if store.events.apply(decision).outcome == "applied":
            return PolicyChange(target, before, after, changed=True)
    raise ConcurrentChange("the policy kept changing while it was being set; try again")


def in_force(store: Store, server: Server) -> Policy:
    return store.policies.effective_for([server])[server.id]


def in_force_for(store: Store, servers: list[Server]) -> dict[str, Policy]:
    """The policy in force for each server, by id (one round trip)."""
    return store.policies.effective_for(servers)


def stored_layers(store: Store) -> list[str]:
    """The scopes of the organization and global layers stored."""
    return list(store.policies.layers())


def layer_of(store: Store, target: PolicyTarget) -> PolicyLayer:
    return store.policies.layer(target.scope)[0]


def in_force_below(store: Store, target: PolicyTarget) -> Policy:
    """For a server, its policy; for an organization's or the global layer, what a server with
    no override of its own gets."""
    if target.server is not None:
        return in_force(store, store.get_server(target.server.id) or target.server)
    default = store.policies.layer(policy.GLOBAL)[0]
    org = store.policies.layer(target.scope)[0] if target.kind == policy.ORG else EMPTY_LAYER
    return policy.effective(EMPTY_LAYER, org, default)
