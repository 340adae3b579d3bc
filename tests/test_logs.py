"""Log lines never carry secrets, whatever a caller passes by mistake."""

import io
import json

import structlog

from worker.logs import REDACTED, configure_logging


def log_line(**fields) -> dict:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    try:
        structlog.get_logger("test").info("something", **fields)
    finally:
        structlog.reset_defaults()
    return json.loads(stream.getvalue())


def test_secret_fields_are_redacted_by_name():
    line = log_line(consumer_secret="x1", private_key="x2", webhook_secret="x3", user="a@x")
    assert line["consumer_secret"] == line["private_key"] == line["webhook_secret"] == REDACTED
    assert line["user"] == "a@x"


def test_apple_credentials_and_pem_keys_are_redacted_by_shape_anywhere():
    line = log_line(
        note="token CK_75b2eb55cec9641e869a7d2c88b4bf1f leaked",
        nested={"detail": ["AS_0123456789abcdef", "fine"]},
        blob="-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
    )
    text = json.dumps(line)
    for secret in ("CK_75b2eb55", "AS_0123456789", "MIIEpAIBAAKCAQEA"):
        assert secret not in text
    assert line["nested"]["detail"][1] == "fine"


def test_exceptions_are_logged_without_local_variables():
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    try:
        access_secret = "AS_topsecretvalue123"  # noqa: F841 - a local a traceback could show
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("test").exception("failed")
    finally:
        structlog.reset_defaults()
    assert "topsecretvalue" not in stream.getvalue()
    assert "boom" in stream.getvalue()
