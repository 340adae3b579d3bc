"""Log context per message: every line written while a message is handled names it."""

from __future__ import annotations

import dramatiq
import structlog


class LogContext(dramatiq.Middleware):
    """Binds the message id to every log line written while a message is handled."""

    def before_process_message(self, broker, message):
        structlog.contextvars.bind_contextvars(
            message_id=message.message_id, actor=message.actor_name
        )

    def after_process_message(self, broker, message, *, result=None, exception=None):
        structlog.contextvars.unbind_contextvars("message_id", "actor")

    after_skip_message = after_process_message
