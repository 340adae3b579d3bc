"""A message the SMTP server accepted is delivered, whatever it answers to QUIT afterwards
(a failed attempt would send it again on every retry)."""

from __future__ import annotations

from email.message import EmailMessage

from tests.smtp_inbox import running_inbox
from worker.notify.email import send_email


def test_an_odd_answer_to_quit_after_the_message_was_accepted_is_still_delivered():
    with running_inbox() as inbox:

        async def handle_QUIT(server, session, envelope):
            return "500 not today"

        inbox.handle_QUIT = handle_QUIT
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "tw@x.example", "it@x.example", "hi"
        message.set_content("hello")
        result = send_email(inbox.smtp, message, timeout_s=5)
    assert result.ok, result.error
    assert len(inbox.messages) == 1


def test_a_refused_message_is_a_failed_attempt():
    with running_inbox() as inbox:
        inbox.refuse = 1
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "tw@x.example", "it@x.example", "hi"
        message.set_content("hello")
        result = send_email(inbox.smtp, message, timeout_s=5)
    assert not result.ok and result.status == "451"
