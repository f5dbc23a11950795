"""The embedded local CloudFormation endpoint: moto's server, started on demand and reused across runs.

Client side (`ensure_endpoint`, `stop_endpoint`, `endpoint_status`) runs in doit's processes and imports
neither boto3 nor moto. Server side (`serve`) runs in its own detached process: moto's WSGI app behind a
middleware that serializes requests, records the time of the last one, and snapshots the stacks after
every mutating CloudFormation request so that they come back after a restart.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import fcntl
import importlib.util
import io
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
from collections.abc import Callable, Iterable, Iterator
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
SNAPSHOT_VERSION = 1
# CloudFormation actions that never change state; every other action is followed by a snapshot.
READ_PREFIXES = ("Describe", "List", "Get", "Validate", "Estimate", "Detect")
WARM_AUTH = (
    "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/cloudformation/aws4_request, "
    "SignedHeaders=host, Signature=0"
)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


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


def stop_endpoint(state_dir: Path) -> bool:
    """Stop the local endpoint now; True if one was running."""
    paths = local_paths(state_dir)
    if not paths.dir.exists():
        return False
    with _locked(paths):
        record = _read_json(paths.endpoint)
        if record is None or _live_url(paths) is None:
            paths.endpoint.unlink(missing_ok=True)  # stale: its process is gone or is not ours
            return False
        _terminate(int(record["pid"]))
        _remove_record(paths, int(record["pid"]))
        return True


def endpoint_status(state_dir: Path) -> EndpointStatus:
    paths = local_paths(state_dir)
    saved = paths.snapshot.stat().st_size if paths.snapshot.exists() else 0
    record = _read_json(paths.endpoint)
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
    snapshot = _read_json(paths.snapshot)
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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
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
    record = _read_json(paths.endpoint)
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


def _remove_record(paths: Paths, pid: int) -> None:
    # only our own record: a successor may already have written its own
    record = _read_json(paths.endpoint)
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
        record = _read_json(paths.endpoint)
        if record is not None and record.get("pid") == process.pid and _health(record) is not None:
            return str(record["url"])
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise PhasedoitError(f"local endpoint did not start within {START_TIMEOUT:.0f} s; see {paths.log}")


# ---------------------------------------------------------------------------------------------- server


def _cloudformation_backends() -> Any:
    from moto.cloudformation.models import cloudformation_backends

    return cloudformation_backends


def _moto_random() -> Any:
    # moto is imported by the server process only: it is optional, and slow to import (~0.7 s)
    from moto.moto_api._internal import mock_random

    return mock_random


def _fresh_seed(seed: int | None = None) -> int:
    seed = int.from_bytes(os.urandom(8), "big") if seed is None else seed
    _moto_random().seed(seed)
    return seed


def _live_stacks() -> Iterator[Any]:
    for regions in _cloudformation_backends().values():
        for backend in regions.values():
            yield from backend.stacks.values()


class Snapshots:
    """The stacks of every account and region, saved as one bounded file: one entry per live stack."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # moto's random is seeded before each CreateStack; replaying the seed on restore gives the
        # same stack id and the same generated resource names, hence the same outputs and exports
        self.seeds: dict[str, int] = {}
        self.written = b""
        self.count = 0

    def entries(self) -> list[dict[str, Any]]:
        stacks = [stack for stack in _live_stacks() if isinstance(stack.template, str)]
        # a change set's placeholder (REVIEW_IN_PROGRESS) has no template yet: nothing to restore
        stacks.sort(key=lambda stack: stack.creation_time)  # exporters were created before importers
        return [self._entry(stack) for stack in stacks]

    def _entry(self, stack: Any) -> dict[str, Any]:
        return {
            "account": stack.account_id,
            "region": stack.region_name,
            "name": stack.name,
            "template": stack.template,
            "parameters": dict(stack.parameters),
            "tags": dict(stack.tags),
            "notification_arns": list(stack.notification_arns),
            "role_arn": stack.role_arn,
            "termination_protection": bool(stack.enable_termination_protection),
            "timeout_in_minutes": stack.timeout_in_minutes,
            "policy": stack.policy,
            "status": stack.status,
            "created": stack.creation_time.isoformat(),
            "seed": self.seeds.get(stack.stack_id),
        }

    def save(self) -> None:
        entries = self.entries()
        data = {"version": SNAPSHOT_VERSION, "stacks": entries}
        encoded = json.dumps(data, sort_keys=True).encode()
        self.count = len(entries)
        if encoded != self.written:  # most mutations of a deploy leave nothing new to write
            _write_json(self.path, data)
            self.written = encoded

    @contextmanager
    def seeded_create(self) -> Iterator[list[str]]:
        """Around a CreateStack: remember the seed of the stack(s) it creates; yields their ids."""
        before = {stack.stack_id for stack in _live_stacks()}
        created: list[str] = []
        seed = _fresh_seed()
        try:
            yield created
        finally:
            created += [stack.stack_id for stack in _live_stacks() if stack.stack_id not in before]
            self.seeds.update(dict.fromkeys(created, seed))
            _fresh_seed()  # what follows must not repeat what follows the restored create

    def restore(self) -> int:
        data = _read_json(self.path)
        if data is None or data.get("version") != SNAPSHOT_VERSION:
            if self.path.exists():
                print(f"{self.path.name}: unreadable or of another version, not restored", flush=True)
            return 0
        for entry in data["stacks"]:
            self._restore_one(entry)
        _fresh_seed()
        self.save()
        return len(data["stacks"])

    def _restore_one(self, entry: dict[str, Any]) -> None:
        backend = _cloudformation_backends()[entry["account"]][entry["region"]]
        # a stack created from a change set has no seed yet: it gets one now, stable from then on
        seed = _fresh_seed() if entry["seed"] is None else _fresh_seed(entry["seed"])
        try:
            backend.create_stack(
                name=entry["name"],
                template=entry["template"],
                parameters=entry["parameters"],
                notification_arns=entry["notification_arns"],
                tags=entry["tags"],
                role_arn=entry["role_arn"],
                enable_termination_protection=entry["termination_protection"],
                timeout_in_mins=entry["timeout_in_minutes"],
                stack_policy_body=entry["policy"],
            )
        except Exception as error:  # moto refuses it as it did before the restart: restore the rest
            print(f"restore {entry['name']} ({entry['region']}): {type(error).__name__}: {error}", flush=True)
        # a create refused by moto still leaves its stack (stuck in CREATE_IN_PROGRESS), as before
        for stack in backend.stacks.values():
            if stack.name == entry["name"]:
                stack.status = entry["status"]
                stack.creation_time = datetime.datetime.fromisoformat(entry["created"])
                self.seeds[stack.stack_id] = seed


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again
    return body


def cloudformation_action(environ: dict[str, Any], body: bytes) -> str | None:
    """The action of a CloudFormation (query protocol) request, None for any other request."""
    scope = environ.get("HTTP_AUTHORIZATION", "").split("Credential=", 1)[-1].split(",", 1)[0].split("/")
    if len(scope) != 5 or scope[3] != "cloudformation":
        return None
    actions = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action")
    return actions[0] if actions else None


class Gate:
    """WSGI middleware in front of moto: one request at a time, idle clock, snapshot after mutations."""

    def __init__(self, app: WsgiApp, snapshots: Snapshots) -> None:
        self.app = app
        self.snapshots = snapshots
        # moto is not thread-safe (HTML 500 "OrderedDict mutated during iteration" under parallel
        # clients); a request takes 10-15 ms, so one at a time costs little and removes the race
        self.lock = threading.Lock()
        self.last_request = time.monotonic()
        self.started = time.time()
        self.stopping = False

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        self.last_request = time.monotonic()
        if environ.get("PATH_INFO") == HEALTH_PATH:
            return self._health(start_response)
        body = _read_body(environ)
        action = cloudformation_action(environ, body)
        with self.lock:
            if self.stopping:
                return _respond(start_response, "503 Service Unavailable", b"local endpoint is stopping")
            response = self._dispatch(environ, start_response, action)
            self.last_request = time.monotonic()
        return response

    def _dispatch(
        self, environ: dict[str, Any], start_response: StartResponse, action: str | None
    ) -> list[bytes]:
        if action != "CreateStack":
            body = _call(self.app, environ, start_response)
        else:
            statuses: list[str] = []

            def recording_start_response(status: str, *args: Any) -> Any:
                statuses.append(status)
                return start_response(status, *args)

            with self.snapshots.seeded_create() as created:
                body = _call(self.app, environ, recording_start_response)
            if statuses and statuses[-1].startswith(("4", "5")):
                discard_stacks(created)
        if action is not None and not action.startswith(READ_PREFIXES):
            # also after a refused request: moto may have left a stack behind anyway
            self.snapshots.save()
        return body

    def _health(self, start_response: StartResponse) -> list[bytes]:
        answer = {"server": SERVER_NAME, "pid": os.getpid(), "started": self.started}
        answer["stacks"] = self.snapshots.count
        if self.stopping:
            return _respond(start_response, "503 Service Unavailable", b"local endpoint is stopping")
        return _respond(start_response, "200 OK", json.dumps(answer).encode(), "application/json")

    def idle_for(self) -> float:
        return time.monotonic() - self.last_request

    def stop_if_idle(self, timeout: float) -> bool:
        with self.lock:  # decided between requests, never during one
            self.stopping = self.stopping or self.idle_for() >= timeout
            return self.stopping

    def stop(self) -> None:
        with self.lock:
            self.stopping = True


def discard_stacks(stack_ids: list[str]) -> None:
    """Forget the stacks of a refused CreateStack.

    moto refuses a missing export at once but keeps the stack, stuck in CREATE_IN_PROGRESS: a retry
    gets AlreadyExists, and when an output refers to the failed resource, every DescribeStacks (its
    outputs are computed on each call) is an HTML 500, for every stack and every parallel deploy.
    """
    for regions in _cloudformation_backends().values():
        for backend in regions.values():
            for stack_id in stack_ids:
                backend.stacks.pop(stack_id, None)
            for name, export in list(backend.exports.items()):
                if export.exporting_stack_id in stack_ids:
                    del backend.exports[name]


def _call(app: WsgiApp, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    result = app(environ, start_response)
    try:
        return list(result)  # drained inside the lock: moto may build the body lazily
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def _respond(
    start_response: StartResponse, status: str, body: bytes, kind: str = "text/plain"
) -> list[bytes]:
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]


def _warm(app: WsgiApp) -> None:
    """One CloudFormation call in-process: moto loads its backends and Flask app on the first one."""
    from werkzeug.test import Client

    body = "Action=ListStacks&Version=2010-05-15"
    headers = {"Authorization": WARM_AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    response = Client(app).post("/", data=body, headers=headers)
    if response.status_code != 200:
        print(f"warm-up ListStacks answered {response.status_code}", flush=True)


def serve(state_dir: Path, idle_timeout: float) -> int:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *args: object) -> None:
            pass  # one line per request would grow the log without bound

    paths = local_paths(state_dir)
    paths.dir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    snapshots = Snapshots(paths.snapshot)
    gate = Gate(DomainDispatcherApplication(create_backend_app), snapshots)
    # port 0: the kernel picks a free port, no race between choosing and binding
    server = make_server(HOST, 0, gate, threaded=True, request_handler=QuietHandler)
    restored = snapshots.restore()
    _warm(gate.app)
    url = f"http://{HOST}:{server.server_port}"
    print(f"{url}: restored {restored} stacks, ready in {time.monotonic() - began:.2f} s", flush=True)
    return _run(server, gate, paths, url, idle_timeout)


def _run(server: Any, gate: Gate, paths: Paths, url: str, idle_timeout: float) -> int:
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stopped.set())
    # short poll: `stop` should take a blink, not serve_forever's default half second
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    gate.last_request = time.monotonic()
    _write_json(paths.endpoint, {"url": url, "pid": os.getpid(), "started": gate.started})
    try:
        while not stopped.wait(0.1):
            if gate.stop_if_idle(idle_timeout):
                print(f"idle for {idle_timeout:g} s: stopping", flush=True)
                break
    finally:
        gate.stop()
        _remove_record(paths, os.getpid())
        server.shutdown()
        server.server_close()
    return 0


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
        return serve(args.state_dir, timeout)
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
