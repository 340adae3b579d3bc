"""The files users hand to the CLI: read regular files only, never more than a limit; write
only a new path or a regular file, replaced whole by a rename."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from worker.errors import InvalidInput


def read_input_file(path: str, what: str, limit: int) -> tuple[bytes, str]:
    """The file's bytes and its name, or a one-line error saying why it cannot be used."""
    file = Path(path)
    try:
        info = os.stat(file)
    except FileNotFoundError:
        raise InvalidInput(f"{what} {file} does not exist") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {file} ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InvalidInput(f"{what} {file} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInput(f"{what} {file} is not a regular file; save it to a file first")
    if info.st_size > limit:
        raise InvalidInput(f"{what} {file} is {info.st_size} bytes; at most {limit} are read")
    try:
        with open(file, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {file} ({exc.strerror})") from None
    if len(data) > limit:  # it grew while we looked
        raise InvalidInput(f"{what} {file} is larger than {limit} bytes")
    return data, str(file)


#: Mode of a new output file (certificates are public); a replaced file keeps its own.
NEW_FILE_MODE = 0o644

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)


class OutputFile:
    """A file a command writes. Checked when made, so the command can refuse before it changes
    anything; written to a temporary file beside it and renamed over it, so a reader never
    sees half a file. Anything but a regular file or a new path is refused: run as root, a
    rename over /dev/null or a symbolic link would replace the device or the link."""

    def __init__(self, path: str, what: str):
        self.path = Path(path)
        self.what = what
        self._mode = _replaceable_mode(self.path, what)
        try:
            descriptor, name = tempfile.mkstemp(
                dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
            )
        except OSError as exc:
            raise InvalidInput(f"cannot write {what} {self.path} ({exc.strerror})") from None
        self._handle = os.fdopen(descriptor, "wb")
        self._temporary = Path(name)

    def write(self, data: bytes) -> None:
        try:
            with self._handle:
                self._handle.write(data)
                self._handle.flush()
                os.fsync(self._handle.fileno())
            os.chmod(self._temporary, _replaceable_mode(self.path, self.what) or self._mode)
            os.replace(self._temporary, self.path)
        except OSError as exc:
            raise InvalidInput(f"cannot write {self.what} {self.path} ({exc.strerror})") from None
        finally:
            self.discard()

    def discard(self) -> None:
        self._handle.close()
        self._temporary.unlink(missing_ok=True)


def _replaceable_mode(path: Path, what: str) -> int:
    """The mode to give the written file, or a one-line refusal when `path` is there and is
    not a regular file."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return NEW_FILE_MODE
    except OSError as exc:
        raise InvalidInput(f"cannot write {what} {path} ({exc.strerror})") from None
    for is_kind, kind in _KINDS:
        if is_kind(info.st_mode):
            raise InvalidInput(
                f"{path} is {kind}; {what} is written only to a regular file or a new path"
            )
    return stat.S_IMODE(info.st_mode)
