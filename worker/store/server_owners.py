"""The owners of servers, as the delivery loop reads them for a batch of outgoing events
(worker/notify/owners.py): each server's rotation policy in force (policies.py), from its own
layer, its organization's and the global one.
"""

from __future__ import annotations

from collections.abc import Collection

import redis

from worker.records import Server
from worker.store import keys as k
from worker.store.policies import policies_from, queue_policy_reads


def read_owners(client: redis.Redis, server_ids: Collection[str]) -> dict[str, tuple[str, ...]]:
    """The owners in force of each server that exists, by id (a server gone is left out), in
    two round trips whatever the number: the servers (their own layer and organization), then
    the organization and global layers they need."""
    ids = sorted(set(server_ids))
    if not ids:
        return {}
    pipe = client.pipeline(transaction=False)
    for server_id in ids:
        pipe.hgetall(k.server(server_id))
    servers = [Server.from_hash(data) for data in pipe.execute() if data.get("id")]
    if not servers:
        return {}
    pipe = client.pipeline(transaction=False)
    scopes = queue_policy_reads(pipe, servers)
    policies = policies_from(servers, scopes, pipe.execute())
    return {server_id: found.owners for server_id, found in policies.items()}
