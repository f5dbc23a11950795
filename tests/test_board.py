"""The live board as a person sees it: doit runs in a pseudo-terminal, pyte (a terminal emulator) draws it."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pyte
from rich.console import Console

from phasedoit.board import render
from phasedoit.runstate import RunState, fold
from tests.faults import Layer
from tests.sample import failing, last_state, shop

COLUMNS, LINES = 132, 24


class Terminal:
    """A program on a terminal of COLUMNS x LINES, its screen as pyte keeps it."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.screen = pyte.Screen(COLUMNS, LINES)
        self.stream = pyte.ByteStream(self.screen)
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
        self.process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        self.open = True

    def lines(self) -> list[str]:
        return [text.rstrip() for text in self.screen.display]

    def read(self, timeout: float) -> None:
        if self.open and select.select([self.master], [], [], timeout)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the program is gone and its terminal closed
                data = b""
            if data:
                self.stream.feed(data)
            else:
                self.open = False

    def wait_for(self, seen: Callable[[list[str]], bool], what: str) -> list[str]:
        deadline = time.monotonic() + 60
        while not seen(self.lines()):
            if time.monotonic() > deadline or not self.open:
                raise AssertionError(f"never saw {what}; the screen:\n" + "\n".join(self.lines()))
            self.read(0.05)
        return self.lines()

    def finish(self) -> int:
        while self.open:
            self.read(1)
        os.close(self.master)
        return self.process.wait(60)


def on_terminal(app: Path, *args: str, endpoint: str) -> Terminal:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PHASEDOIT_PROGRESS", "COLUMNS", "LINES")}
    env |= {"TERM": "xterm-256color", "AWS_ENDPOINT_URL": endpoint}
    return Terminal([sys.executable, "-m", "doit", *args], app, env)


def timed(lines: list[str]) -> list[str]:
    """The screen with its times and spinners as `N.Ns` and `*`."""
    shown = [re.sub(r"\d+\.\ds\b", "N.Ns", text) for text in lines]
    return [re.sub(r"^ [⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] ", " * ", text) for text in shown if text]


def test_the_board_during_and_after_a_deploy(tmp_path: Path, layer: Layer) -> None:
    app = shop(tmp_path)
    layer.duration(1.5)  # each stack operation takes 1.5 s, its resources' events spread over it
    terminal = on_terminal(app, "-n", "4", "deploy", endpoint=layer.url)
    first = terminal.wait_for(lambda s: any("checkout-api" in x and "deploying" in x for x in s), "phase 1")
    # its latest line: what the deploy said, or a stack event, as far as polling has come
    assert re.fullmatch(
        r" \* checkout-api     deploying      N\.Ns( creating checkout-api-dev| uploading src/ \(\d+ B\)|"
        r" (checkout-api-dev \(AWS::CloudFormation::Stack\)|PurchasedTopic \(AWS::SNS::Topic\)) CREATE_\w+)?",
        timed(first)[2],
    )
    assert timed(first)[:2] + timed(first)[3:] == [
        "shop · dev · deploy",
        "phase 1 'api'",
        "phase 2 'jobs'",
        " · confirmation-job waiting",
        " · reset-cart-job   waiting",
        "0/3 done, 1 deploying, 2 waiting · N.Ns",
    ]
    second = terminal.wait_for(lambda s: any(x.startswith("1/3 done, 2 deploying") for x in s), "phase 2")
    assert timed(second) == [
        "shop · dev · deploy",
        "phase 1 'api'",
        " ✔ checkout-api     created        N.Ns checkout-api-dev (AWS::CloudFormation::Stack) CREATE_COMPLETE",
        "phase 2 'jobs'",
        *(text for text in timed(second) if text.startswith(" * confirmation-job deploying      N.Ns")),
        *(text for text in timed(second) if text.startswith(" * reset-cart-job   deploying      N.Ns")),
        "1/3 done, 2 deploying · N.Ns",
    ]
    assert terminal.finish() == 0
    assert timed(terminal.lines()) == [
        "shop · dev · deploy",
        "phase 1 'api'",
        " ✔ checkout-api     created        N.Ns checkout-api-dev (AWS::CloudFormation::Stack) CREATE_COMPLETE",
        "phase 2 'jobs'",
        " ✔ confirmation-job created        N.Ns confirmation-job-dev (AWS::CloudFormation::Stack) CREATE_COMPLETE",
        " ✔ reset-cart-job   created        N.Ns reset-cart-job-dev (AWS::CloudFormation::Stack) CREATE_COMPLETE",
        "3 deployed (N.Ns)",
    ]
    assert last_state(app).summary(0).startswith("3 deployed (")  # the board and the record agree


def test_a_failure_stands_out_on_the_final_screen(tmp_path: Path, layer: Layer) -> None:
    app = failing(shop(tmp_path))
    terminal = on_terminal(app, "-n", "4", "-c", "deploy", endpoint=layer.url)
    assert terminal.finish() == 2
    screen = timed(terminal.lines())
    assert screen[0].startswith("warning: services/confirmation-job/template.yml: ")  # said before the board
    failure = "No export named dev-CartTableArn found. [ROLLBACK_COMPLETE]"
    assert screen[-9:] == [
        "shop · dev · deploy",
        "phase 1 'api'",
        " ✔ checkout-api     created        N.Ns checkout-api-dev (AWS::CloudFormation::Stack) CREATE_COMPLETE",
        f" ✘ confirmation-job failed         N.Ns {failure}",
        "phase 2",
        " - reset-cart-job   not started         confirmation-job failed",
        f"confirmation-job: {failure}",
        "not started because confirmation-job failed: reset-cart-job",
        "1 deployed, 1 failed, 1 not started (N.Ns)",
    ]
    row = next(y for y, text in enumerate(terminal.lines()) if "✘ confirmation-job" in text)
    assert terminal.screen.buffer[row][20].fg == "red"  # `failed`, in red
    assert terminal.screen.buffer[row][20].bold


def drawn(state: RunState, now: float, height: int | None) -> list[str]:
    console = Console(file=io.StringIO(), width=COLUMNS, color_system=None)
    console.print(render(state, now, height=height))
    return timed([text.rstrip() for text in console.file.getvalue().splitlines()])  # type: ignore[attr-defined]


def test_a_board_taller_than_the_terminal_shows_the_services_at_work() -> None:
    state = fold(
        [
            {
                "t": 0.0, "event": "run", "app": "blog", "stage": "dev", "run": "r", "verb": "deploy",
                "phases": [
                    {"label": "phase 1", "services": [{"service": s, "upstreams": []} for s in ("a", "b", "c")]},
                    {"label": "phase 2", "services": [{"service": s, "upstreams": []} for s in ("d", "e")]},
                ],
            },
            {"t": 1.0, "event": "skipped", "service": "a", "phase": "phase 1", "reason": "up to date"},
            {"t": 1.0, "event": "started", "service": "b", "verb": "deploy", "reasons": ["forced"]},
            {"t": 1.0, "event": "started", "service": "c", "verb": "deploy", "reasons": ["forced"]},
            {"t": 2.0, "event": "finished", "service": "c", "action": "updated", "stack": "c-dev", "seconds": 1},
        ]
    )  # fmt: skip
    assert drawn(state, 3.0, height=20) == [
        "blog · dev · deploy",
        "phase 1",
        " = a up to date",
        " * b deploying      N.Ns",
        " ✔ c updated        N.Ns",
        "phase 2",
        " · d waiting",
        " · e waiting",
        "2/5 done, 1 deploying, 2 waiting · N.Ns",
    ]
    assert drawn(state, 3.0, height=8) == [
        "blog · dev · deploy",
        "phase 1 · 1 up to date · 1 updated",
        " * b deploying      N.Ns",
        "phase 2 · 2 waiting",
        "2/5 done, 1 deploying, 2 waiting · N.Ns",
    ]
