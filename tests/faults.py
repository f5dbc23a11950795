"""A CloudFormation fault layer: an HTTP proxy in front of moto's real server, run as a thread of the test.

`doit` subprocesses reach it over HTTP with the real boto3 client (AWS_ENDPOINT_URL); the test drives it
through a small Python API. It behaves like CloudFormation where moto does not:

- always: a create moto refuses half-way rolls back (ROLLBACK_COMPLETE, the reason in the events) instead
  of leaving moto's stuck stack; an update of tags alone is applied; "No updates" answers what changes
  nothing; ListImports works; an export in use cannot be deleted or changed (tests/faults_cfn.py);
- a slow network (the answer to a write held for a while, as `slow_proxy` did).

It records every call: action, stack name, start, end, outcome and ClientRequestToken.
"""

from __future__ import annotations

import select
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
from mypy_boto3_cloudformation import CloudFormationClient

from tests.faults_cfn import WRITES, CloudFormation, Request
from tests.faults_wire import Answer, decode, forward, stack_name

SLOW_ACTIONS = frozenset(WRITES)
TOGETHER_LIMIT = 30.0  # calls held for others that never come go on after this
HTML_500 = (
    b"<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n"
    b"<h1>Internal Server Error</h1>\n<p>The server encountered an internal error.</p>\n"
)


@dataclass(frozen=True)
class Call:
    action: str
    stack: str
    start: float
    end: float
    outcome: str = "ok"  # "ok", "<Code>: <Message>", "html 500", "abandoned"
    token: str = ""  # its ClientRequestToken


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
    held: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    meeting: Meeting | None = None
    # one CloudFormation request at a time: moto's server is not thread-safe
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.cloud = CloudFormation(self.upstream)

    # ---- what the test sees -----------------------------------------------------------------------

    def client(self) -> CloudFormationClient:
        """A boto3 client of the layer, as a user's AWS CLI would reach it."""
        return boto3.client(
            "cloudformation",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

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

    def together(self, action: str, *stacks: str) -> None:
        """Hold the `action` requests on these stacks until all of them have come (at most TOGETHER_LIMIT).

        Calls that a concurrent client makes are then in flight at once, by construction, not by timing.
        """
        with self.lock:
            self.meeting = Meeting(action, frozenset(stacks))

    def latency(self, seconds: float, *actions: str) -> None:
        """Hold the answers to these actions (every write without any) this long: a slow network."""
        for action in actions or SLOW_ACTIONS:
            self.held[action] = seconds

    # ---- serving ----------------------------------------------------------------------------------

    def serve(self, handler: BaseHTTPRequestHandler, body: bytes, form: dict[str, str]) -> str:
        """Answer one request (or not): the outcome recorded for it."""
        action, stack = form.get("Action", handler.path), stack_name(form.get("StackName", ""))
        meeting = self.meeting
        if meeting is not None and action == meeting.action and stack in meeting.stacks:
            meeting.arrive(stack)
        time.sleep(self.held.get(action, 0.0))
        if self.held.get(action) and _abandoned(handler.connection):
            return "abandoned"  # the caller is gone (killed mid-call): the request never reaches moto
        return _send(handler, self._answer(handler, body, form))

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


def _is_cloudformation(handler: BaseHTTPRequestHandler) -> bool:
    scope = handler.headers.get("Authorization", "").split("Credential=", 1)[-1].split(",", 1)[0].split("/")
    return len(scope) == 5 and scope[3] == "cloudformation"


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


@contextmanager
def running_layer(upstream: str) -> Iterator[Layer]:
    """The layer in front of `upstream` (moto's server), on a free loopback port, for the `with` block."""
    layer = Layer(upstream)

    class Handler(BaseHTTPRequestHandler):
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
        server.shutdown()
        server.server_close()
