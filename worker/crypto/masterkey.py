"""Where the master keys come from: TOKENWARDEN_MASTER_KEY, or a key file made on first use."""

from __future__ import annotations

import os
import tempfile
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
        # A command started beside this one may have made the file and registered its key
        # since the first look: that file is the one to use, not a reason to refuse.
        if used and not path.exists():
            raise ConfigError(
                f"there is no master key file at {path}, but Redis holds secrets sealed under "
                f"master key {', '.join(sorted(used))}; run tokenwarden from the folder whose "
                "var/master.key sealed them, or set TOKENWARDEN_DATA_DIR or "
                "TOKENWARDEN_MASTER_KEY"
            )
        if not used and _create_key_file(path, [generate_master_key()]):
            log.warning(
                "master_key_created",
                path=str(path),
                advice="set TOKENWARDEN_MASTER_KEY in production and keep it apart from Redis "
                "backups",
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
    """Replace the key file atomically: readers see the old file or the new one, whole."""
    temporary = _write_temporary_key_file(path, keys)
    try:
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _sync_directory(path.parent)


def _create_key_file(path: Path, keys: list[str]) -> bool:
    """Make the key file unless one exists; False when another process made it first (then
    theirs is the one to use). The file is written whole beside `path` and then linked into
    place, which fails if `path` exists: no process ever reads a half-written key file."""
    temporary = _write_temporary_key_file(path, keys)
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    except OSError as exc:
        raise _cannot_create(path, exc) from None
    finally:
        temporary.unlink(missing_ok=True)
    _sync_directory(path.parent)
    return True


def _write_temporary_key_file(path: Path, keys: list[str]) -> Path:
    """A new file (mode 0600) beside `path`, holding `keys`, flushed to disk."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    except OSError as exc:
        raise _cannot_create(path, exc) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(_FILE_HEADER + "".join(f"{key}\n" for key in keys))
        handle.flush()
        os.fsync(handle.fileno())
    return Path(name)


def _sync_directory(directory: Path) -> None:
    """Make a file's new name durable too (a crash must not lose a key file just made)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cannot_create(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot create the master key file {path} ({exc.strerror}); make "
        "TOKENWARDEN_DATA_DIR writable or set TOKENWARDEN_MASTER_KEY"
    )


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
