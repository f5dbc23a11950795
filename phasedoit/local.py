"""The embedded local CloudFormation endpoint: moto's server, started on demand and reused across runs.

This side (`ensure_endpoint`, `stop_endpoint`, `endpoint_status`, the CLI) runs in doit's processes and
imports neither boto3 nor moto. The server itself (`local_server.serve`) runs in its own detached process.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from phasedoit.errors import PhasedoitError

HOST = "127.0.0.1"
IDLE_TIMEOUT_ENV = "PHASEDOIT_LOCAL_IDLE_TIMEOUT"
DEFAULT_IDLE_TIMEOUT = 30 * 60
START_TIMEOUT = 120.0  # generous: restoring hundreds of stacks takes seconds
STOP_TIMEOUT = 10.0
HEALTH_PATH = "/__phasedoit__/health"
SERVER_NAME = "phasedoit-local"


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


@dataclasses.dataclass(frozen=True)
class EndpointStatus:
    running: bool
    url: str | None
    pid: int | None
    uptime: float | None
    stacks: int
    saved_bytes: int


def local_paths(state_dir: Path) -> Paths:
    return Paths(Path(state_dir).resolve() / "local")


# ---------------------------------------------------------------------------------------------- client


def ensure_endpoint(state_dir: Path) -> str:
    """The URL of this app's running local endpoint, started (warm, state restored) if need be."""
    paths = local_paths(state_dir)
    url = _live_url(paths)  # the fast path takes no lock: the record is replaced atomically
    if url is not None:
        return url
    paths.dir.mkdir(parents=True, exist_ok=True)
    with _locked(paths):
        # another caller may have started it while we waited for the lock
        return _live_url(paths) or _start(paths)


def credentials(state_dir: str | Path) -> tuple[str, str]:
    """The access key id and secret that phasedoit's clients sign the endpoint's requests with."""
    return "local", "local"


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
    record = read_json(paths.endpoint)
    health = _health(record) if record is not None else None
    if record is None or health is None:
        return EndpointStatus(False, None, None, None, _saved_stack_count(paths), saved)
    uptime = time.time() - float(health["started"])
    return EndpointStatus(True, record["url"], health["pid"], uptime, int(health["stacks"]), saved)


def format_status(status: EndpointStatus) -> str:
    saved = f"saved state {_format_size(status.saved_bytes)}"
    stacks = f"{status.stacks} stack{'' if status.stacks == 1 else 's'}"
    if not status.running:
        return f"local endpoint: not running (saved state: {stacks}, {_format_size(status.saved_bytes)})"
    uptime = _format_duration(status.uptime or 0.0)
    return f"local endpoint: running at {status.url} (pid {status.pid}), up {uptime}, {stacks}, {saved}"


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
    return len(snapshot["stacks"]) if snapshot is not None else 0


@contextmanager
def _locked(paths: Paths) -> Iterator[None]:
    # flock, not a lock object: the callers are doit workers and separate doit runs
    with paths.lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: readers see the old file or the new one, never half of one, even after a crash."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as handle:
        json.dump(data, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _health(record: dict[str, Any], timeout: float = 2.0) -> dict[str, Any] | None:
    """The server's own answer if the recorded process is alive and is the one answering."""
    if not _pid_alive(int(record.get("pid", 0))):
        return None
    try:
        url = f"{record['url']}{HEALTH_PATH}"
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own http URL
            answer = json.loads(response.read())
    except (OSError, ValueError):
        return None
    if not isinstance(answer, dict) or answer.get("server") != SERVER_NAME:
        return None
    return answer if answer.get("pid") == record["pid"] else None


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
        raise PhasedoitError("local endpoint needs moto's server: pip install 'moto[server]'")


def idle_timeout_from_env() -> float:
    value = os.environ.get(IDLE_TIMEOUT_ENV)
    if value is None:
        return DEFAULT_IDLE_TIMEOUT
    try:
        return float(value)
    except ValueError:
        raise PhasedoitError(f"{IDLE_TIMEOUT_ENV}: expected a number of seconds, got {value!r}") from None


def _start(paths: Paths) -> str:
    _require_moto()
    argv = [sys.executable, "-m", "phasedoit.local", "serve", "--state-dir", str(paths.dir.parent)]
    argv += ["--idle-timeout", str(idle_timeout_from_env())]
    env = dict(os.environ)
    # the server must import this very package, installed or not, whatever the working directory
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    with paths.log.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = _wait_until_ready(paths, process)
    sys.stderr.write(f"local endpoint: started at {url} (stop it with `phasedoit local stop`)\n")
    # reap it when it exits while we still run, so that it does not linger as a zombie
    threading.Thread(target=process.wait, daemon=True).start()
    return url


def _wait_until_ready(paths: Paths, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PhasedoitError(
                f"local endpoint exited at start (status {process.returncode}); see {paths.log}"
            )
        record = read_json(paths.endpoint)
        if record is not None and record.get("pid") == process.pid and _health(record) is not None:
            return str(record["url"])
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise PhasedoitError(f"local endpoint did not start within {START_TIMEOUT:.0f} s; see {paths.log}")


# ---------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phasedoit local", description="the embedded local endpoint")
    parser.add_argument("--state-dir", type=Path, default=Path(".phasedoit"))
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="is it running, where, how much state")
    stop = commands.add_parser("stop", help="stop it now (its stacks are saved)")
    serve_parser = commands.add_parser("serve", help="run the server in the foreground (used internally)")
    serve_parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT)
    for command in (status, stop, serve_parser):  # accepted after the subcommand too
        command.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        return _run_command(args)
    except PhasedoitError as error:
        print(error, file=sys.stderr)
        return 1


def _run_command(args: argparse.Namespace) -> int:
    if args.command == "serve":
        # the environment beats the flag, so that tests can shorten it for servers started for them
        timeout = idle_timeout_from_env() if IDLE_TIMEOUT_ENV in os.environ else args.idle_timeout
        from phasedoit import local_server  # moto, only in the server's own process

        return local_server.serve(args.state_dir, timeout)
    if args.command == "stop":
        stopped = stop_endpoint(args.state_dir)
        print("local endpoint: stopped" if stopped else "local endpoint: not running")
        return 0
    print(format_status(endpoint_status(args.state_dir)))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter teardown: unloading moto's modules takes ~0.4 s and the server has nothing
    # left to finalize (its files are written and fsynced), so `stop` returns at once
    os._exit(code)
