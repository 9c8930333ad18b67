"""The paths a manifest names, checked before anything is read or written through them.

A memory folder is data someone else may have written. Every path its manifest names must
be a plain relative path (no `..`, `.` or empty parts, no backslashes or control characters,
not absolute, no drive) inside the committed state folder, reached without passing through
a symlink, and name a regular file: never a FIFO, a device, a socket or a folder. A file
that is missing passes here; readers and `verify` report it as missing.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Collection
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

from ..errors import CorruptMemoryError

STATE_NAME = re.compile(r"state-[0-9]{6,}")
"""The name of a committed state folder: `state-000007`."""
_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)  # opening a FIFO must not wait for a writer
    | getattr(os, "O_BINARY", 0)
)
_RESTORE = "restore the memory from a backup or ingest its documents into a new memory"


def check_manifest_paths(root: Path, state: str | None, files: Collection[str]) -> None:
    """Refuse, with `CorruptMemoryError`, a manifest whose `state` or `files` keys name
    anything but the memory's own regular files inside its state folder."""
    if state is None:
        if files:
            raise CorruptMemoryError(
                f"{root}: the manifest lists {len(files)} file(s) but no state; {_RESTORE}"
            )
        return
    if not STATE_NAME.fullmatch(state):
        raise CorruptMemoryError(
            f"{root}: the manifest's state {state!r} is not a state folder name "
            f"(state-NNNNNN); {_RESTORE}"
        )
    check_entry(root, state, folder=True)
    for relative in files:
        parts = plain_parts(root, relative)
        if parts[0] != state or len(parts) < 2:
            raise CorruptMemoryError(
                f"{root}: the manifest's file {relative!r} is outside its state folder "
                f"{state!r}; {_RESTORE}"
            )
        check_entry(root, relative)


def plain_parts(root: Path, relative: str) -> list[str]:
    """The parts of `relative`, refused unless it is a plain relative path."""
    parts = relative.split("/")
    absolute = PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).anchor
    odd = {"", ".", ".."} & set(parts) or "\\" in relative or not relative.isprintable()
    if absolute or odd:
        raise CorruptMemoryError(
            f"{root}: the manifest names the path {relative!r}, which is not a plain path "
            f"inside the memory; {_RESTORE}"
        )
    return parts


def check_entry(root: Path, relative: str, *, folder: bool = False) -> None:
    """Refuse `root/relative` if a symlink lies on its way or it exists as something else
    than a regular file (a real folder, with `folder`); a missing entry passes."""
    parts = plain_parts(root, relative)
    path = root
    for index, part in enumerate(parts):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        except OSError as error:
            raise CorruptMemoryError(f"cannot inspect {path}: {error}; {_RESTORE}") from None
        is_file = index == len(parts) - 1 and not folder
        kind = "regular file" if is_file else "folder"
        if stat.S_ISLNK(mode) or not (stat.S_ISREG if is_file else stat.S_ISDIR)(mode):
            found = "a symlink" if stat.S_ISLNK(mode) else f"not a {kind}"
            raise CorruptMemoryError(
                f"{path} is {found}; a memory holds only its own {kind}s: {_RESTORE}"
            )


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading, refused (`CorruptMemoryError`) if it is a symlink or not a
    regular file: the open neither follows a symlink nor waits on a FIFO."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        if os.path.islink(path):
            raise CorruptMemoryError(f"{path} is a symlink; {_RESTORE}") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CorruptMemoryError(f"{path} is not a regular file; {_RESTORE}")
    return os.fdopen(fd, "rb")


def read_regular(path: Path) -> bytes:
    """The bytes of the regular file `path` (see `open_regular`)."""
    with open_regular(path) as handle:
        return handle.read()
