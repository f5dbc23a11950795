"""The local endpoint's folder: private to its owner (0700, files 0600), written atomically, set aside whole.

Shared by doit's processes and the server process; standard library only.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import stat
from pathlib import Path
from typing import Any

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """The folder, created if need be, and made 0700 even if an older phasedoit made it 0755."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


def open_private(path: Path, flags: int) -> int:
    """A file descriptor of `path`, created 0600; a file an older phasedoit left 0644 is made 0600."""
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    try:
        found = os.fstat(fd).st_mode
        if stat.S_ISREG(found) and stat.S_IMODE(found) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def secure_files(folder: Path) -> None:
    """Make every file of the folder 0600 (state written before the folder was private)."""
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 != FILE_MODE:
            path.chmod(FILE_MODE)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_private(path, json.dumps(data, sort_keys=True).encode())


def write_private(path: Path, content: bytes) -> None:
    """Atomically, 0600: readers see the old file or the new one, never half of one, even after a crash.

    A write that fails (disk full, read-only folder) leaves the old file as it was, removes its temporary
    file and raises the OSError.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)  # the rename itself survives a crash only once the folder is synced


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_aside(path: Path, why: str) -> Path:
    """Rename `path` to a new `<name>.<why>-<UTC time>` beside it, never over an existing file."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(1000):
        suffix = f"-{attempt}" if attempt else ""
        target = path.with_name(f"{path.name}.{why}-{stamp}{suffix}")
        try:
            os.link(path, target)  # fails if the target exists, unlike a rename
        except FileExistsError:
            continue
        path.unlink()
        return target
    raise FileExistsError(f"no free name to set {path} aside")


def write_new_private(path: Path, content: bytes) -> Path:
    """Write `content` to a new file `path` (or a numbered sibling if it exists); returns the path."""
    for attempt in range(1000):
        target = path.with_name(f"{path.name}-{attempt}") if attempt else path
        try:
            fd = open_private(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                target.unlink()
            raise
        return target
    raise FileExistsError(f"no free name for {path}")
