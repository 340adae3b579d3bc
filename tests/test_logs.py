"""Log lines never carry secrets, whatever a caller passes by mistake."""

import io
import json
import logging

import pytest
import structlog

from worker.logs import REDACTED, configure_logging

SECRET = "CK_75b2eb55cec9641e869a7d2c88b4bf1f"


@pytest.fixture
def logged():
    """Configure logging into a buffer; returns a function giving what was written."""
    stream = io.StringIO()

    def configure(fmt="json"):
        configure_logging("debug", fmt, stream=stream)
        return stream.getvalue

    yield configure
    from tests.helpers import quiet_logging

    quiet_logging()


def test_secret_fields_are_redacted_by_name(logged):
    output = logged()
    structlog.get_logger("t").info(
        "x", consumer_secret="x1", private_key="x2", webhook_secret="x3", user="a@x"
    )
    line = json.loads(output())
    assert line["consumer_secret"] == line["private_key"] == line["webhook_secret"] == REDACTED
    assert line["user"] == "a@x"


def test_apple_credentials_and_pem_keys_are_redacted_by_shape_anywhere(logged):
    output = logged()
    structlog.get_logger("t").info(
        "x",
        note=f"token {SECRET} leaked",
        nested={"detail": ["AS_0123456789abcdef", "fine"]},
        blob="-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
    )
    text = output()
    for secret in ("CK_75b2eb55", "AS_0123456789", "MIIEpAIBAAKCAQEA"):
        assert secret not in text
    assert json.loads(text)["nested"]["detail"][1] == "fine"


def test_stdlib_loggers_like_dramatiqs_are_structured_and_redacted(logged):
    output = logged()
    logging.getLogger("dramatiq.worker").warning("message carried %s", SECRET)
    line = json.loads(output())
    assert line["logger"] == "dramatiq.worker"
    assert SECRET not in output()
    assert REDACTED in line["event"]


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_exceptions_are_logged_redacted_and_without_local_variables(logged, fmt):
    output = logged(fmt)
    try:
        plain = "an-ordinary-local-value"  # noqa: F841 - what show_locals would print
        raise ValueError(f"boom with {SECRET}")
    except ValueError:
        structlog.get_logger("t").exception("failed")
    text = output()
    assert "boom with" in text
    assert SECRET not in text
    assert "an-ordinary-local-value" not in text
