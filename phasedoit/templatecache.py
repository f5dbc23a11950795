"""Parsed templates kept between runs, as hashcache keeps file hashes: a template whose size, times and
inode are as they were is not parsed again. Planning reads every template on every run (`doit list`, a
no-op deploy); parsing YAML is most of it (0.3 s for 1,000 templates), reading this cache a tenth of it.

Never served stale: an entry is used only if the file's size, mtime, ctime and inode are what they were,
and it is kept only if the file was last changed (its ctime) some seconds before it was read: an edit in
the same tick as the reading, on a coarse file system clock, cannot hide behind an unchanged stamp.
Only what a file says is kept: a template is cached as parsed, before any parameter is resolved (never a
`{env: NAME}` value). A cache that cannot be read, or one written by another version of the readers, is
ignored; a failed write leaves the run as it was.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from phasedoit import hashcache, jsonfile, templates, yamlfile

FILE_NAME = "templates.json"
RACY_SECONDS = 2.0
# How templates are read: the cache of another version of these readers (or of PyYAML, or of Python's
# json) is not this one's.
READERS = (yamlfile, jsonfile, templates)
Stamp = list[int]  # [mtime_ns, ctime_ns, size, inode]


def reader_version() -> str | None:
    """A digest of the code that turns a file into a template; None if it cannot be read (no cache)."""
    parts = [f"{yaml.__version__} {yaml.__with_libyaml__} {sys.version}".encode()]
    try:
        parts += [Path(module.__file__ or "").read_bytes() for module in READERS]
    except OSError:
        return None
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


class TemplateCache:
    def __init__(self, path: Path | None, version: str | None, racy_seconds: float = RACY_SECONDS) -> None:
        self.path = path if version is not None else None
        self.version, self.racy_seconds = version, racy_seconds
        self.known: dict[str, list[Any]] = {}  # path -> [*stamp, the template as JSON]
        self.used: dict[str, list[Any]] = {}  # what this run parsed or found, kept if not racy
        self.stale: set[str] = set()  # read from the cache file, but changed since
        if self.path is not None:
            with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
                data = json.loads(self.path.read_text())
                if data.get("version") == version and isinstance(data.get("files"), dict):
                    self.known = data["files"]
        self.read_from_file = dict(self.known)

    def load(self, path: Path, parse: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The template at `path`: from the cache if the file is as it was, else `parse()` (and kept)."""
        try:
            status = path.stat()
        except OSError:
            return parse()  # it says why, in one line
        stamp = hashcache.stamp(status)
        key = str(path)
        found = _template(self.known.get(key), stamp)
        if found is not None:
            self.used[key] = self.known[key]
            return found
        if key in self.known:
            self.stale.add(key)
            self.used.pop(key, None)  # found earlier in this process, changed since
        template = parse()
        # any change to a file sets its ctime to the time of the change: one made while it was read (or
        # after) has a ctime in the same tick as that one only if that one was just now (the mtime too:
        # Windows's st_ctime is when the file was created)
        if time.time() - max(status.st_mtime, status.st_ctime) > self.racy_seconds:
            text = _exact_json(template)
            if text is not None:
                self.known[key] = self.used[key] = [*stamp, text]
        return template

    def save(self) -> None:
        """Write what this run used, with what the file held that it did not look at (a failed plan stops
        half-way) if that file is still there; nothing when no entry changed (a no-op run writes nothing)."""
        if self.path is None or not self.used:
            return
        unused = {k: v for k, v in self.read_from_file.items() if k not in self.used and k not in self.stale}
        files = self.used | {k: v for k, v in unused.items() if os.path.isfile(k)}
        if files == self.read_from_file:
            return
        hashcache.save_cache_file(self.path, {"version": self.version, "files": dict(sorted(files.items()))})


def _template(entry: Any, stamp: Stamp) -> dict[str, Any] | None:
    """The entry's template if it is one and its stamp is `stamp`; None for anything else (a miss)."""
    if not isinstance(entry, list) or len(entry) != 5 or entry[:4] != stamp or not isinstance(entry[4], str):
        return None
    with contextlib.suppress(ValueError):
        template = json.loads(entry[4])
        if isinstance(template, dict) and isinstance(template.get("Resources"), dict):
            return template
    return None


def _exact_json(template: dict[str, Any]) -> str | None:
    """`template` as JSON text, if reading that text gives it back exactly (a YAML key `80:` would not)."""
    try:
        text = json.dumps(template, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return text if json.loads(text) == template else None


_caches: dict[Path, TemplateCache] = {}


def for_state(state_dir: Path) -> TemplateCache:
    """The cache of an app's state folder, loaded once per process and saved when the process ends."""
    if state_dir not in _caches:
        cache = _caches[state_dir] = TemplateCache(state_dir / FILE_NAME, reader_version())
        atexit.register(cache.save)
    return _caches[state_dir]
