"""A recording proxy in front of moto: every request (any method, any service) is forwarded and noted.

Tests count what reached "AWS": S3 uploads and bucket creations, CloudFormation writes.
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query
    query: str
    action: str  # a query-protocol action (CloudFormation, STS), else ""
    copy: bool  # an S3 CopyObject
    form: tuple[tuple[str, str], ...] = ()  # a query-protocol request's form (first values)

    @property
    def upload(self) -> bool:
        """A PutObject: a PUT of an object (bucket/key), not a copy nor a bucket setting."""
        return self.method == "PUT" and self.path.count("/") >= 2 and not self.copy and not self.query


@dataclass
class Recorder:
    url: str = ""
    requests: list[Request] = field(default_factory=list)

    def uploads(self) -> list[str]:
        return [r.path for r in self.requests if r.upload]

    def actions(self) -> list[str]:
        return [r.action for r in self.requests if r.action]


def pass_on(handler: BaseHTTPRequestHandler, upstream: urllib.parse.SplitResult, body: bytes) -> None:
    """Send the request `handler` holds to `upstream` and its answer back, headers and all."""
    # http.client, not urllib: urllib gives a body without a Content-Type a form's, which moto parses
    dropped = ("host", "content-length", "expect")  # http.server answered a 100-continue itself
    headers = {k: v for k, v in handler.headers.items() if k.lower() not in dropped}
    connection = http.client.HTTPConnection(upstream.hostname or "", upstream.port)
    try:
        connection.request(handler.command, handler.path, body, headers)
        answer = connection.getresponse()
        status, payload, kept = answer.status, answer.read(), answer.getheaders()
    finally:
        connection.close()
    handler.send_response(status)
    for name, value in kept:
        if name.lower() not in ("transfer-encoding", "connection", "server", "date", "content-length"):
            handler.send_header(name, value)
    # a HEAD answer keeps the object's length; every other one has the length of its body
    length = {k.lower(): v for k, v in kept}.get("content-length", "0")
    handler.send_header("Content-Length", length if handler.command == "HEAD" else str(len(payload)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(payload)


@contextmanager
def recording_proxy(upstream: str) -> Iterator[Recorder]:
    recorder = Recorder()
    lock = threading.Lock()
    target = urllib.parse.urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            path, _, query = self.path.partition("?")
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace")) if self.command == "POST" else {}
            request = Request(
                self.command,
                path,
                query,
                form.get("Action", [""])[0],
                "x-amz-copy-source" in {k.lower() for k in self.headers},
                tuple((name, values[0]) for name, values in form.items()),
            )
            with lock:
                recorder.requests.append(request)
            pass_on(self, target, body)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
