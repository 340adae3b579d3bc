"""Every Lua script of the delivery side is given every key it touches in KEYS (Redis's
scripting contract): watched with MONITOR, each command a script runs names a key its call
declared. And claiming in two steps still claims nothing twice."""

import re
from datetime import timedelta

import pytest
import redis

from worker.notify.dispatcher import delivery_id
from worker.notify.subscriptions import WEBHOOK, Subscription
from worker.records import to_ms
from worker.store import keys as k
from worker.store.delivery_claims import _Candidate, _Claim
from worker.store.delivery_store import FAILED_KEPT_MS, DeliveryStore

LEASE_MS = 20_000

#: The scripts of the delivery side, all of which the flow below runs.
SCRIPTS = 6

_ARGUMENT = re.compile(r'"((?:[^"\\]|\\.)*)"')


def subscription(ident, now) -> Subscription:
    return Subscription(ident, WEBHOOK, f"https://{ident}.example/hook", (), now)


def event(ident) -> dict:
    return {"id": ident, "type": "tokenwarden.replacement.opened", "data": {}}


class Monitor:
    """The commands Redis runs, as argument lists: (client is "lua", arguments)."""

    def __init__(self, client: redis.Redis):
        self._monitor = client.monitor()
        self._monitor.__enter__()
        self._client = client

    def commands(self) -> list[tuple[bool, list[str]]]:
        self._client.echo("end-of-flow")
        seen = []
        while True:
            line = self._monitor.connection.read_response()
            line = line.decode() if isinstance(line, bytes) else line
            _, _, rest = line.partition(" [")
            origin, _, command = rest.partition("] ")
            arguments = [a.replace('\\"', '"') for a in _ARGUMENT.findall(command)]
            if arguments[:2] == ["ECHO", "end-of-flow"]:
                return seen
            seen.append((origin.split(" ")[-1] == "lua", arguments))

    def close(self):
        self._monitor.__exit__(None, None, None)


@pytest.fixture
def monitor(redis_client):
    watching = Monitor(redis_client)
    yield watching
    watching.close()


def run_every_delivery_script(store, now) -> None:
    """Create (one parked), claim due ones (a busy subscription's parked, a free one's
    unparked), attempt, claim the next parked, fail one, and forget it later."""
    first, second = subscription("sub_a", now), subscription("sub_b", now)
    for each in (first, second):
        store.add_subscription(each, "whsec_" + "A" * 43)
    created = store.create_deliveries(
        event("evt_1"), [first, second], delivery_id, now, LEASE_MS, "L1", park={"sub_b"}
    )
    store.create_deliveries(event("evt_2"), [first, second], delivery_id, now, LEASE_MS, "L1")
    assert len(created) == 2
    later = now + timedelta(milliseconds=LEASE_MS + 1)
    claimed = store.claim_due(later, LEASE_MS, 10, "L2", per_subscription=1, in_hand={"sub_a": 1})
    assert claimed == [(delivery_id("evt_1", "sub_b"), "sub_b")]
    ident = claimed[0][0]
    assert store.begin_attempt(ident, f"L2:{ident}", later, LEASE_MS) == 0
    assert store.record_attempt(
        store.get_delivery(ident),
        lease=f"L2:{ident}",
        attempt=1,
        outcome="delivered",
        status="200",
        error="",
        now=later,
        next_at=None,
        latency_ms=1.0,
    )
    following = store.claim_parked("sub_b", later, LEASE_MS, "L3")
    assert following == delivery_id("evt_2", "sub_b")
    assert store.begin_attempt(following, f"L3:{following}", later, LEASE_MS) == 0
    assert store.record_attempt(
        store.get_delivery(following),
        lease=f"L3:{following}",
        attempt=1,
        outcome="failed",
        status="410",
        error="gone",
        now=later,
        next_at=None,
        latency_ms=1.0,
    )
    assert store.forget_failed(later + timedelta(milliseconds=FAILED_KEPT_MS + 1)) == 1


def test_every_key_a_delivery_script_touches_is_declared_in_keys(app, monitor):
    # Given the delivery store, watched
    # When every delivery script runs
    run_every_delivery_script(app.deliveries, app.now())
    # Then each command a script ran names a key that script's call declared
    declared: list[str] | None = None
    scripts, undeclared, touched = set(), [], 0
    for from_script, arguments in monitor.commands():
        if not from_script and arguments[0].upper() in ("EVALSHA", "EVAL"):
            count = int(arguments[2])
            declared = arguments[3 : 3 + count]
            scripts.add(arguments[1])
        elif from_script:
            assert declared is not None, f"{arguments} ran before any script was called"
            touched += 1
            if arguments[1] not in declared:
                undeclared.append(arguments[:2])
    assert len(scripts) == SCRIPTS and touched > 0
    assert undeclared == []


def test_a_claim_passes_over_a_candidate_another_claimer_took_after_it_was_read(app):
    # Given a due delivery, read as a candidate by a slow claimer
    store, now = app.deliveries, app.now()
    sub = subscription("sub_a", now)
    store.add_subscription(sub, "whsec_" + "A" * 43)
    store.create_deliveries(event("evt_1"), [sub], delivery_id, now, LEASE_MS, "L1")
    later = now + timedelta(milliseconds=LEASE_MS + 1)
    slow = _Claim(to_ms(later), LEASE_MS, 10, "slow", bound=0)
    _, due = store._read_heads(slow.now_ms, 10)
    subscriptions, _ = store._read_candidates(slow, due, [])
    # When a quick claimer claims it first, then the slow one claims what it read
    quick = store.claim_due(later, LEASE_MS, 10, "quick")
    candidates = [_Candidate(i, s, score) for (i, score), s in zip(due, subscriptions, strict=True)]
    passed = store._claim_candidates(slow, ["sub_a"], [], candidates)
    # Then only the quick one holds it
    ident = delivery_id("evt_1", "sub_a")
    assert quick == [(ident, "sub_a")]
    assert passed == [0]
    assert app.redis.hget(k.delivery(ident), "lease") == f"quick:{ident}"


def test_the_next_parked_delivery_is_claimed_once_by_two_processes_claiming_in_turn(app):
    # Given three deliveries parked for one subscription, and two processes' stores
    store, now = app.deliveries, app.now()
    other = DeliveryStore(app.redis, app.keyring)
    sub = subscription("sub_a", now)
    store.add_subscription(sub, "whsec_" + "A" * 43)
    for n in range(3):
        store.create_deliveries(
            event(f"evt_{n}"), [sub], delivery_id, now, LEASE_MS, "L1", park={"sub_a"}
        )
    # When one claims, the other claims (taking what the first saw next), and the first again
    claimed = [
        store.claim_parked("sub_a", now, LEASE_MS, "one"),
        other.claim_parked("sub_a", now, LEASE_MS, "other"),
        store.claim_parked("sub_a", now, LEASE_MS, "one"),
        other.claim_parked("sub_a", now, LEASE_MS, "other"),
    ]
    # Then each delivery is claimed once, and then none is left
    assert sorted(claimed[:3]) == sorted(delivery_id(f"evt_{n}", "sub_a") for n in range(3))
    assert claimed[3] is None
    assert app.redis.zcard(k.parked_deliveries("sub_a")) == 0
    assert app.redis.zscore(k.DELIVERIES_PARKED, "sub_a") is None
