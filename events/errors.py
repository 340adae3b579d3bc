"""The root of every error tokenwarden raises on purpose, here in the lowest layer so that
events/ (which imports nothing from worker/) raises under it too. worker/errors.py re-exports
these and draws the whole tree."""

from __future__ import annotations


class TokenwardenError(Exception):
    """Root of every error tokenwarden raises on purpose."""

    #: Process exit code when this error ends a CLI command.
    exit_code = 1


class InvalidInput(TokenwardenError):
    """The user gave something tokenwarden cannot use."""


class MalformedEvent(InvalidInput):
    """An event that is not a valid tokenwarden CloudEvent; the message says why."""
