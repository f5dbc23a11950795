"""The embedded local CloudFormation endpoint: moto's server, started on demand and reused across runs.

This side (`ensure_endpoint`, `stop_endpoint`, `endpoint_status`, `credentials`, `notices`,
`unmodelled_types`, the CLI) runs in doit's processes and imports neither boto3 nor moto. The server itself
(`local_server.serve`) runs in its own detached process.

The endpoint is its owner's: its folder `.phasedoit/local/` is 0700 and its files 0600; it answers only
requests signed with its own random credentials (`credentials.json`, made on first use), which phasedoit's
clients use and `phasedoit local env` prints for the AWS CLI and SDKs.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import importlib.metadata
import importlib.util
import itertools
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from phasedoit.errors import PhasedoitError
from phasedoit.local_files import (
    open_private,
    private_dir,
    read_json,
    secure_files,
    write_json,
    write_private,
)

HOST = "127.0.0.1"
IDLE_TIMEOUT_ENV = "PHASEDOIT_LOCAL_IDLE_TIMEOUT"
DEFAULT_IDLE_TIMEOUT = 30 * 60
DEFAULT_REGION = "us-east-1"
START_TIMEOUT = 120.0  # generous: restoring hundreds of stacks takes seconds
STOP_TIMEOUT = 10.0
HEALTH_PATH = "/__phasedoit__/health"
TYPES_PATH = "/__phasedoit__/types"
TOKEN_HEADER = "X-Phasedoit-Token"  # noqa: S105 - a header name, not a secret
SERVER_NAME = "phasedoit-local"
SNAPSHOT_VERSION = 1
UNREADABLE = "unreadable"  # suffix of a snapshot set aside because it could not be read
UNRESTORED = "unrestored"  # suffix of the saved entries of stacks that could not be restored
# what the endpoint is tested with: it uses moto internals (MotoRequestHandler appeared in 5.2.5);
# pyproject.toml's `local` extra says the same, and .ci/run also tests the lowest
MOTO_LOWEST, MOTO_BELOW = (5, 2, 5), (5, 3)
MOTO_REQUIREMENT = "moto[server]>=5.2.5,<5.3"
NEEDS_MOTO = f"local endpoint needs moto's server: pip install '{MOTO_REQUIREMENT}'"
_KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@dataclasses.dataclass(frozen=True)
class Paths:
    dir: Path

    @property
    def endpoint(self) -> Path:
        return self.dir / "endpoint.json"

    @property
    def snapshot(self) -> Path:
        return self.dir / "stacks.json"

    @property
    def log(self) -> Path:
        return self.dir / "server.log"

    @property
    def lock(self) -> Path:
        return self.dir / "lock"

    @property
    def credentials(self) -> Path:
        return self.dir / "credentials.json"

    @property
    def moto_types(self) -> Path:
        return self.dir / "moto-types.json"

    def set_aside(self) -> list[Path]:
        """Snapshots and stack entries set aside at earlier starts, oldest first."""
        found = [*self.dir.glob(f"{self.snapshot.name}.{UNREADABLE}-*")]
        found += self.dir.glob(f"{self.snapshot.name}.{UNRESTORED}-*")
        return sorted(found, key=lambda path: (path.name.rsplit("-", 1)[-1], path.name))


class Credentials(NamedTuple):
    access_key_id: str
    secret_access_key: str


@dataclasses.dataclass(frozen=True)
class EndpointStatus:
    running: bool
    url: str | None
    pid: int | None
    uptime: float | None
    stacks: int
    saved_bytes: int
    notices: tuple[str, ...] = ()


def local_paths(state_dir: str | os.PathLike[str]) -> Paths:
    return Paths(Path(state_dir).resolve() / "local")


# ---------------------------------------------------------------------------------------------- client


def ensure_endpoint(state_dir: Path) -> str:
    """The URL of this app's running local endpoint, started (warm, state restored) if need be."""
    paths = local_paths(state_dir)
    url = _live_url(paths)  # the fast path takes no lock: the record is replaced atomically
    if url is not None:
        return url
    _prepare(paths)
    with _locked(paths):
        # another caller may have started it while we waited for the lock
        return _live_url(paths) or _start(paths)


def credentials(state_dir: str | os.PathLike[str]) -> Credentials:
    """The endpoint's own credentials, made (random, kept 0600) by the first caller; stable afterwards."""
    paths = local_paths(state_dir)
    found = _read_credentials(paths)
    if found is not None:
        return found
    _prepare(paths)
    key_id = "PDLK" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))  # shaped like AWS's
    made = {"access_key_id": key_id, "secret_access_key": secrets.token_urlsafe(30)}
    tmp = paths.credentials.with_name(f".{paths.credentials.name}.{os.getpid()}.new")
    write_private(tmp, json.dumps(made).encode())
    try:
        os.link(tmp, paths.credentials)  # the first caller's file wins; no one ever sees half of one
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    found = _read_credentials(paths)
    if found is None:
        raise PhasedoitError(f"{paths.credentials}: unreadable; stop the endpoint and delete it")
    return found


def _read_credentials(paths: Paths) -> Credentials | None:
    if not paths.credentials.exists():
        return None
    data = read_json(paths.credentials)
    if data is None or not all(isinstance(data.get(k), str) for k in Credentials._fields):
        raise PhasedoitError(f"{paths.credentials}: unreadable; stop the endpoint and delete it")
    return Credentials(data["access_key_id"], data["secret_access_key"])


def _prepare(paths: Paths) -> None:
    private_dir(paths.dir)
    secure_files(paths.dir)


def stop_endpoint(state_dir: Path) -> bool:
    """Stop the local endpoint now; True if one was running."""
    paths = local_paths(state_dir)
    if not paths.dir.exists():
        return False
    with _locked(paths):
        record = read_json(paths.endpoint)
        if record is None or _live_url(paths) is None:
            paths.endpoint.unlink(missing_ok=True)  # stale: its process is gone or is not ours
            return False
        _terminate(int(record["pid"]))
        remove_record(paths, int(record["pid"]))
        return True


def endpoint_status(state_dir: Path) -> EndpointStatus:
    paths = local_paths(state_dir)
    saved = paths.snapshot.stat().st_size if paths.snapshot.exists() else 0
    record = read_json(paths.endpoint) if paths.dir.exists() else None
    health = _health(record) if record is not None else None
    if record is None or health is None:
        found = tuple(_snapshot_notices(paths, running=False)) + tuple(_aside_notices(paths.set_aside()))
        return EndpointStatus(False, None, None, None, _saved_stack_count(paths), saved, found)
    uptime = time.time() - float(health["started"])
    found = tuple(health.get("notices", [])) + tuple(_aside_notices(paths.set_aside()))
    return EndpointStatus(True, record["url"], health["pid"], uptime, int(health["stacks"]), saved, found)


def notices(state_dir: Path) -> list[str]:
    """One line each: what the user should know about the endpoint's saved state (a snapshot set aside,
    stacks that could not be restored, a snapshot that cannot be written). Empty when all is well."""
    if not local_paths(state_dir).dir.exists():
        return []
    return list(endpoint_status(state_dir).notices)


def format_status(status: EndpointStatus) -> str:
    saved = f"saved state {_format_size(status.saved_bytes)}"
    stacks = f"{status.stacks} stack{'' if status.stacks == 1 else 's'}"
    if not status.running:
        line = f"local endpoint: not running (saved state: {stacks}, {_format_size(status.saved_bytes)})"
    else:
        uptime = _format_duration(status.uptime or 0.0)
        line = f"local endpoint: running at {status.url} (pid {status.pid}), up {uptime}, {stacks}, {saved}"
    return "\n".join([line, *status.notices])


def _format_size(size: int) -> str:
    return f"{size} B" if size < 1024 else f"{size / 1024:.1f} KiB"


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _saved_stack_count(paths: Paths) -> int:
    snapshot = read_json(paths.snapshot)
    stacks = snapshot.get("stacks") if snapshot is not None else None
    return len(stacks) if isinstance(stacks, list) else 0


def snapshot_problem(path: Path) -> str | None:
    """Why a saved snapshot cannot be restored (None if it can, or if there is none)."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as error:
        return error.strerror or str(error)
    except ValueError as error:
        return f"not JSON: {error}"
    if not isinstance(data, dict) or not isinstance(data.get("stacks"), list):
        return "not a snapshot of stacks"
    if data.get("version") != SNAPSHOT_VERSION:
        return f"version {data.get('version')!r}, this phasedoit reads version {SNAPSHOT_VERSION}"
    return None


def _snapshot_notices(paths: Paths, *, running: bool) -> Iterator[str]:
    problem = None if running else snapshot_problem(paths.snapshot)
    if problem is not None:
        yield (
            f"local endpoint: {paths.snapshot} cannot be restored ({problem});"
            " the next start keeps it aside and starts with no stacks"
        )


def _aside_notices(paths: Iterable[Path]) -> Iterator[str]:
    for path in paths:
        if f".{UNREADABLE}-" in path.name:
            yield (
                f"local endpoint: a snapshot that could not be restored ({snapshot_problem(path)})"
                f" is kept as {path}; its stacks were not restored (delete the file once read)"
            )
        else:
            data = read_json(path) or {}
            entries = [e for e in data.get("stacks", []) if isinstance(e, dict)]
            named = ", ".join(f"{e.get('name')} ({e.get('reason')})" for e in entries)
            count = f"{len(entries)} stack{'' if len(entries) == 1 else 's'}"
            yield (
                f"local endpoint: {count} could not be restored and {'is' if len(entries) == 1 else 'are'}"
                f" not there: {named}; their saved entries are kept in {path}"
                " (deploy them again, then delete the file)"
            )


@contextmanager
def _locked(paths: Paths) -> Iterator[None]:
    # flock, not a lock object: the callers are doit workers and separate doit runs
    fd = open_private(paths.lock, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    with os.fdopen(fd, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _health(record: dict[str, Any], timeout: float = 2.0) -> dict[str, Any] | None:
    """The server's own answer if the recorded process is alive and is the one answering."""
    if not _pid_alive(int(record.get("pid", 0))):
        return None
    answer = _ask(record, HEALTH_PATH, timeout)
    if not isinstance(answer, dict) or answer.get("server") != SERVER_NAME:
        return None
    return answer if answer.get("pid") == record["pid"] else None


def _ask(record: dict[str, Any], path: str, timeout: float = 10.0) -> Any:
    """The JSON answer of one of the server's own paths (they need the token of its record), or None."""
    try:
        url, token = f"{record['url']}{path}", str(record.get("token", ""))
        request = urllib.request.Request(url, headers={TOKEN_HEADER: token})  # noqa: S310 - our http URL
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - our http URL
            return json.loads(response.read())
    except (OSError, ValueError, KeyError):
        return None


def _live_url(paths: Paths) -> str | None:
    record = read_json(paths.endpoint)
    if record is None or _health(record) is None:
        return None
    return str(record["url"])


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by the process that started it) is gone for our purposes
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _terminate(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT
        time.sleep(0.01)


def remove_record(paths: Paths, pid: int) -> None:
    # only our own record: a successor may already have written its own
    record = read_json(paths.endpoint)
    if record is not None and record.get("pid") == pid:
        paths.endpoint.unlink(missing_ok=True)


def _require_moto() -> None:
    if any(importlib.util.find_spec(name) is None for name in ("moto", "flask", "flask_cors", "werkzeug")):
        raise PhasedoitError(NEEDS_MOTO)
    version = importlib.metadata.version("moto")
    if not MOTO_LOWEST <= _version_tuple(version) < MOTO_BELOW:
        raise PhasedoitError(
            f"local endpoint needs {MOTO_REQUIREMENT}, not moto {version}: pip install '{MOTO_REQUIREMENT}'"
        )


def _version_tuple(version: str) -> tuple[int, ...]:
    numbers = []
    for part in version.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits:
            break
        numbers.append(int(digits))
        if digits != part:  # 5.3.0rc1, 5.2.6.dev0: what follows is not a release number
            break
    return tuple(numbers)


def idle_timeout_from_env() -> float:
    value = os.environ.get(IDLE_TIMEOUT_ENV)
    if value is None:
        return DEFAULT_IDLE_TIMEOUT
    try:
        return float(value)
    except ValueError:
        raise PhasedoitError(f"{IDLE_TIMEOUT_ENV}: expected a number of seconds, got {value!r}") from None


def _server_argv(paths: Paths, command: str) -> tuple[list[str], dict[str, str]]:
    # `serve` is local_server's own entry: this module never imports the server (nor moto)
    module = "phasedoit.local_server" if command == "serve" else "phasedoit.local"
    argv = [sys.executable, "-m", module, command, "--state-dir", str(paths.dir.parent)]
    env = dict(os.environ)
    # the server must import this very package, installed or not, whatever the working directory
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return argv, env


def _start(paths: Paths) -> str:
    _require_moto()
    timeout = idle_timeout_from_env()
    credentials(paths.dir.parent)  # made before the server reads them
    before = set(paths.set_aside())
    argv, env = _server_argv(paths, "serve")
    log = os.fdopen(open_private(paths.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb")
    with log:
        process = subprocess.Popen(
            [*argv, "--idle-timeout", str(timeout)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url, health = _wait_until_ready(paths, process)
    lines = [f"local endpoint: started at {url} (stop it with `phasedoit local stop`)"]
    lines += health.get("notices", [])
    lines += _aside_notices(path for path in paths.set_aside() if path not in before)
    sys.stderr.write("".join(f"{line}\n" for line in lines))
    # reap it when it exits while we still run, so that it does not linger as a zombie
    threading.Thread(target=process.wait, daemon=True).start()
    return url


def _wait_until_ready(paths: Paths, process: subprocess.Popen[bytes]) -> tuple[str, dict[str, Any]]:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PhasedoitError(
                f"local endpoint exited at start (status {process.returncode}); see {paths.log}"
            )
        record = read_json(paths.endpoint)
        if record is not None and record.get("pid") == process.pid:
            health = _health(record)
            if health is not None:
                return str(record["url"]), health
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise PhasedoitError(f"local endpoint did not start within {START_TIMEOUT:.0f} s; see {paths.log}")


# ------------------------------------------------------------------------------- resource types


def unmodelled_types(state_dir: Path, types: Iterable[str]) -> list[str]:
    """The resource types among `types` that moto's CloudFormation does not model (it skips them without
    a word, the stack still CREATE_COMPLETE), sorted. moto's own map is read once per moto version, in a
    subprocess, and kept in `.phasedoit/local/moto-types.json`: moto is never imported into doit's process.
    """
    modelled = _modelled_types(local_paths(state_dir))
    return sorted({kind for kind in types if kind not in modelled and not kind.startswith("Custom::")})


def _modelled_types(paths: Paths) -> frozenset[str]:
    try:
        version = importlib.metadata.version("moto")
    except importlib.metadata.PackageNotFoundError:
        raise PhasedoitError(NEEDS_MOTO) from None
    cached = read_json(paths.moto_types) if paths.moto_types.exists() else None
    if cached is not None and cached.get("moto") == version and isinstance(cached.get("types"), list):
        return frozenset(cached["types"])
    _require_moto()
    _prepare(paths)
    record = read_json(paths.endpoint)
    answer = _ask(record, TYPES_PATH) if record is not None and _health(record) is not None else None
    if isinstance(answer, dict) and answer.get("moto") == version and isinstance(answer.get("types"), list):
        write_json(paths.moto_types, answer)  # the running server has moto loaded: no subprocess
        return frozenset(answer["types"])
    argv, env = _server_argv(paths, "types")
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=START_TIMEOUT, check=False)
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise PhasedoitError(f"cannot read the resource types moto models: {last}")
    return frozenset(json.loads(run.stdout))


def moto_types() -> dict[str, Any]:
    """In a process that may import moto: the resource types it models, and its version."""
    from moto.cloudformation.parsing import NULL_MODELS, get_model_map

    return {"moto": importlib.metadata.version("moto"), "types": sorted({*get_model_map(), *NULL_MODELS})}


def _write_moto_types(paths: Paths) -> list[str]:
    found = moto_types()
    private_dir(paths.dir)
    write_json(paths.moto_types, found)
    return list(found["types"])


# ---------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phasedoit local", description="the embedded local endpoint")
    parser.add_argument("--state-dir", type=Path, default=Path(".phasedoit"))
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="is it running, where, how much state")
    stop = commands.add_parser("stop", help="stop it now (its stacks are saved)")
    env = commands.add_parser(
        "env",
        help="print the variables that point the AWS CLI and SDKs at it (starting it if need be):"
        ' eval "$(phasedoit local env)"',
    )
    env.add_argument(
        "--region", default=DEFAULT_REGION, help=f"AWS_REGION to print (default {DEFAULT_REGION})"
    )
    types = commands.add_parser("types", help="print the resource types moto models (used internally)")
    for command in (status, stop, env, types):  # accepted after the subcommand too
        command.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        return _run_command(args)
    except PhasedoitError as error:
        print(error, file=sys.stderr)
        return 1


def _run_command(args: argparse.Namespace) -> int:
    if args.command == "types":
        print(json.dumps(_write_moto_types(local_paths(args.state_dir))))
        return 0
    if args.command == "stop":
        stopped = stop_endpoint(args.state_dir)
        print("local endpoint: stopped" if stopped else "local endpoint: not running")
        return 0
    if args.command == "env":
        print(env_line(args.state_dir, args.region))
        return 0
    print(format_status(endpoint_status(args.state_dir)))
    return 0


def env_line(state_dir: Path, region: str = DEFAULT_REGION) -> str:
    """`export AWS_ENDPOINT_URL=… AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… AWS_REGION=…` for a shell.

    AWS_DEFAULT_REGION too: boto3 and the AWS CLI v1 read that one only.
    """
    url = ensure_endpoint(state_dir)
    key_id, secret = credentials(state_dir)
    names = (
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    )
    values = (url, key_id, secret, region, region)
    pairs = zip(names, values, strict=True)
    return "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in pairs)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter teardown: unloading moto's modules takes ~0.4 s and the server has nothing
    # left to finalize (its files are written and fsynced), so `stop` returns at once
    os._exit(code)
