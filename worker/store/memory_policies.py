"""The in-memory store's rotation policies: as worker/store/policies.py reads them."""

from __future__ import annotations

from worker.records import Server
from worker.rules import policy
from worker.rules.policy import EMPTY_LAYER, Policy, PolicyLayer
from worker.store.memory_state import MemoryState
from worker.store.policies import org_scope


class MemoryPolicies:
    def __init__(self, state: MemoryState):
        self._state = state

    def layer(self, scope: str) -> tuple[PolicyLayer, str]:
        with self._state.lock:
            kind, _, ident = scope.partition(":")
            version = self._state.policies.get(scope, (EMPTY_LAYER, ""))[1]
            if kind == policy.SERVER:
                server = self._state.servers.get(ident)
                return (server.policy if server else EMPTY_LAYER), version
            return self._state.policies.get(scope, (EMPTY_LAYER, ""))[0], version

    def effective_for(self, servers: list[Server]) -> dict[str, Policy]:
        with self._state.lock:
            default = self.layer(policy.GLOBAL)[0]
            return {
                s.id: policy.effective(
                    s.policy, self.layer(org_scope(s.org))[0] if s.org else EMPTY_LAYER, default
                )
                for s in servers
            }

    def layers(self) -> dict[str, PolicyLayer]:
        with self._state.lock:
            return {
                scope: layer
                for scope, (layer, _) in self._state.policies.items()
                if not scope.startswith(f"{policy.SERVER}:") and not layer.is_empty
            }

    def changes(self) -> dict[str, str]:
        with self._state.lock:
            return dict(self._state.policy_changes)

    def forget_changes(self, handled: dict[str, str]) -> None:
        with self._state.lock:
            for scope, version in handled.items():
                if self._state.policy_changes.get(scope) == version:
                    del self._state.policy_changes[scope]
