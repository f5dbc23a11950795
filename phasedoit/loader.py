"""What `dodo.py` runs: the stage's plan, handed to doit as its configuration and task creators."""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from phasedoit import variables
from phasedoit.config import CONFIG_NAME, load_config
from phasedoit.errors import PhasedoitError
from phasedoit.planning import STATE_DIR, StagePlan, plan_stage
from phasedoit.reporter import Reporter, progress_mode
from phasedoit.tasks import Task, deploy_tasks, remove_tasks


def doit_namespace(dodo_file: str) -> dict[str, Any]:
    """`DOIT_CONFIG` and the task creators for the app beside `dodo_file`; a user error exits 1, untraced."""
    from doit import get_var

    root = Path(dodo_file).resolve().parent
    # The plan is made of many objects that live as long as the run: the collector's passes over them cost
    # a no-op of 1,000 services a tenth of a second. None while planning; then what is alive is left out
    # of every later pass (frozen: still freed when no longer used, only a cycle among it waits for exit).
    collecting = gc.isenabled()
    gc.disable()
    try:
        variables.check(variables.given(), variables.KNOWN)
        _check_workers(sys.argv[1:])
        app = load_config(root / CONFIG_NAME)
        plan = plan_stage(
            app,
            get_var("stage"),
            os.environ,
            get_var("force"),
            adopt=get_var("adopt"),
            yes=get_var("yes"),
            schedule=get_var("schedule"),
        )
        progress_mode(os.environ, None)  # a wrong PHASEDOIT_PROGRESS is a user error, said before any run
    except PhasedoitError as e:
        sys.exit(str(e))
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
    (root / STATE_DIR).mkdir(exist_ok=True)
    if plan.target.local:
        from phasedoit import local

        for notice in local.notices(Path(plan.target.local)):  # its saved state: set aside, not restored
            print(notice, file=sys.stderr)
        if "plan" in _task_names(sys.argv[1:]):  # said where it is read before deploying, not at every run
            for warning in unmodelled(plan):
                print(f"warning: {warning}", file=sys.stderr)
    # doit saves its state at the end of a run, and on Ctrl-C but not on SIGTERM: make them alike, and end
    # both without a traceback (the summary says what was interrupted); an ignored SIGINT (`doit … &` in a
    # script) stays ignored
    signal.signal(signal.SIGTERM, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt)
    return {
        "DOIT_CONFIG": {
            "default_tasks": ["deploy"],
            # one state file per stage: deploying prod must not make dev look stale
            "dep_file": str(root / STATE_DIR / f"doit-{plan.stage}.db"),
            "backend": "phasedoit",  # sqlite3 (two runs at once keep both), its faults in one line
            "reporter": Reporter,
            # `-n` runs the actions in threads: they wait on AWS, sharing one boto3 client per target;
            # `-P process` on the command line still picks processes
            "par_type": "thread",
        },
        "task_deploy": _creator(partial(deploy_tasks, requested=_task_names(sys.argv[1:])), plan),
        # removing the whole stage orders the removals (last phase first); `remove:<service>` alone must
        # remove that one stack, not the later phases with it, so its task then depends on nothing
        "task_remove": _creator(partial(remove_tasks, whole="remove" in _task_names(sys.argv[1:])), plan),
    }


def unmodelled(plan: StagePlan) -> list[str]:
    """The resource types moto does not model, by service: the local endpoint skips them without a word."""
    from phasedoit import local

    assert plan.target.local is not None
    wanted = {kind for service in plan.services.values() for kind in service.resource_types}
    try:
        skipped = set(local.unmodelled_types(Path(plan.target.local), wanted))
    except PhasedoitError:
        return []  # no moto: the deploy says so in one line
    return [
        f"{name}: moto does not model {kind}; the local endpoint creates the stack without it"
        for name, service in plan.services.items()
        for kind in service.resource_types
        if kind in skipped and not kind.startswith("AWS::Serverless::")  # expanded by the local endpoint
    ]


def _check_workers(argv: list[str]) -> None:
    """doit takes a negative `-n` and then runs nothing at all, with status 0: refuse it."""
    for i, arg in enumerate(argv):
        if arg == "--":
            return
        if arg in ("-n", "--process") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--process="):
            value = arg.partition("=")[2]
        elif arg.startswith("-n") and arg[2:].lstrip("-").isdigit():
            value = arg[2:]
        else:
            continue
        if value.lstrip("-").isdigit() and int(value) < 0:
            raise PhasedoitError(f"-n {value}: the number of parallel deploys is 0 (one at a time) or more")


def _task_names(argv: list[str]) -> set[str]:
    """The tasks doit was asked to run: its positional arguments, less options and `name=value` variables."""
    return {arg for arg in argv if not arg.startswith("-") and "=" not in arg}


def _creator(make: Callable[[StagePlan], Iterator[Task]], plan: StagePlan) -> Callable[[], Iterator[Task]]:
    def create() -> Iterator[Task]:
        return make(plan)

    create.__doc__ = getattr(make, "func", make).__doc__
    return create


def _interrupt(signum: int, frame: object) -> None:
    # not KeyboardInterrupt, which doit lets out with its traceback: SystemExit ends the run as quietly,
    # through the same `finally`s (doit's state saved, the summary printed), with the status a shell gives
    # a process that the signal ended
    raise SystemExit(128 + signum)
