"""Reading the files users hand to the CLI: regular files only, and never more than a limit."""

from __future__ import annotations

import os
import stat
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
