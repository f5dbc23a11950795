"""The local endpoint's server process: moto's WSGI app behind a middleware of phasedoit's.

The middleware serializes requests (moto is not thread-safe), records the time of the last one (for the
idle stop), and snapshots the stacks after every mutating CloudFormation request so that they come back
after a restart. Started by `local.ensure_endpoint` as `python -m phasedoit.local serve`.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from phasedoit.local import (
    HEALTH_PATH,
    HOST,
    SERVER_NAME,
    Paths,
    local_paths,
    read_json,
    remove_record,
    write_json,
)

SNAPSHOT_VERSION = 1
# CloudFormation actions that never change state; every other action is followed by a snapshot.
READ_PREFIXES = ("Describe", "List", "Get", "Validate", "Estimate", "Detect")
WARM_AUTH = (
    "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/cloudformation/aws4_request, "
    "SignedHeaders=host, Signature=0"
)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


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
            write_json(self.path, data)
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
        data = read_json(self.path)
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
        if action in ("UpdateStack", "ExecuteChangeSet"):
            sync_exports()
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


def sync_exports() -> None:
    """Register the exports the stacks have now.

    moto registers exports when it creates a stack only: after an update that adds or renames an
    export, importing it fails with "No export named ...", and a removed export stays importable.
    """
    for regions in _cloudformation_backends().values():
        for backend in regions.values():
            exports: dict[str, Any] = {}
            for stack in list(backend.stacks.values()):
                if stack.status == "DELETE_COMPLETE":
                    continue
                try:
                    exports |= {export.name: export for export in stack.exports}
                except Exception:  # moto cannot compute its outputs: keep what it had registered
                    exports |= {
                        n: e for n, e in backend.exports.items() if e.exporting_stack_id == stack.stack_id
                    }
            backend.exports.clear()
            backend.exports.update(exports)


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
    write_json(paths.endpoint, {"url": url, "pid": os.getpid(), "started": gate.started})
    try:
        while not stopped.wait(0.1):
            if gate.stop_if_idle(idle_timeout):
                print(f"idle for {idle_timeout:g} s: stopping", flush=True)
                break
    finally:
        gate.stop()
        remove_record(paths, os.getpid())
        server.shutdown()
        server.server_close()
    return 0
