"""A Serverless Framework service packaged by the framework itself: its CloudFormation template and zips.

`serverless package --stage <stage>` builds, with no AWS call for most services, the template that
`serverless deploy` would send. Its exports and imports are exact; phasedoit's own reader (serverless.py)
is the fallback when the framework is not installed (no Node.js), and the two must agree
(tests/test_serverless_golden.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phasedoit import templates
from phasedoit.deployers.serverless import run_streamed
from phasedoit.errors import PhasedoitError
from phasedoit.templates import Dependencies

# The framework's command names, in the order a project's `node_modules/.bin` is searched.
EXECUTABLES = ("serverless", "osls")
TEMPLATE = "cloudformation-template-update-stack.json"
STATE = "serverless-state.json"
# Lines of the framework's output kept in the message when it fails.
SHOWN_LINES = 5


def find_framework(
    folder: Path, root: Path, configured: str | None = None, path: str | None = None
) -> Path | None:
    """The framework a service runs; None when there is none.

    `configured` (phases.yml's `framework:`) is a command on PATH or a file relative to `root`; otherwise the
    first `node_modules/.bin/serverless` or `osls` from the service's `folder` up to the app's `root` (when
    Node.js is on PATH to run it), else `serverless` or `osls` on PATH. `path`: the PATH to search (the
    process's by default).
    """
    path = os.environ.get("PATH", "") if path is None else path
    if configured:
        in_app = "/" in configured or os.sep in configured
        found = shutil.which(root / configured) if in_app else shutil.which(configured, path=path)
        if found is None:
            raise PhasedoitError(f"phases.yml: framework: no program {configured!r} on PATH or in {root}")
        return Path(found)
    # a project's node_modules/.bin scripts start with `#!/usr/bin/env node`
    for directory in (folder, *folder.parents) if shutil.which("node", path=path) else ():
        for name in EXECUTABLES:
            found = shutil.which(directory / "node_modules" / ".bin" / name)
            if found:
                return Path(found)
        if directory == root:
            break
    for name in EXECUTABLES:
        found = shutil.which(name, path=path)
        if found:
            return Path(found)
    return None


@dataclass(frozen=True)
class Packaged:
    """What `package` made: `directory` holds the template and the zips."""

    directory: Path
    template: dict[str, Any]
    stack_name: str


def arguments(stage: str, region: str | None) -> list[str]:
    return ["--stage", stage, *(["--region", region] if region else [])]


def package(
    framework: Sequence[str], folder: Path, shown: str, *, stage: str, region: str | None, output: Path
) -> Packaged:
    """Run `<framework> package` for `stage` in the service's `folder`, into `output`.

    The framework works in the folder's `.serverless` (removed first), then moves it to `output`: one folder
    must not be packaged twice at once.
    """
    argv = [*framework, "package", *arguments(stage, region), "--package", str(output)]
    said: list[str] = []
    status = run_streamed(argv, folder, said.append)
    if status:
        name = Path(framework[0]).name
        raise PhasedoitError(f"{shown}: {name} package failed (exit {status}): {_error(said)}")
    template = _load_json(output / TEMPLATE, shown)
    state = _load_json(output / STATE, shown)
    return Packaged(output, template, _stack_name(state, stage))


def _error(said: list[str]) -> str:
    """The framework's error: the lines after its `Error:` line, else its last lines, on one line."""
    lines = [line.strip() for line in said if line.strip()]
    if "Error:" in lines:
        return " / ".join(lines[lines.index("Error:") + 1 :][:SHOWN_LINES])
    return " / ".join(lines[-SHOWN_LINES:])


def _load_json(path: Path, shown: str) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PhasedoitError(f"{shown}: the framework's package has no readable {path.name}: {e}") from None
    if not isinstance(loaded, dict):
        raise PhasedoitError(f"{shown}: the framework's {path.name} is not a JSON object")
    return loaded


def _stack_name(state: Mapping[str, Any], stage: str) -> str:
    """As the framework names it (`naming.getStackName`): `provider.stackName`, else `<service>-<stage>`."""
    service = state.get("service") or {}
    stack_name = (service.get("provider") or {}).get("stackName")
    return stack_name if isinstance(stack_name, str) else f"{service.get('service')}-{stage}"


def template_dependencies(packaged: Packaged, values: Mapping[str, str], shown: str) -> Dependencies:
    """The exports and imports of a packaged template; `values`: the pseudo parameters known before deploy."""
    known = {**values, "AWS::StackName": packaged.stack_name}
    return templates.find_dependencies(packaged.template, known, f"{shown} (packaged)")


def packaged_dependencies(
    framework: Sequence[str],
    folder: Path,
    shown: str,
    stage: str,
    values: Mapping[str, str],
) -> Dependencies:
    """Exports and imports of a service as the framework packages it for `stage`, in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="phasedoit-package-") as output:
        region = values.get("AWS::Region")
        packaged = package(framework, folder, shown, stage=stage, region=region, output=Path(output))
        return template_dependencies(packaged, values, shown)
