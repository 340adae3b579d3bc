"""Reading rotation policies (worker/rules/policy.py) from Redis: a server's own layer is in its
hash (read with the server), its organization's in `tw:policy:org:<org key>`, the global one
in `tw:policy:global`. Layers are written only by decisions (decisions.py), so a change is
audited and announced with the write.

Nothing is cached: a policy set in the CLI applies at the next scan of every process.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from worker.names import name_key
from worker.records import Server
from worker.rules import policy
from worker.rules.policy import EMPTY_LAYER, Policy, PolicyLayer
from worker.store import keys as k


def org_scope(org: str) -> str:
    return policy.scope_of(policy.ORG, name_key(org))


def queue_policy_reads(pipe: redis.client.Pipeline, servers: Iterable[Server]) -> list[str]:
    """Queue the reads of the organization and global layers `servers` need; returns the
    scopes queued, in order (the global one last)."""
    scopes = sorted({org_scope(s.org) for s in servers if s.org})
    for scope in scopes:
        pipe.hgetall(k.policy_holder(scope))
    pipe.hgetall(k.GLOBAL_POLICY)
    return [*scopes, policy.GLOBAL]


def policies_from(
    servers: Iterable[Server], scopes: list[str], answers: list[dict[str, str]]
) -> dict[str, Policy]:
    """Each server's policy in force, from the layers queue_policy_reads read."""
    layers = {
        scope: PolicyLayer.from_fields(data) for scope, data in zip(scopes, answers, strict=True)
    }
    default = layers[policy.GLOBAL]
    return {
        s.id: policy.effective(
            s.policy, layers.get(org_scope(s.org), EMPTY_LAYER) if s.org else EMPTY_LAYER, default
        )
        for s in servers
    }


class RedisPolicies:
    def __init__(self, client: redis.Redis):
        self._redis = client

    def layer(self, scope: str) -> tuple[PolicyLayer, str]:
        """One layer as stored, and its version ("" when never written)."""
        data = self._redis.hgetall(k.policy_holder(scope))
        return PolicyLayer.from_fields(data), data.get(k.POLICY_VERSION, "")

    def effective_for(self, servers: list[Server]) -> dict[str, Policy]:
        """The policy in force for each server, by id, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        scopes = queue_policy_reads(pipe, servers)
        return policies_from(servers, scopes, pipe.execute())

    def layers(self) -> dict[str, PolicyLayer]:
        """Every organization and global layer set, by scope (for `policy list`)."""
        scopes = [policy.GLOBAL] + [
            policy.scope_of(policy.ORG, key.removeprefix(k.ORG_POLICY_PREFIX))
            for key in self._redis.scan_iter(match=k.org_policy("*"), count=500)
        ]
        pipe = self._redis.pipeline(transaction=False)
        for scope in scopes:
            pipe.hgetall(k.policy_holder(scope))
        found = {s: PolicyLayer.from_fields(d) for s, d in zip(scopes, pipe.execute(), strict=True)}
        return {scope: layer for scope, layer in found.items() if not layer.is_empty}

    def changes(self) -> dict[str, str]:
        """Scopes changed since the scan last brought their tokens' checks forward."""
        return self._redis.hgetall(k.POLICY_CHANGES)

    def forget_changes(self, handled: dict[str, str]) -> None:
        """Forget the changes handled, unless changed again meanwhile (another version)."""
        if not handled:
            return

        def drop(pipe: redis.client.Pipeline) -> None:
            now = pipe.hmget(k.POLICY_CHANGES, list(handled))
            done = [s for s, v in zip(handled, now, strict=True) if v == handled[s]]
            pipe.multi()
            if done:
                pipe.hdel(k.POLICY_CHANGES, *done)

        self._redis.transaction(drop, k.POLICY_CHANGES)
