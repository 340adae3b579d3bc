"""Every Redis key tokenwarden writes, in one place.

All keys start with `tw:` so an operator can find (and a shared Redis can hold) tokenwarden's
data. Multi-key writes assume one Redis (standalone or Sentinel), not Redis Cluster.
"""

from __future__ import annotations

import hashlib

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


def credentials(token_id: str) -> str:
    """String: a current token's four credentials, sealed. Apart from the token's hash so the
    hash stays small enough for Redis's compact encoding (values of 64 bytes at most)."""
    return f"tw:cred:{token_id}"


#: Prefix of the fields of a user hash that list the current tokens the user downloaded
#: (`t:<token id>`); the hash also holds the user's version and latest causes.
USER_TOKEN_PREFIX = "t:"


def user_token_field(token_id: str) -> str:
    return f"{USER_TOKEN_PREFIX}{token_id}"


#: Sorted set: current token ids by when the scheduler must look at them next (ms): a new
#: token at once, then each threshold crossing. A scan reads only its due head.
TOKENS_NEXT_CHECK = "tw:tokens:next-check"

#: Sorted set: current token ids by when Apple's enrollment service is next asked about them
#: (ms). A token enters at install; a check claims it (moving it a lease ahead) and puts it
#: back an interval later.
APPLE_NEXT_CHECK = "tw:apple:next-check"

#: String: the check interval (seconds) the Apple schedule was made with; when the configured
#: one is shorter, checks scheduled beyond it are brought forward.
APPLE_INTERVAL = "tw:apple:interval"

#: String: set once every token installed before Apple was asked about tokens has been put
#: into APPLE_NEXT_CHECK (spread over an interval).
APPLE_BACKFILLED = "tw:apple:backfilled"

#: String: the thresholds the next checks were computed with ("120,60,30,..."); when the
#: configured ones differ, every next check is brought forward to the new largest threshold.
SCHEDULER_THRESHOLDS = "tw:scheduler:thresholds"

#: String: when the latest expiry scan ran (ms), written after each scan (the scheduler's, and
#: `tokenwarden scan`); the metrics say how long ago that was.
SCHEDULER_LAST_SCAN = "tw:scheduler:last-scan"

#: Hash: the global rotation policy layer (worker/rules/policy.py fields, and POLICY_VERSION).
GLOBAL_POLICY = "tw:policy:global"

#: Field, in a policy layer's hash (a server's own lives in the server hash), that versions it.
POLICY_VERSION = "p_v"


#: Prefix of org_policy keys.
ORG_POLICY_PREFIX = "tw:policy:org:"


def org_policy(org_key: str) -> str:
    """Hash: one organization's rotation policy layer, by the organization's name key."""
    return f"{ORG_POLICY_PREFIX}{org_key}"


def policy_holder(scope: str) -> str:
    """The hash a policy layer lives in, by its scope as worker.rules.policy names it:
    `server:<id>` (the server hash), `org:<org key>` or `global`."""
    kind, _, ident = scope.partition(":")
    if kind == "server":
        return server(ident)
    return org_policy(ident) if kind == "org" else GLOBAL_POLICY


#: Hash: policy scopes changed since the scan last brought their tokens' checks forward
#: (scope -> the layer's version then). At most one field per server and organization, and one
#: for the global layer.
POLICY_CHANGES = "tw:policy:changes"

#: Set: ids of the master keys that have sealed values here, to refuse a wrong or new key
#: (a CLI started in another folder would otherwise make itself a fresh key file).
MASTER_KEY_IDS = "tw:master-key-ids"

#: Hash field holding a sealed private key (in key_pair hashes).
SEALED_PRIVATE_KEY = "private_key"

#: (SCAN pattern, sealed field) for every place a sealed secret lives, the field None for a
#: string key; re-encryption walks these.
SEALED_LOCATIONS = (
    ("tw:key:*", SEALED_PRIVATE_KEY),
    ("tw:cred:*", None),
    ("tw:subscription:*", "secret"),
    ("tw:subscription:*", "url"),
    ("tw:source:*", "credentials"),
)


def subscription(subscription_id: str) -> str:
    """Hash: one subscription (webhook or e-mail), its webhook secret and URL sealed."""
    return f"tw:subscription:{subscription_id}"


#: Set: ids of all subscriptions.
SUBSCRIPTIONS = "tw:subscriptions"


def delivery(delivery_id: str) -> str:
    """Hash: one delivery of one outgoing event to one subscription."""
    return f"tw:delivery:{delivery_id}"


#: Sorted set: delivery ids by creation time (ms).
DELIVERIES = "tw:deliveries"

#: Sorted set: pending delivery ids by when they are next due (ms), leases included.
DELIVERIES_DUE = "tw:deliveries:due"

#: Sorted set: failed delivery ids by when they failed (ms).
DELIVERIES_FAILED = "tw:deliveries:failed"

#: Sorted set: ids of the subscriptions with parked deliveries (see parked_deliveries).
DELIVERIES_PARKED = "tw:deliveries:parked"

#: Prefix of parked_deliveries keys.
PARKED_PREFIX = "tw:deliveries:parked:"


def parked_deliveries(subscription_id: str) -> str:
    """Sorted set: pending delivery ids of one subscription by when they were due (ms), parked
    while that subscription had no attempt free (out of the due index, so they hold up no one)."""
    return f"{PARKED_PREFIX}{subscription_id}"


#: Prefix of delivery_body keys.
DELIVERY_BODY_PREFIX = "tw:delivery-body:"


def delivery_body(event_id: str) -> str:
    """Hash: the body of one outgoing event (`body`), stored once for all its deliveries, and
    how many of them still need it (`refs`: pending or failed ones)."""
    return f"{DELIVERY_BODY_PREFIX}{event_id}"


def user(user_key: str) -> str:
    """Hash: a Managed Apple Account's current tokens (`t:<token id>`), its version
    (USER_VERSION, bumped whenever that set or its causes change) and its latest cause of each
    kind (`cause:<type>`). One that lists no current token expires a year after its latest
    cause."""
    return f"tw:user:{user_key}"


#: Field of the user hash that versions their set of current tokens and their causes.
USER_VERSION = "v"

#: Field of the server hash that versions the causes recorded in it (the fields a decision
#: depends on besides, its token and staged key, are guarded themselves).
SERVER_VERSION = "v"

#: Field of the replacement hash that versions it (bumped by every decision that writes it).
REPLACEMENT_VERSION = "v"

#: Prefix of the fields, in user and server hashes, that hold the latest cause of each type.
CAUSE_FIELD_PREFIX = "cause:"


def cause_field(event_type: str) -> str:
    return f"{CAUSE_FIELD_PREFIX}{event_type}"


def replacement(token_id: str) -> str:
    """Hash: the replacement of one token (see records.Replacement), its certificate to upload
    and its version (REPLACEMENT_VERSION). Written by the decisions that open, extend or
    resolve it (worker/store/decisions.py)."""
    return f"tw:replacement:{token_id}"


#: Sorted set: token ids with an open replacement, by opening time (ms).
REPLACEMENTS_OPEN = "tw:replacements:open"

#: Sorted set: token ids that ever had a replacement, by opening time (ms).
REPLACEMENTS = "tw:replacements"

#: Stream: outgoing events, written in the same atomic step as the decision (the outbox).
OUTBOX = "tw:outbox"

#: Stream (capped): every event received and every decision made.
AUDIT = "tw:audit"

#: Stream (capped): events that could not be handled, with the reason.
DEAD = "tw:dead"


def seen(event_key: str) -> str:
    """String with a TTL: this event (`source` + `id`) was handled; a repeat is dropped."""
    digest = hashlib.sha256(event_key.encode()).hexdigest()[:32]
    return f"tw:seen:{digest}"


def server_qualifier(org_key: str, name_key: str) -> str:
    return f"{org_key}{QUALIFIER_SEPARATOR}{name_key}"


def source(name: str) -> str:
    """Hash: one source of the HTTP intake (see worker/intake/sources.py): its kind, the hash
    of its secret (and of the previous one, in its grace period), its domain maps."""
    return f"tw:source:{name}"


#: Set: the names of the sources.
SOURCES = "tw:sources"

#: Hash field of a polling source (see source()) holding its directory credential, sealed.
SOURCE_CREDENTIALS = "credentials"


def source_poll(name: str) -> str:
    """Hash: how a polling source's rounds went: `last_success`, `last_round` (ms), `failures`
    in a row, `failing_since` (ms) and `error` while it fails, `summary` of the last round."""
    return f"tw:source-poll:{name}"


def source_lock(name: str) -> str:
    """String with a TTL: the scheduler replica running a round of this polling source."""
    return f"tw:source-lock:{name}"


#: Sorted set: polling source names by when their next round is due (ms).
SOURCES_NEXT_POLL = "tw:sources:next-poll"


def watched(domain: str) -> str:
    """Set: keys of the users of this Managed Apple Account domain who downloaded a current
    token, the people directories are asked about. Added to at install; a user who no longer
    holds one is taken out by the next round that meets them (lua/forget_unwatched.lua)."""
    return f"tw:watched:{domain}"


#: Set: the domains that have a watched() set.
WATCHED_DOMAINS = "tw:watched-domains"

#: String: set once the users of the tokens installed before the index existed were added.
WATCHED_BACKFILLED = "tw:watched:backfilled"


def user_domain(user_key: str) -> str:
    """The Managed Apple Account domain a user is watched under ("-" without one)."""
    local, at, domain = user_key.rpartition("@")
    return domain if at and local and domain else "-"


def scim_users(source_name: str) -> str:
    """Sorted set: the ids of the users a SCIM source provisioned, by creation time (ms)."""
    return f"tw:scim:{source_name}:users"


def scim_user_names(source_name: str) -> str:
    """Hash: a SCIM source's userNames (in the form they compare in) -> user id; keeps them
    unique per source and finds `filter=userName eq "..."` in one read."""
    return f"tw:scim:{source_name}:names"


def scim_user(source_name: str, user_id: str) -> str:
    """Hash: one provisioned user: `r` its stored attributes (JSON; never a password), `v` its
    version, `k` its userName as it compares."""
    return f"tw:scim:{source_name}:user:{user_id}"


def viewer(name: str) -> str:
    """Hash: one viewer of the web pages (worker/ui/viewers.py): `name`, `hash` (Argon2id of
    the password; never the password), `created_at` (ms), `generation` (in their cookies)."""
    return f"tw:viewer:{name}"


#: Set: the names of the viewers.
VIEWERS = "tw:viewers"


def login_failures(kind: str, digest: str) -> str:
    """String with a TTL (the window): failed logins to the web pages in the window, by client
    address or by name (`kind`), the address or name hashed (`digest`) so a key stays short."""
    return f"tw:ui:login-failures:{kind}:{digest}"


# ---- keys of the other parts, named here too so nothing else spells one -----------------------

#: String with a TTL: written by every readiness check of `serve` (`/readyz`), to know Redis
#: takes writes (a replica left behind by a failover answers PING too).
READY_PROBE = "tw:ready-probe"

#: String with a TTL: the owner id of the scheduler replica that acts now (see store/lease.py).
SCHEDULER_LEADER = "tw:scheduler:leader"

#: String: a counter written only to order a WAIT for replicas after a transaction
#: (worker/store/replication.py); its value means nothing.
REPLICATION_MARK = "tw:replication-mark"

#: Namespace of dramatiq's keys, given to its RedisBroker. dramatiq names the keys in it; the
#: names below are the ones it makes (tests and benchmarks read them).
BROKER_NAMESPACE = "tw:queue"

#: Sorted set: dramatiq worker ids by their latest heartbeat (ms).
BROKER_HEARTBEATS = f"{BROKER_NAMESPACE}:__heartbeats__"

#: SCAN pattern of the sets of messages in workers' hands (see broker_acks).
BROKER_ACKS_PATTERN = f"{BROKER_NAMESPACE}:__acks__.*"


def broker_queue(queue_name: str) -> str:
    """List: ids of the messages waiting on a dramatiq queue."""
    return f"{BROKER_NAMESPACE}:{queue_name}"


def broker_messages(queue_name: str) -> str:
    """Hash: message id -> message, for every message of a queue not yet acknowledged."""
    return f"{BROKER_NAMESPACE}:{queue_name}.msgs"


def broker_acks(worker_id: str, queue_name: str) -> str:
    """Set: ids of a queue's messages in one worker's hands."""
    return f"{BROKER_NAMESPACE}:__acks__.{worker_id}.{queue_name}"
