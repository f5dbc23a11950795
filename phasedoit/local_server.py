"""The local endpoint's server process: moto's WSGI app behind phasedoit's gate.

The gate refuses every request not signed with the endpoint's credentials (local_auth) and moto's own
`/moto-api/`; serializes requests (moto is not thread-safe); mends moto's CloudFormation where it differs
from CloudFormation (local_cloudformation); turns moto's crashes (an HTML 500 without the gate) into AWS
errors that name the request's stack, the resource when known, moto's message and the log; records the time
of the last request (for the idle stop); and snapshots the stacks after every mutating CloudFormation request
(local_snapshot). Started by `local.ensure_endpoint` as `python -m phasedoit.local_server serve`.
"""

from __future__ import annotations

import argparse
import datetime
import hmac
import io
import json
import os
import secrets
import signal
import sys
import threading
import time
import traceback
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from phasedoit import local_objects
from phasedoit.errors import PhasedoitError
from phasedoit.local import (
    DEFAULT_IDLE_TIMEOUT,
    HEALTH_PATH,
    HOST,
    IDLE_TIMEOUT_ENV,
    SERVER_NAME,
    TYPES_PATH,
    Credentials,
    Paths,
    credentials,
    idle_timeout_from_env,
    local_paths,
    moto_types,
    remove_record,
)
from phasedoit.local_auth import MOTO_API, Refusal, error_response, signing_service, verify
from phasedoit.local_cloudformation import Answer, Call, Crash, handle, is_read, rewrite_template
from phasedoit.local_exports import discard_stacks
from phasedoit.local_files import private_dir, secure_files, write_json
from phasedoit.local_sam import SamError
from phasedoit.local_snapshot import Snapshots, moto_error_text

WARM_KEY = "PDLKWARMUPWARMUPWARM"
DONE_KEPT = 1000  # the warm-up call goes to moto directly, not through the gate

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    body: bytes
    if length > 0:
        body = stream.read(length)
    elif environ.get("wsgi.input_terminated"):  # chunked: the server ends the stream for us
        body = stream.read()
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again
    return body


def cloudformation_call(environ: dict[str, Any], body: bytes, key_id: str) -> Call | None:
    """The request as a CloudFormation call, None for any other service."""
    if signing_service(environ) != "cloudformation":
        return None
    pairs = urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if "x-www-form-urlencoded" in str(environ.get("CONTENT_TYPE", "")):
        pairs += urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    scope = environ.get("HTTP_AUTHORIZATION", "").split("Credential=", 1)[-1].split("/")
    region = scope[2] if len(scope) > 2 else "us-east-1"
    return Call(environ, pairs, _account(environ, key_id), region)


def _account(environ: dict[str, Any], key_id: str) -> str:
    """The account moto serves this request from, chosen as moto chooses it."""
    chosen = environ.get("HTTP_X_MOTO_ACCOUNT_ID") or os.environ.get("MOTO_ACCOUNT_ID")
    if chosen:
        return str(chosen)
    from moto.iam.models import get_account_id_from

    return str(get_account_id_from(key_id))


class Gate:
    """WSGI middleware in front of moto: the owner's requests only, one at a time, moto's gaps mended."""

    def __init__(
        self,
        app: WsgiApp,
        snapshots: Snapshots,
        owner: Credentials,
        token: str,
        log: Path,
        *,
        objects: local_objects.Objects | None = None,
    ) -> None:
        self.app = app
        self.snapshots = snapshots
        self.objects = objects  # the S3 objects the stacks' code comes from, saved with them
        self.owner = owner
        self.token = token
        self.log = log
        # moto is not thread-safe (HTML 500 "OrderedDict mutated during iteration" under parallel
        # clients); a request takes 10-15 ms, so one at a time costs little and removes the race
        self.lock = threading.Lock()
        self.last_request = time.monotonic()
        self.started = time.time()
        self.stopping = False
        # the answers to requests that carried a ClientRequestToken, for their retries
        self.done: OrderedDict[tuple[str | None, ...], Answer] = OrderedDict()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        self.last_request = time.monotonic()
        path = str(environ.get("PATH_INFO", ""))
        if path in (HEALTH_PATH, TYPES_PATH):
            return self._own_path(environ, start_response, path)
        if path == "/moto-api" or path.startswith("/moto-api/"):
            return self._refuse(environ, start_response, MOTO_API)
        body = _read_body(environ)
        refusal = verify(environ, body, self.owner, datetime.datetime.now(datetime.timezone.utc))
        if refusal is not None:
            return self._refuse(environ, start_response, refusal)
        call = cloudformation_call(environ, body, self.owner.access_key_id)
        with self.lock:
            if self.stopping:
                answer = Answer("503 Service Unavailable", [("Content-Type", "text/plain")], b"stopping")
            else:
                answer = self._dispatch(environ, call)
            self.last_request = time.monotonic()
        start_response(answer.status, answer.headers)
        return [answer.body]

    def _dispatch(self, environ: dict[str, Any], call: Call | None) -> Answer:
        if call is None:
            try:
                answer = self._forward_environ(environ)
            except Crash as crash:
                answer = self._crash_answer(environ, None, crash)
        else:
            token = call.get("ClientRequestToken")
            done = (call.account, call.region, call.action, call.get("StackName"), token)
            if token and done in self.done:
                return self.done[done]  # a retry of what was done: CloudFormation does it once
            try:
                answer = self._create(call) if call.action == "CreateStack" else handle(call, self._forward)
            except Crash as crash:
                answer = self._crash_answer(environ, call, crash)
            except SamError as error:  # as CloudFormation's transform refuses it
                answer = Answer(*error_response(environ, "400 Bad Request", "ValidationError", str(error)))
            if token and answer.ok:
                self.done[done] = answer
                while len(self.done) > DONE_KEPT:
                    self.done.popitem(last=False)
        if (call is not None and not is_read(call.action)) or self.snapshots.save_error is not None:
            # also after a refused request: moto may have left a stack behind anyway; and after any
            # request while the last save failed, so that the state is saved as soon as it can be
            self.snapshots.save()
            if self.objects is not None:
                self.objects.save()
        return answer

    def _create(self, call: Call) -> Answer:
        rewrite_template(call)  # as `handle` does for the other actions
        crash = None
        with self.snapshots.seeded_create() as created:
            try:
                answer = self._forward(call)
            except Crash as error:
                crash = error
        if crash is not None or not answer.ok:
            discard_stacks(created)  # CloudFormation creates nothing when it refuses a CreateStack
        if crash is not None:
            raise crash
        return answer

    def _forward(self, call: Call) -> Answer:
        return self._forward_environ(call.environ)

    def _forward_environ(self, environ: dict[str, Any]) -> Answer:
        """moto's answer, whole (drained inside the lock: moto may build the body lazily)."""
        started: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], *_: Any) -> Callable[[bytes], None]:
            started[:] = [status, headers]
            return lambda _data: None

        try:
            result = self.app(environ, capture)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception as error:  # moto's bug or gap, not ours: it becomes an answer
            raise Crash(error) from error
        return Answer(started[0], list(started[1]), body)

    def _crash_answer(self, environ: dict[str, Any], call: Call | None, crash: Crash) -> Answer:
        stack, resource = _where(crash.error.__traceback__)
        if call is not None:
            stack = call.get("StackName") or stack
        what = (
            call.action if call is not None else f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"
        )
        message = f"the local endpoint (moto) failed on {what}"
        if stack:
            message += f" of stack {stack}"
        if resource:
            message += f", resource {resource}"
        message += f": {moto_error_text(crash.error)}; see {self.log}"
        print(message, flush=True)
        traceback.print_exception(type(crash.error), crash.error, crash.error.__traceback__)
        # 400, not 500: the same request fails the same way, and SDKs retry a 500 up to ten times
        status, headers, body = error_response(environ, "400 Bad Request", "InternalFailure", message)
        return Answer(status, headers, body)

    def _refuse(
        self, environ: dict[str, Any], start_response: StartResponse, refusal: Refusal
    ) -> list[bytes]:
        status, headers, body = error_response(
            environ, "403 Forbidden", refusal.code, refusal.message, refusal.s3_code
        )
        start_response(status, headers)
        return [body]

    def _own_path(self, environ: dict[str, Any], start_response: StartResponse, path: str) -> list[bytes]:
        """phasedoit's own questions: they need the token of the endpoint's record (0600)."""
        given = str(environ.get("HTTP_X_PHASEDOIT_TOKEN", ""))
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            refusal = Refusal("AccessDenied", f"{path} needs the token of the endpoint's record")
            return self._refuse(environ, start_response, refusal)
        if self.stopping:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"local endpoint is stopping"]
        answer = self._health() if path == HEALTH_PATH else moto_types()
        body = json.dumps(answer).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def _health(self) -> dict[str, Any]:
        notice = self.snapshots.notice()
        return {
            "server": SERVER_NAME,
            "pid": os.getpid(),
            "started": self.started,
            "stacks": self.snapshots.count,
            "notices": [notice] if notice else [],
        }

    def idle_for(self) -> float:
        return time.monotonic() - self.last_request

    def stop_if_idle(self, timeout: float) -> bool:
        with self.lock:  # decided between requests, never during one
            self.stopping = self.stopping or self.idle_for() >= timeout
            return self.stopping

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            if self.snapshots.save_error is not None:
                self.snapshots.save()  # a last chance for what could not be saved


def _where(trace: TracebackType | None) -> tuple[str | None, str | None]:
    """The stack and the resource moto was working on when it raised, read from its frames."""
    stack_name = resource = None
    while trace is not None:
        local = trace.tb_frame.f_locals
        logical = local.get("logical_id")
        spec = local.get("resource_json")
        if isinstance(logical, str):
            kind = spec.get("Type") if isinstance(spec, dict) else None
            resource = f"{logical} ({kind})" if kind else logical
        for value in (local.get("self"), local.get("stack")):
            name = getattr(value, "name", None)
            if type(value).__name__ == "Stack" and isinstance(name, str):
                stack_name = name
        trace = trace.tb_next
    return stack_name, resource


def _warm(app: WsgiApp) -> None:
    """One CloudFormation call in-process: moto loads its backends and Flask app on the first one."""
    from werkzeug.test import Client

    body = "Action=ListStacks&Version=2010-05-15"
    auth = (
        f"AWS4-HMAC-SHA256 Credential={WARM_KEY}/20240101/us-east-1/cloudformation/aws4_request, "
        "SignedHeaders=host, Signature=0"
    )
    headers = {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}
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

    os.umask(0o077)  # whatever moto or this process writes is its owner's only
    paths = local_paths(state_dir)
    private_dir(paths.dir)
    secure_files(paths.dir)
    began = time.monotonic()
    owner = credentials(state_dir)
    snapshots = Snapshots(paths, owner.secret_access_key)
    token = secrets.token_urlsafe(24)
    objects = local_objects.Objects(paths.dir / "objects")
    gate = Gate(
        DomainDispatcherApplication(create_backend_app), snapshots, owner, token, paths.log, objects=objects
    )
    # port 0: the kernel picks a free port, no race between choosing and binding
    server = make_server(HOST, 0, gate, threaded=True, request_handler=QuietHandler)
    _warm(gate.app)
    objects.restore()  # before the stacks: their functions' code is there
    restored = snapshots.restore()
    url = f"http://{HOST}:{server.server_port}"
    print(f"{url}: restored {restored} stacks, ready in {time.monotonic() - began:.2f} s", flush=True)
    return _run(server, gate, paths, {"url": url, "token": token}, idle_timeout)


def _run(server: Any, gate: Gate, paths: Paths, record: dict[str, str], idle_timeout: float) -> int:
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stopped.set())
    # short poll: `stop` should take a blink, not serve_forever's default half second
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    gate.last_request = time.monotonic()
    write_json(paths.endpoint, {**record, "pid": os.getpid(), "started": gate.started})
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


def main(argv: list[str] | None = None) -> int:
    """`python -m phasedoit.local_server serve --state-dir D [--idle-timeout S]`, as `local` starts it."""
    parser = argparse.ArgumentParser(prog="phasedoit.local_server")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT)
    args = parser.parse_args(argv)
    # the environment beats the flag, so that tests can shorten it for servers started for them
    timeout = idle_timeout_from_env() if IDLE_TIMEOUT_ENV in os.environ else args.idle_timeout
    try:
        return serve(args.state_dir, timeout)
    except PhasedoitError as error:
        print(error, file=sys.stderr)
        return 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter teardown: unloading moto's modules takes ~0.4 s and the server has nothing left
    # to finalize (its files are written and fsynced)
    os._exit(code)
