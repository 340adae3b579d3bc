"""A real SMTP server for the tests (aiosmtpd on a free loopback port) and what it received."""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
import time

from aiosmtpd.controller import Controller

from worker.config import SmtpSettings


class Inbox:
    """What the SMTP server accepted; it refuses the next `refuse` messages with a 451."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.refuse = 0
        self.smtp: SmtpSettings | None = None

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            self.refuse -= 1
            return "451 4.3.0 try again later"
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 OK"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    def wait_for(self, count: int, timeout: float = 20.0) -> list[email.message.EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"{len(self.messages)} messages arrived"
            time.sleep(0.02)
        return self.messages


@contextlib.contextmanager
def running_inbox(sender: str = "tokenwarden@school.example"):
    """An SMTP server on a free port; yields its Inbox, whose `smtp` are the settings to reach
    it (no STARTTLS, no login)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    box.smtp = SmtpSettings(host="127.0.0.1", port=port, starttls=False, sender=sender)
    try:
        yield box
    finally:
        controller.stop()
