"""doit's `-P process` workers end when doit does, however doit ends.

doit ends its workers itself after Ctrl-C or SIGTERM, but a `kill -9` (or an OOM kill) leaves them behind:
each finishes the deploy it was waiting on, then waits on its job queue for good. doit gives a worker no
hook of its own, so every child process doit's process makes watches its parent from a daemon thread and
exits when it is gone (it is then a child of init, or of a subreaper). Threads (phasedoit's default) need
none of this: they die with their process.

A fork's child starts its watch in an at-fork hook; a `spawn` or `forkserver` child (macOS, Windows, and
Linux from Python 3.14) when it imports phasedoit to unpickle its tasks.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

POLL_SECONDS = 0.5  # a `kill -9`'d doit leaves its workers for at most this long
EXIT_CODE = 128 + 9  # as if killed along with doit; nobody is left to read it


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    os._exit(EXIT_CODE)  # no cleanup to run: doit's main process, which saves its state, is gone


def watch_parent() -> None:
    """Exit this process as soon as the process that made it is gone."""
    threading.Thread(target=_watch, args=(os.getppid(),), name="phasedoit-parent-watch", daemon=True).start()


if hasattr(os, "register_at_fork"):  # not on Windows, which never forks
    os.register_at_fork(after_in_child=watch_parent)
if multiprocessing.parent_process() is not None:  # a spawned or forkserver child importing phasedoit
    watch_parent()
