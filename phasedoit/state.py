"""doit's state file for phasedoit: sqlite3, with a full or read-only disk said in one line, not a traceback.

Registered as doit's `phasedoit` backend (an entry point): doit imports it on every run, so it stays light.
The state only says why a service deploys: the stacks' tags say what is deployed. A state that cannot be
saved ends the run with exit 1 and one line; the services that deployed are tagged, and the next run sees
them as up to date.
"""

from __future__ import annotations

import sqlite3
import sys
from typing import Any

from doit.dependency import DatabaseException, SqliteDB


class StateDB(SqliteDB):  # type: ignore[misc]
    desc = "phasedoit: sqlite3, its faults in one line"

    def __init__(self, name: str, codec: Any, *, module_name: str | None = None) -> None:
        try:
            super().__init__(name, codec, module_name=module_name)
            # fail now, before anything deploys, if the state could not be saved at the end
            self._conn.execute("begin immediate")
            self._conn.rollback()
        except (DatabaseException, sqlite3.Error) as e:
            sys.exit(f"phasedoit: cannot use its state file {name}: {_reason(e)}")

    def dump(self) -> None:
        try:
            super().dump()
        except sqlite3.Error as e:
            sys.exit(
                f"phasedoit: cannot save its state file {self.name}: {_reason(e)}"
                " (what deployed is tagged on its stacks: the next run sees it)"
            )


def _reason(error: Exception) -> str:
    return str(error).rsplit("Original error: ", 1)[-1]
