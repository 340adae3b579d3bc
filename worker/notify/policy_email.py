"""The e-mail for `tokenwarden.server.policy_changed`: a short plain summary of what the
rotation policy layer says now, against what it said before. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from worker.rules import policy

#: Each field of a layer, as the summary names it.
_FIELDS = (
    ("renew_before_days", "renewal"),
    ("rotate_key", "key pair"),
    ("owners", "owners"),
)

#: Where a value not set in the layer comes from, by the layer's scope.
_INHERITED_FROM = {
    policy.SERVER: "its organization's policy, then the global one",
    policy.ORG: "the global policy",
    policy.GLOBAL: "tokenwarden's built-in values (renewal 30 days before expiry, the key kept, "
    "nobody named)",
}


def policy_change_text(data: dict[str, Any]) -> tuple[str, str]:
    """(subject, text) of a policy_changed e-mail."""
    scope = data.get("scope") or policy.GLOBAL
    whose, subject = _whose(scope, data)
    now, before = data.get("policy") or {}, data.get("previous") or {}
    done = "cleared" if data.get("cleared") else "changed"
    lines = [
        f"The rotation policy of {whose} was {done} by {data.get('changed_by') or '?'}.",
        "",
        *[_line(label, name, now, before) for name, label in _FIELDS],
        "",
        f"A value shown as inherited comes from {_INHERITED_FROM.get(scope, '?')}.",
        "",
        "-- tokenwarden",
    ]
    return f"{subject} {done}", "\n".join(lines) + "\n"


def _whose(scope: str, data: dict[str, Any]) -> tuple[str, str]:
    """The layer, in a sentence and in a subject."""
    if scope == policy.SERVER:
        server = data.get("server") or "?"
        where = f" ({data['org']})" if data.get("org") else ""
        return f'the MDM server "{server}"{where}', f"Rotation policy of {server}"
    if scope == policy.ORG:
        org = data.get("org") or "?"
        return (
            f'the organization "{org}" (the default of its servers)',
            f"Rotation policy of organization {org}",
        )
    return "tokenwarden (the default of every server)", "Global rotation policy"


def _line(label: str, name: str, now: dict[str, Any], before: dict[str, Any]) -> str:
    shown, was = _value(name, now.get(name)), _value(name, before.get(name))
    return f"- {label}: {shown} ({'unchanged' if shown == was else 'was: ' + was})"


def _value(name: str, value: Any) -> str:
    if value is None:
        return "inherited"
    if name == "renew_before_days":
        return f"{value} days before expiry"
    if name == "rotate_key":
        return "a new one at each renewal" if value == policy.ROTATE_ALWAYS else "kept"
    return ", ".join(str(v) for v in value) or "nobody"
