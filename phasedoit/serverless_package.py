"""A Serverless Framework service packaged by the framework itself: its CloudFormation template and zips.

`serverless package --stage <stage>` builds, with no AWS call for most services, the template that
`serverless deploy` would send. Its exports and imports are exact; phasedoit's own reader (serverless.py)
is the fallback when the framework is not installed (no Node.js), and the two must agree
(tests/test_serverless_golden.py). Every framework process phasedoit starts goes through `run_streamed`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from phasedoit import packaging, templates
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


def run_streamed(
    argv: Sequence[str], cwd: Path, say: Callable[[str], None], env: Mapping[str, str] | None = None
) -> int:
    """Run `argv` in `cwd`, each line of its output (stdout and stderr) passed to `say`; its exit status.

    `env`: the whole environment of the process (the caller's by default).
    """
    with subprocess.Popen(
        argv,
        cwd=cwd,
        env=None if env is None else dict(env),
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


@dataclass(frozen=True)
class Packaged:
    """What `package` made: `directory` holds the template and the zips."""

    directory: Path
    template: dict[str, Any]
    stack_name: str
    tags: Mapping[str, str] = field(default_factory=dict)  # the stack's, as the framework would tag it


def arguments(stage: str, region: str | None) -> list[str]:
    return ["--stage", stage, *(["--region", region] if region else [])]


def package(
    framework: Sequence[str],
    folder: Path,
    shown: str,
    *,
    stage: str,
    region: str | None,
    output: Path,
    env: Mapping[str, str] | None = None,
) -> Packaged:
    """Run `<framework> package` for `stage` in the service's `folder`, into `output`.

    The framework works in the folder's `.serverless` (removed first), then moves it to `output`: one folder
    must not be packaged twice at once. `env`: its environment (the process's by default).
    """
    argv = [*framework, "package", *arguments(stage, region), "--package", str(output)]
    said: list[str] = []
    status = run_streamed(argv, folder, said.append, env)
    if status:
        name = Path(framework[0]).name
        raise PhasedoitError(f"{shown}: {name} package failed (exit {status}): {_error(said)}")
    template = _load_json(output / TEMPLATE, shown)
    state = _load_json(output / STATE, shown)
    return Packaged(output, template, _stack_name(state, stage), _stack_tags(state))


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


def _stack_tags(state: Mapping[str, Any]) -> dict[str, str]:
    """The tags `serverless deploy` puts on the stack: `provider.tags`, then `provider.stackTags`."""
    provider = (state.get("service") or {}).get("provider") or {}
    tags: dict[str, str] = {}
    for key in ("tags", "stackTags"):
        found = provider.get(key)
        if isinstance(found, dict):
            tags |= {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in found.items()}
    return tags


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


# The framework's own deployment bucket: phasedoit's artifacts bucket replaces it.
DEPLOYMENT_BUCKET = "ServerlessDeploymentBucket"
DROPPED_RESOURCES = (DEPLOYMENT_BUCKET, "ServerlessDeploymentBucketPolicy")
DROPPED_OUTPUTS = ("ServerlessDeploymentBucketName",)
# What `serverless deploy` sends with every template: its IAM roles, and any macro it uses.
CAPABILITIES = ("CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND")


def as_package(packaged: Packaged, shown: str, store: packaging.Store) -> packaging.Package:
    """The packaged template as phasedoit sends it: each zip it points at (`{S3Bucket, S3Key}`: functions,
    layers) keyed by its content's digest in the artifacts bucket, the framework's deployment bucket gone.

    A template that still refers to that bucket (a custom resource of a plugin, say) is refused: the
    framework must deploy it itself (`deploy_with: framework`).
    """
    template = copy.deepcopy(packaged.template)
    resources = _section(template, "Resources")
    outputs = _section(template, "Outputs")
    for name in DROPPED_RESOURCES:
        resources.pop(name, None)
    for name in DROPPED_OUTPUTS:
        outputs.pop(name, None)
    found: dict[str, packaging.Artifact] = {}
    for resource in resources.values():
        for location in _code_locations(resource):
            artifact = _artifact(packaged.directory / PurePosixPath(location["S3Key"]).name, shown)
            if artifact is None:
                continue
            location["S3Bucket"], location["S3Key"] = packaging.BUCKET, artifact.key
            found[artifact.key] = artifact
    for logical, node in [*resources.items(), *outputs.items()]:
        if DEPLOYMENT_BUCKET in json.dumps(node):
            raise PhasedoitError(
                f"{shown}: {logical} of its packaged template refers to the framework's {DEPLOYMENT_BUCKET},"
                " which phasedoit's artifacts bucket replaces: deploy it with `deploy_with: framework`"
            )
    body = templates.render(template)
    big = None
    size = len(body.encode()) + body.count(packaging.BUCKET) * (
        packaging.LONGEST_BUCKET - len(packaging.BUCKET)
    )
    if size > templates.MAX_URL_BYTES:
        raise PhasedoitError(
            f"{shown}: its packaged template is {size:,} bytes; CloudFormation takes at most"
            f" {templates.MAX_URL_BYTES:,} (through S3)"
        )
    if size > templates.MAX_BODY_BYTES:
        key = f"{hashlib.sha256(body.encode()).hexdigest()}.template"
        big = packaging.Artifact("template", key, TEMPLATE, len(body.encode()), body=body)
    return packaging.Package(body, tuple(found.values()), big, CAPABILITIES, (), store)


def _section(template: dict[str, Any], key: str) -> dict[str, Any]:
    found = template.get(key)
    return found if isinstance(found, dict) else {}


def _code_locations(node: Any) -> Iterator[dict[str, Any]]:
    """Every `{S3Bucket, S3Key}` mapping under `node` whose key is a string: where the framework's zips go."""
    if isinstance(node, dict):
        if isinstance(node.get("S3Key"), str) and "S3Bucket" in node:
            yield node
            return
        for value in node.values():
            yield from _code_locations(value)
    elif isinstance(node, list):
        for value in node:
            yield from _code_locations(value)


def _artifact(path: Path, shown: str) -> packaging.Artifact | None:
    """A zip of the package, keyed by the sha256 of its bytes (what Lambda shows as CodeSha256)."""
    if not path.is_file():
        return None  # not one of the framework's zips: a location the user wrote
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PhasedoitError(f"{shown}: cannot read the framework's {path.name}: {e.strerror}") from None
    key = f"{hashlib.sha256(data).hexdigest()}{path.suffix}"
    return packaging.Artifact("file", key, path.name, len(data), source=str(path))
