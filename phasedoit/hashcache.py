"""Content hashes of code files, kept between runs as git keeps its index: a file whose size, times and
inode are as they were is not read again. Planning hashes every packaged file on every run (`doit list`,
a no-op deploy); without this, 100 MB of code is 0.3 s of hashing each time.

Safe to be wrong only one way: a deploy never uses it (it reads every byte and checks the digest). An entry
is kept only if its file was last modified some seconds before it was hashed, so that an edit made in
the same tick as the hashing (coarse file system clocks) cannot hide behind an unchanged time.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

FILE_NAME = "file-hashes.json"
VERSION = 1
RACY_SECONDS = 2.0


class HashCache:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.known: dict[str, list[int | str]] = {}  # path -> [mtime, ctime, size, inode, sha256]
        self.used: dict[str, list[int | str]] = {}  # what this run hashed or found: the next run's cache
        if path is not None:
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text())
                if data.get("version") == VERSION:
                    self.known = data["files"]

    def sha256(self, path: Path, status: os.stat_result) -> str:
        key = str(path)
        entry = self.known.get(key)
        if entry is None or entry[:4] != stamp(status):
            entry = [*stamp(status), hashlib.sha256(path.read_bytes()).hexdigest()]
            self.known[key] = entry
        if time.time() - status.st_mtime > RACY_SECONDS:
            self.used[key] = entry
        return str(entry[4])

    def save(self) -> None:
        """Write what this run used, if it differs from what was read (a no-op run writes nothing)."""
        if self.path is None or not self.used:
            return
        data = {"version": VERSION, "files": dict(sorted(self.used.items()))}
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.path.read_text()) == data:
                return
        save_cache_file(self.path, data)


def stamp(status: os.stat_result) -> list[int]:
    """What says a file is as it was when a cache read it: its mtime, ctime, size and inode."""
    return [status.st_mtime_ns, status.st_ctime_ns, status.st_size, status.st_ino]


def save_cache_file(path: Path, data: dict[str, Any]) -> None:
    """Write a cache's file whole (a temporary file renamed over it), or leave it as it was: a cache is
    never worth failing a run for."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(exist_ok=True)  # in the app's folder: never made again once the app is gone
        temporary.write_text(json.dumps(data, separators=(",", ":")))
        temporary.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()


_caches: dict[Path, HashCache] = {}


def for_state(state_dir: Path) -> HashCache:
    """The cache of an app's state folder, loaded once per process and saved when the process ends."""
    if state_dir not in _caches:
        cache = _caches[state_dir] = HashCache(state_dir / FILE_NAME)
        atexit.register(cache.save)
    return _caches[state_dir]
