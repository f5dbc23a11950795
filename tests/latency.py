"""A slow network in front of moto: real CloudFormation takes minutes to create a stack, moto milliseconds.

The proxy forwards every request to moto over HTTP, holds CreateStack/UpdateStack/DeleteStack for a
while, and records when each one was in flight, so tests can see which calls overlapped.
"""

from __future__ import annotations

import select
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_ACTIONS = {"CreateStack", "UpdateStack", "DeleteStack"}


@dataclass(frozen=True)
class Call:
    action: str
    stack: str
    start: float
    end: float
    token: str = ""  # its ClientRequestToken


@dataclass
class Proxy:
    url: str
    calls: list[Call] = field(default_factory=list)

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.action in SLOW_ACTIONS]

    def written(self) -> list[tuple[str, str]]:
        """(action, stack) of every write call so far, in the order they ended; then forget them."""
        written = [(c.action, c.stack) for c in sorted(self.writes(), key=lambda c: c.end)]
        self.calls.clear()
        return written


@contextmanager
def slow_proxy(upstream: str, delay: float = 0.0) -> Iterator[Proxy]:
    proxy = Proxy("")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            form = urllib.parse.parse_qs(body.decode())
            action, stack = form.get("Action", [""])[0], form.get("StackName", [""])[0]
            start = time.monotonic()
            if action in SLOW_ACTIONS:
                time.sleep(delay)
                if self._abandoned():
                    return  # the caller is gone (killed mid-call): the request never reaches CloudFormation
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            request = urllib.request.Request(upstream + self.path, body, headers, method="POST")
            try:
                with urllib.request.urlopen(request) as answer:
                    status, payload = answer.status, answer.read()
            except urllib.error.HTTPError as e:
                status, payload = e.code, e.read()
            with lock:
                token = form.get("ClientRequestToken", [""])[0]
                proxy.calls.append(Call(action, stack, start, time.monotonic(), token))
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _abandoned(self) -> bool:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
