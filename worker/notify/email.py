"""E-mail for the people who must act: short, plain, which server, why, by when, and the exact
steps in the portal; for a key change, the certificate to upload is attached."""

from __future__ import annotations

import smtplib
import time
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from events import catalog
from worker.config import SmtpSettings
from worker.notify.policy_email import policy_change_text
from worker.notify.webhook import AttemptResult

_WHY = {
    catalog.PASSWORD_CHANGED: "the password of {user}, who downloaded it, changed",
    catalog.USER_LEFT: "{user}, who downloaded it, left the organization",
    catalog.KEY_REGENERATED: "a new key was made for the server",
    catalog.TOKEN_GENERATED: "a new token was downloaded for the server in the portal",
    catalog.REJECTED_BY_APPLE: "Apple's device enrollment service refused the token",
    # The scheduler's own: a replacement opened by the first warning (before rotation
    # policies), and expiry.
    catalog.EXPIRY_APPROACHING: "it nears its one-year limit",
    catalog.EXPIRED: "it expired: devices can no longer enroll",
}

SIGNATURE = "-- tokenwarden\n"

#: What an e-mail to an owner adds: why they get it.
OWNER_NOTE = (
    "You get this because you are an owner of this server in tokenwarden (its rotation "
    "policy names you)."
)

_BY_WHEN = {
    "immediate": "now: the installed token no longer works, and devices cannot enroll",
    "soon": "soon: the installed token is tied to the old key",
}


def compose(
    event: dict[str, Any], sender: str, recipient: str, *, owner: bool = False
) -> EmailMessage:
    """The e-mail for an outgoing event; `owner`: the recipient is one of the server's owners
    (notify/owners.py), and the message says so."""
    data = event.get("data") or {}
    server = data.get("server", "?")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Message-ID"] = f"<{event['id']}@tokenwarden>"
    subject, text = _subject_and_text(event["type"], data)
    message["Subject"] = subject
    message.set_content(_as_owner(text) if owner else text)
    if event["type"] == catalog.REPLACEMENT_REQUIRED and data.get("certificate"):
        message.add_attachment(
            data["certificate"].encode(),
            maintype="application",
            subtype="x-pem-file",
            filename=f"{_file_stem(server)}.pem",
        )
    return message


def _subject_and_text(event_type: str, data: dict[str, Any]) -> tuple[str, str]:
    server = data.get("server", "?")
    if event_type == catalog.REPLACEMENT_REQUIRED:
        subject = f"Replace the server token of {server} ({data.get('urgency')})"
        return subject, _replacement_text(data)
    if event_type == catalog.REPLACED:
        return f"Server token of {server} replaced", (
            f'A new server token was installed for the MDM server "{server}"; it expires '
            f"{data.get('new_expires_at')}. Nothing more to do.\n\n{SIGNATURE}"
        )
    if event_type == catalog.POLICY_CHANGED:
        return policy_change_text(data)
    if event_type in _APPLE_NOTICES:
        subject, text = _APPLE_NOTICES[event_type]
        return subject.format(server=server), text.format(server=server, **_apple_fields(data))
    if event_type in _SOURCE_NOTICES:
        subject, text = _SOURCE_NOTICES[event_type]
        fields = {name: str(data.get(name) or "?") for name in _SOURCE_FIELDS}
        return subject.format(**fields), text.format(**fields)
    return f"tokenwarden: {event_type} for {server}", (
        f'{event_type} for the MDM server "{server}".\n\n{SIGNATURE}'
    )


def _as_owner(text: str) -> str:
    """The text with, above the signature, why an owner gets it."""
    return f"{text.removesuffix(SIGNATURE).rstrip()}\n\n{OWNER_NOTE}\n\n{SIGNATURE}"


_APPLE_NOTICES = {
    catalog.TOKEN_REJECTED: (
        "Apple rejected the server token of {server}: replace it now",
        'Apple\'s device enrollment service refused the server token of the MDM server "{server}"'
        "{where} ({apple_code}), first at {first_seen_at}. Devices cannot enroll until a new "
        "token is installed.\n\nWhat to do:\n"
        "1. Sign in to Apple School Manager or Apple Business Manager.\n"
        '2. Open the MDM server "{server}" and download a new server token.\n'
        '3. Install it: tokenwarden tokens install "{server}" <the downloaded file>\n'
        "\n-- tokenwarden\n",
    ),
    catalog.TERMS_NOT_ACCEPTED: (
        "New Apple terms wait to be accepted for {server}",
        'Apple\'s device enrollment service refuses to work for the MDM server "{server}"{where} '
        "until new terms and conditions are accepted (since {since}).\n\n"
        "What to do: someone with the Administrator role signs in to Apple School Manager or "
        "Apple Business Manager and accepts the new terms there. A new token does not help; "
        "the installed token works again once the terms are accepted.\n\n-- tokenwarden\n",
    ),
    catalog.TERMS_ACCEPTED: (
        "Apple terms accepted for {server}",
        'Apple\'s device enrollment service answers again for the MDM server "{server}"{where}: '
        "the terms waiting since {since} were accepted. Nothing more to do.\n\n-- tokenwarden\n",
    ),
}


_SOURCE_FIELDS = ("source", "kind", "error", "failing_since", "last_success")

_SOURCE_NOTICES = {
    catalog.SOURCE_FAILING: (
        "tokenwarden cannot ask the directory {source}",
        'tokenwarden cannot learn from the directory source "{source}" ({kind}) since '
        "{failing_since}: {error}\n\nUntil this is fixed, a password change or a departure of "
        "someone who downloaded a token is noticed only if the directory pushes it. The last "
        "round that worked ended {last_success}.\n\nWhat to do: fix the credential or the "
        "directory's permissions (README: Directory checks), then run\n"
        "  tokenwarden sources check {source}\n\n-- tokenwarden\n",
    ),
    catalog.SOURCE_RECOVERED: (
        "tokenwarden asks the directory {source} again",
        'The directory source "{source}" ({kind}), failing since {failing_since}, answered '
        "again. Nothing more to do.\n\n-- tokenwarden\n",
    ),
}


def _apple_fields(data: dict[str, Any]) -> dict[str, str]:
    return {
        "where": f" ({data['org']})" if data.get("org") else "",
        "apple_code": str(data.get("apple_code") or "refused"),
        "first_seen_at": str(data.get("first_seen_at") or "?"),
        "since": str(data.get("since") or "?"),
    }


def _replacement_text(data: dict[str, Any]) -> str:
    server = data.get("server", "?")
    where = f" ({data['org']})" if data.get("org") else ""
    reasons = [_why(r, data) for r in data.get("reasons") or []]
    if data.get("omitted_events"):
        reasons.append(f"{data['omitted_events']} more causes (not listed)")
    steps = [
        "Sign in to Apple School Manager (school.apple.com) or Apple Business Manager "
        "(business.apple.com) as an Administrator, Site Manager or Device Enrollment Manager.",
        f'Open Preferences, then Your MDM Servers, and select "{server}".',
    ]
    if data.get("certificate"):
        steps.append(_upload_step(data))
    steps += [
        "Choose Download Token and confirm.",
        f'Install it: tokenwarden tokens install "{server}" <downloaded file> '
        "--downloaded-by <your Managed Apple Account>",
    ]
    lines = [
        f'The server token of the MDM server "{server}"{where} must be replaced.',
        "",
        "Why: " + "; ".join(reasons) + ".",
        f"By when: {_BY_WHEN.get(data.get('urgency'), 'before ' + str(data.get('expires_at')))}.",
        f"It was downloaded by {data.get('downloaded_by')} on {data.get('downloaded_at')} and "
        f"expires {data.get('expires_at')}.",
        "",
        "Steps:",
        *[f"{number}. {step}" for number, step in enumerate(steps, start=1)],
        "",
        "-- tokenwarden",
    ]
    return "\n".join(lines) + "\n"


def _upload_step(data: dict[str, Any]) -> str:
    upload = (
        "upload the attached public key certificate "
        f"({_file_stem(data.get('server', '?'))}.pem), then save"
    )
    if (data.get("renewal") or {}).get("new_key_staged"):
        return (
            f"Before downloading anything, choose Edit and {upload}: this server's rotation "
            "policy gives it a new key pair at each renewal, and a token downloaded before the "
            "upload would not work."
        )
    return f"Choose Edit and {upload}."


def _why(reason: dict[str, Any], data: dict[str, Any]) -> str:
    """One reason in a sentence, with when: a reason may count many causes of its kind."""
    kind = reason.get("type", "?")
    if kind == catalog.SCHEDULED_RENEWAL:
        return _renewal_why(reason, data)
    why = _WHY.get(kind, kind).format(user=data.get("downloaded_by"))
    count = reason.get("count", 1)
    first, last = reason.get("time"), (reason.get("last") or {}).get("time")
    if count == 1 or last in (None, first):
        return f"{why} ({first})" if count == 1 else f"{why}, {count} times ({first})"
    return f"{why}, {count} times (first {first}, last {last})"


def _renewal_why(reason: dict[str, Any], data: dict[str, Any]) -> str:
    """A scheduled renewal: how long before expiry the policy renews (the event's `renewal`,
    else as far as its due time is from the expiry)."""
    expires = str(data.get("expires_at") or "")
    days = (data.get("renewal") or {}).get("renew_before_days")
    if days is None:
        try:
            due = datetime.fromisoformat(str(reason.get("time")))
            days = (datetime.fromisoformat(expires) - due).days
        except (TypeError, ValueError):  # not times as tokenwarden writes them
            days = "some"
    return f"its rotation policy renews it {days} days before it expires (on {expires[:10] or '?'})"


def _file_stem(server: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in server) or "server"


def send_email(smtp: SmtpSettings, message: EmailMessage, timeout_s: float) -> AttemptResult:
    started = time.perf_counter()
    try:
        connection = smtplib.SMTP(smtp.host, smtp.port, timeout=timeout_s)
        try:
            if smtp.starttls:
                connection.starttls()
            if smtp.username and smtp.password:
                connection.login(smtp.username, smtp.password)
            connection.send_message(message)
        finally:
            _close(connection)
    except smtplib.SMTPResponseException as exc:
        return AttemptResult(
            False, str(exc.smtp_code), f"SMTP refused: {exc.smtp_code}", _since(started)
        )
    except (OSError, smtplib.SMTPException) as exc:
        return AttemptResult(
            False, "error", f"{type(exc).__name__}: {str(exc)[:200]}", _since(started)
        )
    return AttemptResult(True, "250", "", _since(started))


def _close(connection: smtplib.SMTP) -> None:
    """QUIT, and close whatever it answers: once the message is accepted, a server that
    answers QUIT oddly must not make it a failed attempt (it would be sent again)."""
    try:
        connection.quit()
    except (OSError, smtplib.SMTPException):
        connection.close()


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
