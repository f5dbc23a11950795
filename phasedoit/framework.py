"""Serverless Framework services: phasedoit orders them, the Serverless Framework (`serverless`) deploys them.

phasedoit cannot send their template (Serverless builds it, and packages code), so their deploy runs
`serverless deploy` in their folder. Every subprocess phasedoit starts goes through `run_streamed`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL = "npm install -g serverless"
ALWAYS = "a Serverless Framework service: deployed on every run"


@dataclass(frozen=True)
class ServerlessRun:
    """Where to run `serverless` for one service."""

    folder: str  # the folder of its serverless.yml: `serverless` finds it there
    config: str  # its serverless.yml as the user knows it, for messages
    stack_name: str  # as Serverless names it
    stage: str


def serverless(
    verb: str,
    service: str,
    run: ServerlessRun,
    arguments: Sequence[str],
    say: Callable[[str], None],
) -> str | None:
    """Run `serverless <verb> <arguments>` in the service's folder: None when done, else the failure."""
    executable = shutil.which("serverless")
    if executable is None:
        return (
            f"{service}: the Serverless Framework is not installed ({INSTALL}), needed to {verb} {run.config}"
        )
    status = run_streamed([executable, verb, *arguments], Path(run.folder), say)
    return f"{service}: serverless {verb} failed (exit {status})" if status else None


def arguments(stage: str, region: str | None) -> list[str]:
    return ["--stage", stage, *(["--region", region] if region else [])]


def always_deploys(task: Any, values: Mapping[str, Any]) -> bool:
    """The uptodate check of a Serverless Framework service: never up to date, and `doit plan` says why.

    phasedoit's fingerprint covers the service's folder, but a serverless.yml also reads files outside it
    (`${file(../common.yml)}`), and Serverless tags the stack, not phasedoit. Serverless itself skips a
    deploy when its package has not changed.
    """
    task.meta["phasedoit"]["reasons"] = [ALWAYS]
    return False


def run_streamed(argv: Sequence[str], cwd: Path, say: Callable[[str], None]) -> int:
    """Run `argv` in `cwd`, each line of its output (stdout and stderr) passed to `say`; its exit status."""
    with subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,  # a prompt must not wait for input that never comes
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None  # stdout=PIPE
        for line in process.stdout:
            say(line.rstrip("\r\n"))
    return process.returncode
