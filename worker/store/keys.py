"""Every Redis key tokenwarden writes, in one place.

All keys start with `tw:` so an operator can find (and a shared Redis can hold) tokenwarden's
data. Multi-key writes assume one Redis (standalone or Sentinel), not Redis Cluster.
"""

from __future__ import annotations

PREFIX = "tw:"

#: Hash: `<org key>\x1f<name key>` -> server id. Makes names unique per organization.
SERVERS = "tw:servers"

#: Separator between organization and name in SERVERS fields (cannot appear in either).
QUALIFIER_SEPARATOR = "\x1f"


def server(server_id: str) -> str:
    """Hash: one server (see records.Server)."""
    return f"tw:server:{server_id}"


def servers_named(name_key: str) -> str:
    """Set: ids of the servers with this case-folded name, across organizations."""
    return f"tw:server-name:{name_key}"


def server_keys(server_id: str) -> str:
    """Sorted set: the server's key pair ids by creation time (ms)."""
    return f"tw:server:{server_id}:keys"


def server_tokens(server_id: str) -> str:
    """Sorted set: the server's token ids by install time (ms), newest last."""
    return f"tw:server:{server_id}:tokens"


def key_pair(key_id: str) -> str:
    """Hash: one key pair (see records.KeyPair) and its sealed private key."""
    return f"tw:key:{key_id}"


def token(token_id: str) -> str:
    """Hash: one token (see records.Token) and its sealed credentials."""
    return f"tw:token:{token_id}"


def tokens_by_user(user_key: str) -> str:
    """Set: ids of current tokens downloaded by this (case-folded) Managed Apple Account."""
    return f"tw:user:{user_key}:tokens"


#: Sorted set: current token ids by expiry (ms); the scheduler scans its head.
TOKENS_BY_EXPIRY = "tw:tokens:by-expiry"

#: Hash field holding a sealed private key (in key_pair hashes).
SEALED_PRIVATE_KEY = "private_key"

#: Hash field holding sealed token credentials (in token hashes).
SEALED_CREDENTIALS = "credentials"

#: (SCAN pattern, sealed field) for every place a sealed secret lives; re-encryption walks these.
SEALED_LOCATIONS = (
    ("tw:key:*", SEALED_PRIVATE_KEY),
    ("tw:token:*", SEALED_CREDENTIALS),
)


def server_qualifier(org_key: str, name_key: str) -> str:
    return f"{org_key}{QUALIFIER_SEPARATOR}{name_key}"
