"""Is a service up to date? The fingerprint of what it sends and of the exports it imports, vs its stack.

The cloud is the source of truth: each deployed stack carries the fingerprint of what phasedoit deployed,
so a run with no local state (a fresh CI checkout) skips what is already there. Local state (doit's values)
only adds the detail to say *why* a service deploys (and, for a deployer that cannot tag its stack, what
it deployed last).
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import stat
import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doit.task import UptodateCalculator

from phasedoit import packaging
from phasedoit.deployers import Watched
from phasedoit.errors import PhasedoitError
from phasedoit.planning import ServicePlan
from phasedoit.stack import DEPLOYED, ROLLED_BACK, RemoteStack, Target, Verdict, digest

# Never part of what a service deploys (packaging leaves them out of zips too).
DEFAULT_EXCLUDE = packaging.DEFAULT_EXCLUDE


def file_hashes(folder: Path, exclude: Iterable[str], *, root: Path | None = None) -> dict[str, str]:
    """Content hash of every file under `folder` by its relative path: timestamps never matter.

    A symlink is followed to a file or folder inside `root` (the app folder; `folder` itself by default),
    each folder once. Anything else that is not a regular file or folder (a broken symlink, a symlink loop
    or one leading outside `root`, a socket, a FIFO, a device, a file it cannot read) is left out, with a
    warning naming it: it is never opened, so it cannot hang the run.
    """
    patterns = tuple(exclude)
    inside = os.path.realpath(root or folder)
    outside = "the app folder" if root else _shown(folder, root)
    walked = {os.path.realpath(folder)}  # folders walked; a symlink to one of them is a loop
    hashes: dict[str, str] = {}
    pending = [(str(folder), Path(), os.path.realpath(folder))]
    while pending:
        top, base, real_top = pending.pop()
        subfolders = []
        for entry in sorted(_entries(top, root), key=lambda e: e.name):
            relative = base / entry.name
            if _excluded(relative, patterns):
                continue
            kind, real = _kind(entry, os.path.join(real_top, entry.name), inside, outside)
            if kind == "file":
                found = _content_hash(entry.path, root)
                if found is not None:
                    hashes[relative.as_posix()] = found
            elif kind == "folder" and entry.is_symlink() and real in walked:
                _warn(entry.path, root, "a symlink loop (to a folder already included)")
            elif kind == "folder":
                walked.add(real)
                subfolders.append((entry.path, relative, real))
            else:
                _warn(entry.path, root, kind)
        pending.extend(reversed(subfolders))  # depth first, in name order, as os.walk
    return hashes


def _entries(folder: str, root: Path | None) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError as e:
        _warn(folder, root, f"cannot list it ({e.strerror})")
        return []


def _kind(entry: os.DirEntry[str], real: str, inside: str, outside: str) -> tuple[str, str]:
    """`file` or `folder` and its real path (`real` unless it is a symlink), or why it is left out."""
    try:
        if entry.is_symlink():
            mode = os.stat(entry.path).st_mode
            real = os.path.realpath(entry.path)
            if real != inside and not real.startswith(os.path.join(inside, "")):
                return f"a symlink that leads outside {outside}", real
        else:
            mode = entry.stat(follow_symlinks=False).st_mode
    except OSError as e:
        return _unreadable(e), real
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file or folder"), real


def _unreadable(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "a symlink loop"
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return "a broken symlink"
    return f"cannot read it ({error.strerror})"


_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "folder",
    stat.S_IFSOCK: "a socket",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def _content_hash(path: str, root: Path | None) -> str | None:
    """The SHA-256 of a regular file; None (and a warning) if it cannot be read or is no longer one."""
    digest = hashlib.sha256()
    try:
        # non-blocking: a FIFO put in the file's place since it was listed does not hang the open
        fd = os.open(path, _OPEN_FLAGS)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                _warn(path, root, "no longer a regular file")
                return None
            while chunk := os.read(fd, 1 << 20):
                digest.update(chunk)
        finally:
            os.close(fd)
    except OSError as e:
        _warn(path, root, f"cannot read it ({e.strerror})")
        return None
    return digest.hexdigest()


_warned: set[str] = set()  # once a run: every check of a service lists its folder again


def _warn(path: str, root: Path | None, why: str) -> None:
    line = f"warning: {_shown(Path(path), root)}: {why}, left out of the fingerprint"
    if line not in _warned:
        _warned.add(line)
        print(line, file=sys.stderr)


def _shown(path: Path, root: Path | None) -> str:
    """`path` relative to the app folder (or the working folder, doit's: the app's), as the user knows it."""
    base = root or Path.cwd()
    try:
        return path.absolute().relative_to(base.absolute()).as_posix()
    except ValueError:
        return str(path)


def _excluded(relative: Path, patterns: tuple[str, ...]) -> bool:
    """A pattern matches a file or folder by its name (`node_modules`) or its path (`src/generated`)."""
    return any(
        fnmatch.fnmatchcase(text, p) for text in (relative.name, relative.as_posix()) for p in patterns
    )


def watched_hashes(watched: Iterable[Watched]) -> dict[str, str]:
    """Content hashes of watched folders' files (or of a watched file), by the path shown to the user."""
    hashes: dict[str, str] = {}
    for entry in watched:
        path = Path(entry.folder)
        if path.is_file():
            hashes[entry.prefix] = hashlib.sha256(path.read_bytes()).hexdigest()
            continue
        found = file_hashes(
            path, DEFAULT_EXCLUDE + entry.exclude, root=Path(entry.root) if entry.root else None
        )
        hashes |= {f"{entry.prefix}{name}": value for name, value in found.items()}
    return hashes


@dataclass(frozen=True)
class Fingerprint:
    files: dict[str, str]  # what is sent, by the file it comes from
    settings: str  # digest of the rest of what is sent
    upstream: dict[str, str]  # imported export -> hash of its value

    @property
    def value(self) -> str:
        return digest([self.files, self.settings, self.upstream])[:40]

    def saved(self) -> dict[str, Any]:
        return {
            "fingerprint": self.value,
            "files": self.files,
            "settings": self.settings,
            "upstream": self.upstream,
        }


def reasons(current: Fingerprint, last: Mapping[str, Any], remote: RemoteStack | None) -> list[str]:
    """Why the service must deploy; none when its stack carries the current fingerprint."""
    if remote is None:
        return ["stack missing" if last.get("fingerprint") else "never deployed"]
    if remote.status in ROLLED_BACK:
        return [] if remote.fingerprint == current.value else ["last update rolled back"]
    if remote.status not in DEPLOYED:
        return [f"stack is {remote.status}"]
    if remote.fingerprint == current.value:
        return []
    if not last.get("fingerprint"):
        return [
            "stack not deployed by phasedoit" if not remote.fingerprint else "changed since its last deploy"
        ]
    found = _changed_files(last.get("files", {}), current.files)
    if last.get("settings") != current.settings:
        found.append("changed settings")
    before = last.get("upstream", {})
    changed = sorted(k for k in {*current.upstream, *before} if current.upstream.get(k) != before.get(k))
    if changed:
        found.append(f"changed upstream: {', '.join(changed)}")
    return found or ["stack changed outside phasedoit"]


def _changed_files(before: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    changed = sorted(path for path in {*before, *now} if before.get(path) != now.get(path))
    if not changed:
        return []
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    return [f"changed files: {shown}"]


@dataclass(frozen=True)
class Listing:
    stacks: dict[str, RemoteStack]  # the app's stacks that exist
    exports: dict[str, str]  # their exports: name -> value hash


# One read of the app's stacks per run: the uptodate checks (one at a time, in doit's main process) and the
# export-in-use check (an action, which runs before any of them) share it; with `-P process` that action's
# worker reads again.
_listings: dict[tuple[str, Target], Listing | PhasedoitError] = {}


def remote_listing(run: str, target: Target, stacks: Collection[str]) -> Listing:
    """The app's `stacks` on `target`, read once in the run `run`; a failed read fails every check."""
    key = (run, target)
    if key not in _listings:
        from phasedoit import cloudformation
        from phasedoit.actions import resolve_target

        try:
            found = cloudformation.read_stacks(cloudformation.client(resolve_target(target)), stacks)
            exports = {name: value for stack in found.values() for name, value in stack.exports.items()}
            _listings[key] = Listing(found, exports)
        except PhasedoitError as e:
            _listings[key] = e  # one failed listing a run is enough
    listing = _listings[key]
    if isinstance(listing, PhasedoitError):
        raise listing
    return listing


class UpToDate(UptodateCalculator):  # type: ignore[misc]
    """doit's uptodate check of a deploy task; leaves its `Verdict` in `task.meta` for the action."""

    def __init__(
        self,
        plan: ServicePlan,
        target: Target,
        run: str,
        force: bool,
        on_stack: bool,
        *,
        stacks: Collection[str] = (),
    ) -> None:
        self.plan, self.target, self.run, self.force, self.on_stack = plan, target, run, force, on_stack
        self.stacks = stacks or (plan.stack,)  # every stack of the app: they are read together, once

    def setup(self, dep_manager: Any, tasks_dict: Any) -> None:
        self.dep_manager = dep_manager

    def __call__(self, task: Any, values: Mapping[str, Any]) -> bool:
        verdict: Verdict = task.meta["phasedoit"]
        if self.plan.skip:
            verdict.skipped = self.plan.skip
            return True
        try:
            listing = remote_listing(self.run, self.target, self.stacks)
        except PhasedoitError as e:
            # the deploy fails with this error as one line: nothing deploys blind, nothing loses its tag
            verdict.error, verdict.reasons = str(e), [f"cannot list its stack: {e}"]
            return False
        try:
            files = {**self.plan.files, **watched_hashes(self.plan.watched)}
        except OSError as e:
            verdict.error = f"cannot read {e.filename}: {e.strerror}"
            verdict.reasons = [verdict.error]
            return False
        current = Fingerprint(files, self.plan.settings, self._upstream(listing.exports))
        remote = listing.stacks.get(self.plan.stack)
        if remote is not None and not self.on_stack:
            remote = RemoteStack(remote.status, values.get("fingerprint"), remote.exports)
        if self.force:
            why = ["forced"]
        elif self.plan.always:
            why = [self.plan.always]
        else:
            why = reasons(current, values, remote)
        verdict.fingerprint, verdict.reasons = current.value, why
        task.value_savers.append(current.saved)
        return not why

    def _upstream(self, exports: Mapping[str, str]) -> dict[str, str]:
        """Each imported export's value: as its exporter's deploy in this run left it, else as listed."""
        upstream: dict[str, str] = {}
        for export, exporter in self.plan.imports:
            fresh = self.dep_manager.get_values(f"deploy:{exporter}")
            if fresh.get("run") == self.run and export in fresh.get("exports", {}):
                upstream[export] = fresh["exports"][export]
            elif export in exports:
                upstream[export] = exports[export]
        return upstream
