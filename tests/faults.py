"""A CloudFormation fault layer: an HTTP proxy in front of moto's real server, run as a thread of the test.

`doit` subprocesses reach it over HTTP with the real boto3 client (AWS_ENDPOINT_URL); the test drives it
through a small Python API. It behaves like CloudFormation where moto does not:

- always: a create moto refuses half-way rolls back (ROLLBACK_COMPLETE, the reason in the events) instead
  of leaving moto's stuck stack; an update of tags alone is applied; "No updates" answers what changes
  nothing; ListImports works; an export in use cannot be deleted or changed (tests/faults_cfn.py);
- scripted, per stack and action: operations that take time, resource failures that roll back, rollbacks
  and deletes that fail, another actor's operation, a status set by hand;
- transport faults: dropped connections, 5xx XML errors, HTML error pages, stalls, throttling, and a
  5xx answered after the write was applied;
- a slow network (the answer to a write held for a while, as `slow_proxy` did), and calls held until
  others come (`together`), so that concurrent calls overlap by construction.

It records every call: action, stack name, start, end, outcome and ClientRequestToken.
"""

from __future__ import annotations

import select
import socket
import threading
import time
import traceback
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import botocore.config
from mypy_boto3_cloudformation import CloudFormationClient

from tests.faults_cfn import WRITES, CloudFormation, Duration, Failure, Request
from tests.faults_wire import Answer, decode, error, forward, stack_name
from tests.recording import pass_on

SLOW_ACTIONS = frozenset(WRITES)
FAULTS = ("drop", "error", "html", "stall", "throttle", "after_write")
HTML_500 = (
    b"<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n"
    b"<h1>Internal Server Error</h1>\n<p>The server encountered an internal error.</p>\n"
)
TOGETHER_LIMIT = 30.0  # calls held for others that never come go on after this
STALL_LIMIT = 300.0  # a stalled request is released at the end of its test, or after this at worst
SERVER_ERRORS = {500: "InternalFailure", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}


@dataclass(frozen=True)
class Call:
    action: str
    stack: str
    start: float
    end: float
    outcome: str = "ok"  # "ok", "<Code>: <Message>", "html 500", "dropped", "stalled", "abandoned"
    token: str = ""  # its ClientRequestToken


@dataclass
class Fault:
    kind: str
    times: int | None  # None: every matching request
    action: str | None
    stack: str | None
    status: int

    def matches(self, action: str, stack: str) -> bool:
        return self.action in (None, action) and self.stack in (None, stack) and self.times != 0


@dataclass
class Meeting:
    action: str
    stacks: frozenset[str]
    arrived: set[str] = field(default_factory=set)
    all_came: threading.Condition = field(default_factory=threading.Condition)

    def arrive(self, stack: str) -> None:
        with self.all_came:
            self.arrived.add(stack)
            self.all_came.notify_all()
            self.all_came.wait_for(lambda: self.arrived >= self.stacks, TOGETHER_LIMIT)


@dataclass
class Layer:
    upstream: str
    url: str = ""
    calls: list[Call] = field(default_factory=list)
    cloud: CloudFormation = field(init=False)
    faults: list[Fault] = field(default_factory=list)
    held: dict[tuple[str, str | None], float] = field(default_factory=dict)  # (action, stack or any)
    errors: list[str] = field(default_factory=list)
    meeting: Meeting | None = None
    # a write's answer by its ClientRequestToken: CloudFormation does a retried write once, as moto does not
    done: dict[tuple[str, str], Answer] = field(default_factory=dict)
    # one CloudFormation request at a time: moto's server is not thread-safe
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.cloud = CloudFormation(self.upstream)

    # ---- what the test sees -----------------------------------------------------------------------

    def client(self) -> CloudFormationClient:
        """A boto3 client of the layer, as a user's AWS CLI would reach it."""
        return cloudformation_client(self.url)

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.action in SLOW_ACTIONS]

    def written(self) -> list[tuple[str, str]]:
        """(action, stack) of every write call so far, in the order they ended; then forget every call."""
        written = [(c.action, c.stack) for c in sorted(self.writes(), key=lambda c: c.end)]
        self.calls.clear()
        return written

    def outcomes(self, *actions: str) -> list[tuple[str, str, str]]:
        """(action, stack, outcome) of the calls of these actions (all calls without any), in order."""
        return [(c.action, c.stack, c.outcome) for c in self.calls if not actions or c.action in actions]

    # ---- scripts ----------------------------------------------------------------------------------

    def duration(self, seconds: float, *actions: str, stack: str | None = None) -> None:
        """Operations of these actions (every write without any) stay *_IN_PROGRESS this long."""
        with self.lock:
            self.cloud.durations.append(Duration(seconds, actions, stack))

    def resource_fails(
        self,
        stack: str,
        action: str,
        resource: str,
        reason: str,
        *,
        rollback_fails: str | None = None,
        rollback_resource: str | None = None,
    ) -> None:
        """The next `action` on `stack` fails at `resource` with `reason`.

        CreateStack ends in ROLLBACK_COMPLETE, UpdateStack in UPDATE_ROLLBACK_COMPLETE without the update
        (or UPDATE_ROLLBACK_FAILED, when `rollback_fails` gives the reason the rollback failed at
        `rollback_resource`), DeleteStack in DELETE_FAILED, and again at every delete until one retains
        the resource (RetainResources).
        """
        assert action in WRITES, action
        with self.lock:
            self.cloud.failures.append(
                Failure(stack, action, resource, reason, rollback_resource, rollback_fails)
            )

    def other_actor(self, stack: str, status: str, seconds: float, then: str | None = None) -> None:
        """Another actor's operation on `stack`: `status` for `seconds`, then `then`.

        The seconds run from the first request that names the stack (a listing shows it under way
        before), so that a doit run, however slow to start, finds it under way. `then` defaults to the
        matching *_COMPLETE; DELETE_COMPLETE (the default after DELETE_IN_PROGRESS) deletes the stack.
        """
        with self.lock:
            self.cloud.other_actor(stack, status, seconds, then)

    def set_status(self, stack: str, status: str, reason: str | None = None) -> None:
        """The stack shows this status (any string, even one CloudFormation never uses) until its next write."""
        with self.lock:
            self.cloud.set_status(stack, status, reason)

    def review_in_progress(self, stack: str, tags: dict[str, str] | None = None) -> None:
        """A stack in REVIEW_IN_PROGRESS: another actor's change set of type CREATE, not executed."""
        with self.lock:
            self.cloud.review_in_progress(stack, tags or {})

    def fault(
        self,
        kind: str,
        *,
        times: int | None = 1,
        action: str | None = None,
        stack: str | None = None,
        status: int = 500,
    ) -> None:
        """A transport fault for the next `times` requests (every one for None) of `action` on `stack`.

        drop: the connection closes with no answer; error: an XML error with HTTP `status` (5xx);
        html: an HTML 500 page; stall: no answer until the test ends; throttle: HTTP 400 Throttling
        "Rate exceeded"; after_write: the request reaches moto, then the answer is an XML 500.
        """
        assert kind in FAULTS, kind
        self.faults.append(Fault(kind, times, action, stack, status))

    def together(self, action: str, *stacks: str) -> None:
        """Hold the `action` requests on these stacks until all of them have come (at most TOGETHER_LIMIT).

        Calls that a concurrent client makes are then in flight at once, by construction, not by timing.
        """
        with self.lock:
            self.meeting = Meeting(action, frozenset(stacks))

    def latency(self, seconds: float, *actions: str, stack: str | None = None) -> None:
        """Hold the answers to these actions (every write without any) this long: a slow network.

        With `stack`, only those on that stack, which then ignore the hold given for every stack.
        """
        for action in actions or SLOW_ACTIONS:
            self.held[(action, stack)] = seconds

    def settle(self) -> None:
        """Wait until every scripted operation has ended, and apply what ends them."""
        with self.lock:
            busy_until = self.cloud.busy_until()
        time.sleep(max(0.0, busy_until - time.time()))
        with self.lock:
            self.cloud.tick(time.time())

    # ---- serving ----------------------------------------------------------------------------------

    def serve(self, handler: BaseHTTPRequestHandler, body: bytes, form: dict[str, str]) -> str:
        """Answer one request (or not): the outcome recorded for it."""
        action, stack = form.get("Action", handler.path), stack_name(form.get("StackName", ""))
        fault = self._take_fault(action, stack)
        kind = fault.kind if fault else ""
        if kind in ("drop", "stall"):
            if kind == "stall":
                self.released.wait(STALL_LIMIT)
            handler.close_connection = True
            return "stalled" if kind == "stall" else "dropped"
        if fault is not None and kind != "after_write":
            return _send(handler, _fault_answer(fault))
        meeting = self.meeting
        if meeting is not None and action == meeting.action and stack in meeting.stacks:
            meeting.arrive(stack)
        hold = self.held.get((action, stack), self.held.get((action, None), 0.0))
        time.sleep(hold)
        if hold and _abandoned(handler.connection):
            handler.close_connection = True
            return "abandoned"  # the caller is gone (killed mid-call): the request never reaches moto
        token = (action, form.get("ClientRequestToken", ""))
        if token[1] and token in self.done:
            return _send(handler, self.done[token])
        answer = self._answer(handler, body, form)
        if token[1] and action in SLOW_ACTIONS and answer.status < 300:
            self.done[token] = answer
        if kind == "after_write":
            _send(handler, error(SERVER_ERRORS[500], "An internal error occurred.", 500))
            return f"500 after {_outcome(answer)}"
        return _send(handler, answer)

    def _answer(self, handler: BaseHTTPRequestHandler, body: bytes, form: dict[str, str]) -> Answer:
        headers = dict(handler.headers.items())
        if not form:
            return forward(self.upstream, handler.path, body, headers)
        with self.lock:
            try:
                return self.cloud.handle(Request(handler.path, body, headers, form))
            except Exception:
                self.errors.append(traceback.format_exc())
                return Answer(500, HTML_500, "text/html")

    def _take_fault(self, action: str, stack: str) -> Fault | None:
        with self.lock:
            fault = next((f for f in self.faults if f.matches(action, stack)), None)
            if fault is not None and fault.times is not None:
                fault.times -= 1
            return fault


def _is_cloudformation(handler: BaseHTTPRequestHandler) -> bool:
    scope = handler.headers.get("Authorization", "").split("Credential=", 1)[-1].split(",", 1)[0].split("/")
    return len(scope) == 5 and scope[3] == "cloudformation"


def _fault_answer(fault: Fault) -> Answer:
    if fault.kind == "html":
        return Answer(500, HTML_500, "text/html")
    if fault.kind == "throttle":
        return error("Throttling", "Rate exceeded", 400)
    return error(
        SERVER_ERRORS.get(fault.status, "InternalFailure"), "An internal error occurred.", fault.status
    )


def _send(handler: BaseHTTPRequestHandler, answer: Answer) -> str:
    handler.send_response(answer.status)
    handler.send_header("Content-Type", answer.content_type)
    handler.send_header("Content-Length", str(len(answer.body)))
    handler.end_headers()
    handler.wfile.write(answer.body)
    return _outcome(answer)


def _outcome(answer: Answer) -> str:
    if answer.status < 300:
        return "ok"
    found = answer.error()
    return f"{found[0]}: {found[1]}" if found else f"html {answer.status}"


def _abandoned(connection: socket.socket) -> bool:
    readable, _, _ = select.select([connection], [], [], 0)
    return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""


def cloudformation_client(url: str, config: botocore.config.Config | None = None) -> CloudFormationClient:
    """A boto3 CloudFormation client of a moto server or a layer, with the tests' fake credentials."""
    return boto3.client(
        "cloudformation",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


@contextmanager
def running_layer(upstream: str, *, keep_alive: bool = False) -> Iterator[Layer]:
    """The layer in front of `upstream` (moto's server), on a free loopback port, for the `with` block.

    `keep_alive`: keep connections open between requests, as CloudFormation's endpoints do (a client's
    pool then reuses them: what a client shared across a fork would get wrong, and what benches pay).
    """
    layer = Layer(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
        disable_nagle_algorithm = True  # or an answer's body waits 40 ms for the ACK of its headers

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            form = decode(body) if _is_cloudformation(self) else {}
            start = time.monotonic()
            outcome = layer.serve(self, body, form)
            call = Call(
                form.get("Action", self.path),
                stack_name(form.get("StackName", "")),
                start,
                time.monotonic(),
                outcome,
                form.get("ClientRequestToken", ""),
            )
            layer.calls.append(call)

        def _pass_on(self) -> None:
            """S3's REST calls (code artifacts) are not CloudFormation's: passed on to moto as they are."""
            if (
                self.headers.get("Expect", "").lower() == "100-continue"
                and self.protocol_version < "HTTP/1.1"
            ):
                # as S3 does (http.server does it only when it speaks HTTP/1.1): else botocore waits a
                # second for it before it sends each upload's body
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.wfile.flush()
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            pass_on(self, urllib.parse.urlsplit(layer.upstream), body)

        do_GET = do_PUT = do_HEAD = do_DELETE = _pass_on

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    layer.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield layer
        assert not layer.errors, "the fault layer failed:\n" + "\n".join(layer.errors)
    finally:
        layer.released.set()
        server.shutdown()
        server.server_close()
