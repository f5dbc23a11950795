"""What `dodo.py` runs: the stage's plan, handed to doit as its configuration and task creators."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from phasedoit.config import CONFIG_NAME, load_config
from phasedoit.errors import PhasedoitError
from phasedoit.planning import STATE_DIR, StagePlan, plan_stage
from phasedoit.reporter import Reporter
from phasedoit.tasks import Task, deploy_tasks, remove_tasks


def doit_namespace(dodo_file: str) -> dict[str, Any]:
    """`DOIT_CONFIG` and the task creators for the app beside `dodo_file`; a user error exits 1, untraced."""
    from doit import get_var

    root = Path(dodo_file).resolve().parent
    try:
        plan = plan_stage(load_config(root / CONFIG_NAME), get_var("stage"), os.environ, get_var("force"))
    except PhasedoitError as e:
        sys.exit(str(e))
    (root / STATE_DIR).mkdir(exist_ok=True)
    # doit saves its state at the end of a run, and on Ctrl-C but not on SIGTERM: make them alike
    signal.signal(signal.SIGTERM, _interrupt)
    return {
        "DOIT_CONFIG": {
            "default_tasks": ["deploy"],
            # one state file per stage: deploying prod must not make dev look stale
            "dep_file": str(root / STATE_DIR / f"doit-{plan.stage}.db"),
            "backend": "sqlite3",
            "reporter": Reporter,
        },
        "task_deploy": _creator(deploy_tasks, plan),
        "task_remove": _creator(remove_tasks, plan),
    }


def _creator(make: Callable[[StagePlan], Iterator[Task]], plan: StagePlan) -> Callable[[], Iterator[Task]]:
    def create() -> Iterator[Task]:
        return make(plan)

    create.__doc__ = make.__doc__
    return create


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
