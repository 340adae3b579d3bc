"""The estate's metric families as a pure function of what the store read and `now`: the
days-left buckets, when a token counts as valid, the switch to counts above the series limit,
and labels that stay few whatever a record says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.metrics.estate import days_left_bucket, estate_families, reason_label
from worker.metrics.records import EstateFacts, OpenReplacement, TermsPending, TokenFacts
from worker.records import to_ms

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
PER_TOKEN_PREFIXES = ("tokenwarden_token_", "tokenwarden_server_")


def token(name: str, days: float, **extra) -> TokenFacts:
    return TokenFacts(
        token_id=f"tok_{name}",
        server=name,
        org="School",
        expires_ms=to_ms(NOW + timedelta(days=days)),
        downloaded_ms=to_ms(NOW - timedelta(days=30)),
        **extra,
    )


def samples(facts: EstateFacts, limit: int = 10_000) -> dict[tuple, float]:
    return {
        (s.name, *sorted(s.labels.items())): s.value
        for family in estate_families(facts, NOW, limit, 3600)
        for s in family.samples
    }


@pytest.mark.parametrize(
    ("left", "bucket"),
    [
        (timedelta(days=-1), "expired"),
        (timedelta(0), "expired"),
        (timedelta(seconds=1), "0-7"),
        (timedelta(days=7, hours=23), "0-7"),
        (timedelta(days=8), "8-30"),
        (timedelta(days=30, hours=23), "8-30"),
        (timedelta(days=31), "31-60"),
        (timedelta(days=60, hours=23), "31-60"),
        (timedelta(days=61), "61-120"),
        (timedelta(days=120, hours=23), "61-120"),
        (timedelta(days=121), "121+"),
        (timedelta(days=366), "121+"),
    ],
)
def test_a_token_falls_in_the_bucket_of_its_whole_days_left(left, bucket):
    assert days_left_bucket(to_ms(NOW + left), to_ms(NOW)) == bucket


def test_every_bucket_is_present_and_counts_each_current_token_once():
    facts = EstateFacts(tokens=[token("a", -3), token("b", 5), token("c", 200), token("d", 201)])
    found = samples(facts)
    counts = {
        labels[1][1]: value for labels, value in found.items() if labels[0] == "tokenwarden_tokens"
    }
    assert counts == {"expired": 1, "0-7": 1, "8-30": 0, "31-60": 0, "61-120": 0, "121+": 2}


def test_a_token_is_valid_until_a_replacement_opens_apple_rejects_it_or_it_expires():
    facts = EstateFacts(
        tokens=[
            token("fine", 100, apple_verdict="accepted", apple_confirmed_ms=to_ms(NOW)),
            token("replacing", 100),
            token("rejected", 100, apple_verdict="rejected", apple_rejected_ms=to_ms(NOW)),
            token("expired", -1),
        ],
        replacements=[OpenReplacement("tok_replacing", to_ms(NOW), "soon", ("x.key_regenerated",))],
    )
    found = samples(facts)
    valid = {
        dict(labels[1:])["server"]: value
        for labels, value in found.items()
        if labels[0] == "tokenwarden_token_valid"
    }
    assert valid == {"fine": 1, "replacing": 0, "rejected": 0, "expired": 0}
    assert found[("tokenwarden_tokens_apple_rejected",)] == 1
    assert found[("tokenwarden_token_apple_rejected", ("org", "School"), ("server", "rejected"))]
    confirmed = [k for k in found if k[0] == "tokenwarden_token_apple_confirmed_timestamp_seconds"]
    assert confirmed == [
        (
            "tokenwarden_token_apple_confirmed_timestamp_seconds",
            ("org", "School"),
            ("server", "fine"),
        )
    ]
    opened = ("tokenwarden_token_replacement_open_timestamp_seconds", ("org", "School"),
              ("server", "replacing"), ("urgency", "soon"))  # fmt: skip
    assert found[opened] == NOW.timestamp()


def test_above_the_limit_only_counts_remain_and_the_limit_says_so():
    facts = EstateFacts(
        tokens=[token(str(i), 10 * i) for i in range(3)],
        terms_pending=[TermsPending("0", "School", to_ms(NOW))],
    )
    within, above, never = samples(facts, 3), samples(facts, 2), samples(facts, 0)
    assert within[("tokenwarden_token_series_limited",)] == 0
    assert above[("tokenwarden_token_series_limited",)] == 1
    assert never[("tokenwarden_token_series_limited",)] == 1
    for limited in (above, never):
        per_token = {k[0] for k in limited if k[0].startswith(PER_TOKEN_PREFIXES)}
        assert per_token == {"tokenwarden_token_series_limited"}
        assert sum(v for k, v in limited.items() if k[0] == "tokenwarden_tokens") == 3
        assert limited[("tokenwarden_servers_terms_pending",)] == 1
    assert len([k for k in within if k[0] == "tokenwarden_token_expiry_timestamp_seconds"]) == 3


def test_open_replacements_count_once_per_reason_type_under_their_urgency():
    facts = EstateFacts(
        replacements=[
            OpenReplacement(
                "t1", to_ms(NOW) - 5000, "immediate",
                ("tokenwarden.directory.password_changed",) * 2
                + ("tokenwarden.directory.user_left",),
            ),
            OpenReplacement("t2", to_ms(NOW), "immediate", ("tokenwarden.directory.user_left",)),
            OpenReplacement("t3", to_ms(NOW), "made-up", ("evil.${jndi}",)),
        ]
    )  # fmt: skip
    found = samples(facts)
    counts = {k[1:]: v for k, v in found.items() if k[0] == "tokenwarden_replacements_open"}
    assert counts == {
        (("reason", "password_changed"), ("urgency", "immediate")): 1,
        (("reason", "user_left"), ("urgency", "immediate")): 2,
        (("reason", "other"), ("urgency", "other")): 1,
    }
    assert found[("tokenwarden_replacement_oldest_open_timestamp_seconds",)] == (
        NOW.timestamp() - 5
    )


def test_nothing_open_and_nothing_ever_run_reads_as_zeros_not_alarms():
    found = samples(EstateFacts())
    assert "tokenwarden_replacement_oldest_open_timestamp_seconds" not in {k[0] for k in found}
    assert found[("tokenwarden_scheduler_last_scan_timestamp_seconds",)] == 0
    assert found[("tokenwarden_scheduler_scan_interval_seconds",)] == 3600
    assert found[("tokenwarden_events_dead_total",)] == 0
    assert found[("tokenwarden_outbox_pending",)] == 0
    assert {k[1][1]: v for k, v in found.items() if k[0] == "tokenwarden_deliveries"} == {
        "pending": 0,
        "parked": 0,
        "failed": 0,
    }


@pytest.mark.parametrize(
    ("event_type", "label"),
    [
        ("tokenwarden.directory.password_changed", "password_changed"),
        ("tokenwarden.apple.rejected_by_apple", "rejected_by_apple"),
        ("tokenwarden.token.expiry_approaching", "expiry_approaching"),
        ("somebody.else.password_changed_for_real", "other"),
        ("", "other"),
    ],
)
def test_a_reason_label_is_a_known_type_or_other(event_type, label):
    assert reason_label(event_type) == label


def test_apples_refusal_holds_through_failed_checks_until_apple_accepts_the_token_again():
    refused = to_ms(NOW - timedelta(hours=6))
    facts = EstateFacts(
        tokens=[
            # refused, then Apple could not be reached: still refused, as status says
            token(
                "unreachable",
                100,
                apple_verdict="unreachable",
                apple_rejected_ms=refused,
                apple_confirmed_ms=refused,
            ),
            # refused, then accepted again later: works
            token(
                "taken_back",
                100,
                apple_verdict="accepted",
                apple_rejected_ms=refused,
                apple_confirmed_ms=to_ms(NOW),
            ),
        ]
    )
    found = samples(facts)
    rejected = {
        dict(labels[1:])["server"]: value
        for labels, value in found.items()
        if labels[0] == "tokenwarden_token_apple_rejected"
    }
    assert rejected == {"unreachable": 1, "taken_back": 0}
    assert found[("tokenwarden_tokens_apple_rejected",)] == 1


def test_scrapes_share_one_reading_for_a_few_seconds():
    from worker.metrics.estate import SNAPSHOT_S, EstateCollector

    reads, ticks = [], [0.0]

    def read():
        reads.append(1)
        return EstateFacts(tokens=[token("a", 10)])

    collector = EstateCollector(read, lambda: NOW, 10_000, 3600, clock=lambda: ticks[0])
    first = list(collector.collect())
    ticks[0] = SNAPSHOT_S - 0.1
    assert [f.name for f in collector.collect()] == [f.name for f in first]
    assert len(reads) == 1
    ticks[0] = SNAPSHOT_S + 0.1
    list(collector.collect())
    assert len(reads) == 2
