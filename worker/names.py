"""The rules Apple's portal applies to MDM server names and to the people who download tokens.

Pure functions: no I/O. Names keep the spelling the user typed for display and compare by their
case-folded form, as ASM/ABM does.
"""

from __future__ import annotations

import unicodedata

from worker.errors import InvalidInput, InvalidServerName

#: Names ASM/ABM keeps for itself (compared case-insensitively).
RESERVED_SERVER_NAMES = frozenset({"unassigned", "reassigned"})

#: Longest server name accepted, in characters. The portal's own field is shorter; anything
#: beyond this is a pasted file or a mistake, not a name.
MAX_SERVER_NAME_LENGTH = 128

#: Longest organization label and Managed Apple Account id accepted, in characters.
MAX_LABEL_LENGTH = 256


#: Letters and symbols that print as blank space although Unicode does not call them spaces
#: (the Hangul fillers, the blank Braille pattern): a name of them looks empty, and one with
#: them inside looks like a name it is not.
INVISIBLE_FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")

#: Categories that print nothing on their own: spaces, and marks that only modify a letter.
_BLANK_CATEGORIES = {"Zs", "Mn", "Me"}


def _has_invisible_fillers(text: str) -> bool:
    return any(ch in INVISIBLE_FILLERS for ch in text)


def _has_nothing_visible(text: str) -> bool:
    return all(unicodedata.category(ch) in _BLANK_CATEGORIES for ch in text)


def _has_control_characters(text: str) -> bool:
    # Cs: lone surrogates (undecodable bytes on the command line) are not text either.
    return any(unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Zl", "Zp"} for ch in text)


def clean_server_name(raw: str) -> str:
    """Return the display form of a server name, or raise InvalidServerName saying why."""
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise InvalidServerName("server name is empty; give the name shown in ASM/ABM")
    if len(name) > MAX_SERVER_NAME_LENGTH:
        raise InvalidServerName(
            f"server name is {len(name)} characters long; "
            f"use at most {MAX_SERVER_NAME_LENGTH}, as in ASM/ABM"
        )
    if _has_control_characters(name):
        raise InvalidServerName(
            "server name contains control characters; type it as shown in ASM/ABM"
        )
    if _has_invisible_fillers(name) or _has_nothing_visible(name):
        raise InvalidServerName(
            "server name contains invisible filler characters (such as U+3164); "
            "type it as shown in ASM/ABM"
        )
    if name_key(name) in RESERVED_SERVER_NAMES:
        raise InvalidServerName(
            f"server name {name!r} is reserved by Apple (Unassigned and Reassigned, in any case); "
            "choose another name"
        )
    return name


def name_key(name: str) -> str:
    """The form two names are compared in: compatibility-normalized (NFKC, so a full-width
    UNASSIGNED is UNASSIGNED too), trimmed, case-folded."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).strip().casefold())


def clean_label(raw: str | None, *, what: str) -> str:
    """Trim an organization or user label; refuse control characters and absurd lengths."""
    if raw is None:
        return ""
    label = unicodedata.normalize("NFC", raw).strip()
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidInput(
            f"{what} is {len(label)} characters long; use at most {MAX_LABEL_LENGTH}"
        )
    if _has_control_characters(label):
        raise InvalidInput(f"{what} contains control characters; type it again")
    if label and (_has_invisible_fillers(label) or _has_nothing_visible(label)):
        raise InvalidInput(
            f"{what} contains invisible filler characters (such as U+3164); type it again"
        )
    return label


def clean_user(raw: str) -> str:
    """A Managed Apple Account id as typed (trimmed); it must not be empty."""
    user = clean_label(raw, what="user")
    if not user:
        raise InvalidInput(
            "user is empty; give the Managed Apple Account that downloaded the token"
        )
    return user


def user_key(user: str) -> str:
    """Managed Apple Account ids compare case-insensitively."""
    return name_key(user)
