"""Where the master keys come from: TOKENWARDEN_MASTER_KEY, or a key file made on first use."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import structlog

from worker.config import Settings
from worker.crypto.sealing import Keyring, generate_master_key
from worker.errors import ConfigError

log = structlog.get_logger(__name__)

_FILE_HEADER = (
    "# tokenwarden master keys: the first line seals, the others only open.\n"
    "# Losing this file loses every stored private key and token. Back it up apart from Redis.\n"
)


def load_keyring(settings: Settings, used_key_ids: Callable[[], set[str]] = set) -> Keyring:
    """The configured keyring. `used_key_ids()` names the keys that sealed what is stored: a
    keyring holding none of them is refused rather than used to seal new secrets beside
    secrets it cannot open."""
    if settings.master_key:
        keyring = Keyring.from_text(settings.master_key, where="TOKENWARDEN_MASTER_KEY")
        _check_matches(keyring, used_key_ids(), "TOKENWARDEN_MASTER_KEY")
        return keyring
    path = settings.master_key_file
    if not path.exists():
        used = used_key_ids()
        if used:
            raise ConfigError(
                f"there is no master key file at {path}, but Redis holds secrets sealed under "
                f"master key {', '.join(sorted(used))}; run tokenwarden from the folder whose "
                "var/master.key sealed them, or set TOKENWARDEN_DATA_DIR or "
                "TOKENWARDEN_MASTER_KEY"
            )
        _create_key_file(path, [generate_master_key()])
        log.warning(
            "master_key_created",
            path=str(path),
            advice="set TOKENWARDEN_MASTER_KEY in production and keep it apart from Redis backups",
        )
    keyring = Keyring.from_text(_read_key_file(path), where=str(path))
    _check_matches(keyring, used_key_ids(), str(path))
    return keyring


def _check_matches(keyring: Keyring, used: set[str], where: str) -> None:
    if used and not used & set(keyring.key_ids):
        raise ConfigError(
            f"{where} holds none of the master keys that sealed the stored secrets "
            f"({', '.join(sorted(used))}); configure the key they were sealed with"
        )


def write_key_file(path: Path, keys: list[str]) -> None:
    """Replace the key file atomically (write a new file, then rename over the old one)."""
    temporary = path.with_name(path.name + ".new")
    temporary.unlink(missing_ok=True)
    _create_key_file(temporary, keys)
    os.replace(temporary, path)


def _create_key_file(path: Path, keys: list[str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first; theirs is the one to use
    except OSError as exc:
        raise ConfigError(
            f"cannot create the master key file {path} ({exc.strerror}); make "
            "TOKENWARDEN_DATA_DIR writable or set TOKENWARDEN_MASTER_KEY"
        ) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(_FILE_HEADER + "".join(f"{key}\n" for key in keys))
        handle.flush()
        os.fsync(handle.fileno())


def _read_key_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the master key file {path} ({exc.strerror})") from None
    if mode & 0o077:
        log.warning(
            "master_key_file_readable_by_others", path=str(path), advice=f"chmod 600 {path}"
        )
    return text
