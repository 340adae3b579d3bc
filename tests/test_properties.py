"""Property tests: whatever bytes or JSON arrive, the event decoder and the token-file parser
answer with a value or their own one-line error, never anything else."""

import json
import string
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import catalog
from events.cloudevent import MalformedEvent, parse_event
from tests.tokenfiles import encrypt_to, inner_part
from worker.crypto.keys import generate_key_material
from worker.crypto.payload import parse_token_payload
from worker.crypto.smime import decrypt_envelope, read_envelope
from worker.errors import TokenFileError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

event_like = st.fixed_dictionaries(
    {
        "specversion": st.sampled_from(["1.0", "0.3", 1, None]),
        "id": st.one_of(st.text(max_size=300), st.integers()),
        "source": st.one_of(st.text(max_size=20), st.none()),
        "type": st.sampled_from([*sorted(catalog.INCOMING_TYPES), "x", ""]),
        "data": st.one_of(
            json_values,
            st.fixed_dictionaries({"user": json_values}),
            st.fixed_dictionaries({"server": json_values, "org": json_values}),
        ),
    },
    optional={
        "time": st.one_of(
            st.text(max_size=30),
            st.integers(),
            st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
        ),
        "subject": json_values,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), event_like))
def test_the_event_decoder_answers_an_event_or_a_malformed_event(raw):
    try:
        event = parse_event(raw)
    except MalformedEvent as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert event.type in catalog.INCOMING_TYPES
    assert event.id and event.source
    assert json.loads(json.dumps(event.to_wire()))["id"] == event.id


word = st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=30)
valid_event = st.fixed_dictionaries(
    {
        "specversion": st.just("1.0"),
        "id": word,
        "source": word.map(lambda w: f"urn:{w}"),
        "type": st.sampled_from(sorted(catalog.INCOMING_TYPES)),
        "user": st.tuples(word, word).map("@".join),
        "server": word,
    },
    optional={
        "time": st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ).map(datetime.isoformat),
    },
).map(
    # user events name the user, server events the server: the shape the catalog asks for
    lambda d: {
        **{key: d[key] for key in d if key not in ("user", "server")},
        "data": {"user": d["user"]}
        if d["type"] in catalog.USER_EVENTS
        else {"server": d["server"]},
    }
)


@settings(max_examples=200, deadline=None)
@given(valid_event)
def test_a_valid_event_decodes_the_same_from_a_dict_and_from_json_text(document):
    from_dict = parse_event(document)
    assert (from_dict.type, from_dict.id) == (document["type"], document["id"])
    assert parse_event(json.dumps(document)).to_wire() == from_dict.to_wire()


MATERIAL = generate_key_material("props", datetime(2026, 1, 1, tzinfo=UTC))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_the_token_reader_answers_an_envelope_or_a_token_file_error(data):
    try:
        read_envelope(data, source="t.p7m")
    except TokenFileError as exc:
        assert "t.p7m" in str(exc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(alphabet=string.printable, max_size=200), json_values.map(json.dumps)))
def test_the_payload_parser_answers_credentials_or_a_token_file_error(body):
    envelope = read_envelope(encrypt_to(MATERIAL.cert_pem, body), source="t.p7m")
    part = decrypt_envelope(envelope, MATERIAL.certificate, MATERIAL.private_key, source="t.p7m")
    try:
        credentials = parse_token_payload(part, source="t.p7m")
    except TokenFileError as exc:
        assert "t.p7m" in str(exc)
        return
    assert credentials.expires_at.tzinfo is not None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500))
def test_a_damaged_decrypted_part_is_a_token_file_error(part):
    try:
        credentials = parse_token_payload(inner_part("x")[:20] + part, source="t.p7m")
    except TokenFileError as exc:
        assert "t.p7m" in str(exc)
        return
    assert credentials.expires_at.tzinfo is not None
