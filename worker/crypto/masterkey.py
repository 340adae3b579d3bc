"""Where the master keys come from: TOKENWARDEN_MASTER_KEY, or a key file made on first use.

A running process keeps its keyring (`LiveKeyring`) and re-reads it when it meets a value
sealed under a key it does not hold, so `secrets rotate-key` needs no restart anywhere.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from worker.config import Settings
from worker.crypto.sealing import Keyring, MasterKey, generate_master_key
from worker.errors import ConfigError, UnknownMasterKey

log = structlog.get_logger(__name__)

#: Seconds before the keyring is read again for the same unknown key id: threads meeting many
#: values sealed under one missing key share one reload instead of each reading the file.
RELOAD_INTERVAL_S = 5.0

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


class LiveKeyring(Keyring):
    """The keyring of a running process. A sealed value under a key id it does not hold makes
    it load its keys again (from the key file, or the environment it was started with: another
    process may have rotated the key) and retry; only a key still missing after that is an
    error. Reloads are serialized, and at most one per unknown key id per RELOAD_INTERVAL_S."""

    def __init__(
        self,
        settings: Settings,
        load: Callable[[], Keyring],
        *,
        clock: Callable[[], float] = time.monotonic,
        reload_interval_s: float = RELOAD_INTERVAL_S,
    ):
        self._settings = settings
        self._load = load
        self._clock = clock
        self._reload_interval_s = reload_interval_s
        self._lock = threading.Lock()
        self._reloaded_at: dict[str, float] = {}  # unknown key id -> when it caused a reload
        self._adopt(load())

    def reload(self) -> None:
        """Load the keys again now (after this process changed the key file itself)."""
        with self._lock:
            self._adopt(self._load())

    def _key(self, key_id: str) -> MasterKey:
        try:
            return super()._key(key_id)
        except UnknownMasterKey:
            self._reload_for(key_id)
        try:
            return super()._key(key_id)
        except UnknownMasterKey:
            raise UnknownMasterKey(self._missing(key_id), key_id) from None

    def _reload_for(self, key_id: str) -> None:
        with self._lock:
            if key_id in self.key_ids:
                return  # another thread reloaded while this one waited
            now = self._clock()
            last = self._reloaded_at.get(key_id)
            if last is not None and now - last < self._reload_interval_s:
                return
            # Forget old entries, so key ids met over a long run never pile up.
            self._reloaded_at = {
                known: at
                for known, at in self._reloaded_at.items()
                if now - at < self._reload_interval_s
            }
            self._reloaded_at[key_id] = now
            try:
                self._adopt(self._load())
            except ConfigError as exc:
                log.warning("master_keys_reload_failed", wanted_key_id=key_id, error=str(exc))
                return
            log.info("master_keys_reloaded", wanted_key_id=key_id, key_ids=self.key_ids)

    def _missing(self, key_id: str) -> str:
        held = ", ".join(self.key_ids)
        if self._settings.master_key:
            return (
                f"a stored secret was sealed with master key {key_id}, which is not configured "
                f"in this process's TOKENWARDEN_MASTER_KEY (it holds {held}); add that key after "
                "the primary one and restart this process"
            )
        path = self._settings.master_key_file
        return (
            f"a stored secret was sealed with master key {key_id}, which is not configured in "
            f"{path} even after reading it again (it holds {held}); put that key back into the "
            "file after the first line (from a backup of it), or set TOKENWARDEN_DATA_DIR to "
            "the folder whose master.key holds it"
        )


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
