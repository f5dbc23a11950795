"""The record of a run: `.phasedoit/runs/<stage>/<timestamp>-<run>.jsonl`, one JSON event per line.

It is also how the progress of doit's workers reaches its main process, whatever runs them (`-P thread` or
`-P process`, forked or spawned): a worker appends its service's events to the file, and the reporter, in
the main process, follows the file as it grows and draws the board or prints the lines from it. Each event
is one `os.write` of one whole line, shorter than PIPE_BUF, to the file opened with O_APPEND: every such
write lands at the end of the file in one piece, so the lines of concurrent writers never mix, with no
lock, queue or pipe to share. A worker needs only the file's path, which its task's `Verdict` carries.

The reporter creates the file when a run starts (so `doit list` and `doit plan` leave none) and appends
what only the main process sees: the run's services and phases, services up to date or skipped, failures,
services not started, the end. A worker whose record does not exist (doit run with another reporter)
prints its lines on stderr instead. `phasedoit timeline` reads a record afterwards; so can a CI job.
The last KEEP runs of each stage are kept.

Every event has `t` (seconds since the epoch) and `event`; the others have `service` and:
    run          app, stage, run, verb (deploy, remove), schedule (a deploy's: phases, dependencies),
                 phases: [{label, services: [{service, upstreams, after}]}]
    started      phase, verb, reasons
    message      text: a line its deployer said
    resource     logical_id, type, status, reason, timestamp: a CloudFormation stack event
    packaging    text: a packaging step begun
    packaged     text
    finished     action (created, updated, unchanged, deployed, removed, gone), stack, seconds
    skipped      phase, reason (`up to date`, or why it does not deploy)
    failed       message
    not started  reason
    end          seconds
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from phasedoit.errors import PhasedoitError
from phasedoit.runstate import Event, line
from phasedoit.stack import Packaging, Progress

RUNS = "runs"
KEEP = 50
# An appended line stays under PIPE_BUF (4096 bytes on Linux, the least POSIX allows is 512; regular files
# take any size in one piece on Linux and macOS, but that is their choice, not a promise): longer texts
# are cut. The run's first and last events are written while no worker runs, and may be longer.
LINE_LIMIT = 4000


@dataclass(frozen=True)
class Record:
    """Where a run's events go: plain data, pickled to the workers with each task's Verdict."""

    path: str
    app: str
    stage: str
    run: str


def record_path(state_dir: Path, stage: str, run: str, now: float) -> Path:
    """`<state_dir>/runs/<stage>/20260314T101530.042Z-1a2b3c4d.jsonl`: sorted by name is sorted by time
    (to the millisecond: two runs within one second, a deploy then a remove, keep their order)."""
    seconds, milliseconds = divmod(round(now * 1000), 1000)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds))
    return state_dir / RUNS / stage / f"{stamp}.{milliseconds:03d}Z-{run[:8]}.jsonl"


def start(record: Record, first: Event) -> None:
    """Create the record with its first event, and forget all but the last KEEP runs of its stage."""
    path = Path(record.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in sorted(path.parent.glob("*.jsonl"))[: -(KEEP - 1)]:
        old.unlink(missing_ok=True)  # another run may be forgetting it too
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, _encoded({"t": _now(), **first}))
    finally:
        os.close(fd)


def append(path: str, event: Event) -> bool:
    """Append one event in one write; False when the record does not exist or cannot take it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0))
    except OSError:
        return False
    try:
        os.write(fd, _fitted({"t": _now(), **event}))
    except OSError:  # a full disk: the event is said on stderr instead, the deploy goes on
        return False
    finally:
        os.close(fd)
    return True


def _now() -> float:
    return round(time.time(), 3)


def _encoded(event: Event) -> bytes:
    return (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _fitted(event: Event) -> bytes:
    """The event's line, its longest texts cut until it fits LINE_LIMIT."""
    line = _encoded(event)
    while len(line) > LINE_LIMIT:
        key, index, text = max(_texts(event), key=lambda found: len(found[2]), default=("", None, ""))
        if len(text) < 2:
            return _encoded({k: event[k] for k in ("t", "event", "service") if k in event})
        encoded = text.encode()  # cut by bytes, at a character's boundary
        cut = encoded[: max(0, len(encoded) - (len(line) - LINE_LIMIT) - 3)].decode(errors="ignore") + "…"
        if index is None:
            event[key] = cut
        else:
            event[key] = [*event[key][:index], cut, *event[key][index + 1 :]]
        line = _encoded(event)
    return line


def _texts(event: Event) -> list[tuple[str, int | None, str]]:
    found: list[tuple[str, int | None, str]] = []
    for key, value in event.items():
        if isinstance(value, str):
            found.append((key, None, value))
        elif isinstance(value, list):
            found += [(key, i, item) for i, item in enumerate(value) if isinstance(item, str)]
    return found


class Recorder:
    """A worker's side: one service's events, appended to its run's record (or said on stderr without one)."""

    def __init__(self, record: Record | None, service: str) -> None:
        self.path = record.path if record else None
        self.service = service

    def emit(self, event: str, **fields: Any) -> None:
        item = {"event": event, "service": self.service, **fields}
        if self.path is not None and append(self.path, item):
            return
        shown = line(item)
        if shown and shown[0] == "err":  # as the workers printed before the reporter read the record
            sys.stderr.write(f"{shown[1]}\n")  # one write: lines of parallel workers stay whole
            sys.stderr.flush()

    def say(self, text: str) -> None:
        self.emit("message", text=text)

    def progress(self, progress: Progress) -> None:
        if isinstance(progress, Packaging):
            self.emit("packaged" if progress.done else "packaging", text=progress.text)
            return
        self.emit(
            "resource",
            logical_id=progress.logical_id,
            type=progress.resource_type,
            status=progress.status,
            reason=progress.reason,
            timestamp=progress.timestamp,
        )


class Follower:
    """Reads the events appended to a record since its last read; a line still being written waits."""

    def __init__(self, path: str) -> None:
        self.stream: BinaryIO = Path(path).open("rb")  # noqa: SIM115 (read as it grows; close() closes it)
        self.partial = b""

    def read(self) -> list[Event]:
        data = self.partial + self.stream.read()
        *lines, self.partial = data.split(b"\n")
        return [event for event in map(_decoded, lines) if event is not None]

    def close(self) -> None:
        self.stream.close()


def _decoded(line: bytes) -> Event | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None  # a line cut short (a full disk, a killed writer) loses that event, not the run
    return event if isinstance(event, dict) and "event" in event else None


def load(path: Path) -> list[Event]:
    return [event for event in map(_decoded, path.read_bytes().split(b"\n")) if event is not None]


def runs(state_dir: Path, stage: str) -> list[Path]:
    """The stage's recorded runs, oldest first."""
    return sorted((state_dir / RUNS / stage).glob("*.jsonl"))


def find(state_dir: Path, stage: str, run: str | None) -> Path:
    """The stage's last run, or the one whose id (or file name) starts with `run`."""
    recorded = runs(state_dir, stage)
    folder = (state_dir / RUNS / stage).relative_to(state_dir.parent).as_posix()
    if not recorded:
        raise PhasedoitError(f"no run of stage {stage} recorded in {folder}/ (run `doit deploy` first)")
    if run is None:
        return recorded[-1]
    found = [p for p in recorded if p.stem.startswith(run) or p.stem.split("-", 1)[-1].startswith(run)]
    if not found:
        raise PhasedoitError(f"--run {run}: no recorded run of stage {stage} has that id (see {folder}/)")
    if len(found) > 1:
        raise PhasedoitError(
            f"--run {run}: {len(found)} runs of stage {stage} have such an id: give more of it"
        )
    return found[0]
