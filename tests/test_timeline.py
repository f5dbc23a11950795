"""`phasedoit timeline`: a recorded run as SVG (and HTML), phases as bands, a bar per service."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from phasedoit import runrecord, timeline
from phasedoit.runrecord import Record
from phasedoit.runstate import Event, fold
from tests.conftest import run_module

SVG = "{http://www.w3.org/2000/svg}"
T0 = 1_700_000_000.0


def e(t: float, kind: str, service: str = "", **fields: object) -> Event:
    return {"t": T0 + t, "event": kind, **({"service": service} if service else {}), **fields}


def services(phase: str, *names: str, upstreams: tuple[str, ...] = ()) -> dict[str, object]:
    return {"label": phase, "services": [{"service": n, "upstreams": list(upstreams)} for n in names]}


RUN = [
    e(
        0,
        "run",
        app="shop",
        stage="dev",
        run="c0ffee0123456789",
        verb="deploy",
        phases=[
            services("phase 1 'apis'", "users-api", "media-api", "cdn-api"),
            services("phase 2", "posts-api", "search-api", upstreams=("users-api",)),
            services("phase 3 'jobs'", "feed-job", "mail-job", upstreams=("posts-api",)),
        ],
    ),
    e(0.5, "skipped", "cdn-api", phase="phase 1 'apis'", reason="up to date"),
    e(1, "started", "users-api", verb="deploy", reasons=["changed files: template.yml"]),
    e(1, "started", "media-api", verb="deploy", reasons=["never deployed"]),
    e(5, "finished", "media-api", action="created", stack="media-api-dev", seconds=4),
    e(2, "resource", "users-api", logical_id="Fn", type="AWS::Lambda::Function", status="UPDATE_COMPLETE"),
    e(9, "finished", "users-api", action="updated", stack="users-api-dev", seconds=8),
    e(9.2, "started", "posts-api", verb="deploy", reasons=["changed upstream: dev-UsersTableArn"]),
    e(9.2, "started", "search-api", verb="deploy", reasons=["forced"]),
    e(10, "finished", "search-api", action="unchanged", stack="search-api-dev", seconds=0.8),
    e(
        12,
        "failed",
        "posts-api",
        message="Table (AWS::DynamoDB::Table): <limit> & more [UPDATE_ROLLBACK_COMPLETE]",
    ),
    e(12.1, "not started", "feed-job", reason="posts-api failed"),
    e(12.1, "not started", "mail-job", reason="posts-api failed"),
    e(12.2, "end", seconds=12.2),
]


def parsed(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 (our own output)


def test_the_critical_path_is_what_the_run_waited_for() -> None:
    state = fold(RUN)
    # posts-api ended last; it started after users-api, the slower of phase 1 (media-api ended at 5 s)
    assert timeline.critical_path(state) == ["users-api", "posts-api"]
    assert timeline.totals(state, ["users-api", "posts-api"]) == (
        "3 deployed, 1 up to date, 1 failed, 2 not started (12.2s) · critical path 11.0s: users-api → posts-api"
    )


def test_under_dependencies_a_service_waited_for_its_upstreams_and_after_only() -> None:
    def service(name: str, upstreams: tuple[str, ...] = (), after: tuple[str, ...] = ()) -> dict[str, object]:
        return {"service": name, "upstreams": list(upstreams), "after": list(after)}

    def bar(name: str, start: float, end: float) -> list[Event]:
        return [
            e(start, "started", name, verb="deploy", reasons=["never deployed"]),
            e(end, "finished", name, action="created", stack=f"{name}-dev", seconds=end - start),
        ]

    phases = [
        {"label": "phase 1", "services": [service("cdn-api"), service("users-api"), service("auth-api")]},
        {
            "label": "phase 2",
            "services": [service("posts-api", ("users-api",)), service("mail-job", after=("auth-api",))],
        },
    ]
    head = e(0, "run", app="shop", stage="dev", run="5c4ed01e0123", verb="deploy", phases=phases)
    events = [
        *bar("cdn-api", 1, 20),  # the slow one: nothing waits for it
        *bar("users-api", 1, 5.1),
        *bar("auth-api", 1, 5),
        *bar("posts-api", 5.1, 9),
        *bar("mail-job", 5.2, 12),  # it waited for auth-api, though users-api ended later
        e(20.1, "end", seconds=20.1),
    ]
    dependencies = fold([{**head, "schedule": "dependencies"}, *events])
    assert timeline.critical_path(dependencies) == ["cdn-api"]  # it ended last, having waited for nothing
    without_cdn = fold([{**head, "schedule": "dependencies"}, *events[2:]])
    assert timeline.critical_path(without_cdn) == ["auth-api", "mail-job"]  # by after:, not users-api
    # the same bars under phases: mail-job waited for the whole of phase 1, which users-api ended
    assert timeline.critical_path(fold([{**head, "schedule": "phases"}, *events[2:]])) == [
        "users-api",
        "mail-job",
    ]
    title = parsed(timeline.to_svg(dependencies)).findtext(f"{SVG}title")
    assert title == "shop · dev · deploy · schedule: dependencies · 2023-11-14 22:13:20 UTC · run 5c4ed01e"


def test_the_svg_shows_every_service_its_outcome_and_the_phases() -> None:
    root = parsed(timeline.to_svg(fold(RUN)))
    assert root.tag == f"{SVG}svg"
    bands = [
        (g.get("data-phase"), g.find(f"{SVG}rect")) for g in root.iter(f"{SVG}g") if g.get("class") == "phase"
    ]
    assert [label for label, _ in bands] == ["phase 1 'apis'", "phase 2", "phase 3 'jobs'"]
    tops = [float(rect.get("y", "")) for _, rect in bands if rect is not None]
    assert len(tops) == 3
    assert tops == sorted(tops)  # bands in order, one under the other
    rows = {g.get("data-service"): g for g in root.iter(f"{SVG}g") if g.get("class") == "service"}
    assert {name: (g.get("data-outcome"), g.get("data-critical")) for name, g in rows.items()} == {
        "users-api": ("updated", "true"),
        "media-api": ("created", "false"),
        "cdn-api": ("up to date", "false"),
        "posts-api": ("failed", "true"),
        "search-api": ("unchanged", "false"),
        "feed-job": ("not started", "false"),
        "mail-job": ("not started", "false"),
    }
    bars = {name: g.find(f"{SVG}rect") for name, g in rows.items()}
    assert {name for name, bar in bars.items() if bar is not None} == {
        "users-api", "media-api", "posts-api", "search-api",
    }  # fmt: skip
    users, posts = bars["users-api"], bars["posts-api"]
    assert users is not None
    assert posts is not None
    assert (users.get("fill"), posts.get("fill")) == ("#2f9e5b", "#d64545")
    assert users.get("stroke") == "#111111"  # outlined: on the critical path
    assert float(users.get("x", "")) < float(posts.get("x", ""))
    titles = {name: g.findtext(f"{SVG}title") for name, g in rows.items()}
    assert titles["posts-api"] == (
        "posts-api (phase 2): failed\n2.8s\nwhy: changed upstream: dev-UsersTableArn\n"
        "Table (AWS::DynamoDB::Table): <limit> & more [UPDATE_ROLLBACK_COMPLETE]"
    )
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert "not started: posts-api failed" in texts
    assert any(t.startswith("3 deployed, 1 up to date, 1 failed, 2 not started (12.2s)") for t in texts)


def test_the_html_page_holds_the_svg_and_the_hover_details() -> None:
    page = timeline.to_html(fold(RUN))
    assert page.startswith("<!doctype html>")
    root = parsed(page[page.index("<svg") : page.index("</svg>") + len("</svg>")])
    rows = [g for g in root.iter(f"{SVG}g") if g.get("class") == "service"]
    assert len(rows) == 7
    assert all(g.find(f"{SVG}title") is None for g in rows)  # the page's own box shows the details
    details = json.loads(rows[3].get("data-details", ""))
    assert details == {
        "service": "posts-api",
        "phase": "phase 2",
        "outcome": "failed",
        "seconds": 2.8,
        "why": "changed upstream: dev-UsersTableArn",
        "latest": "",
        "detail": "Table (AWS::DynamoDB::Table): <limit> & more [UPDATE_ROLLBACK_COMPLETE]",
    }
    assert 'addEventListener("mousemove"' in page


def record(app: Path, events: list[Event], run: str) -> Path:
    path = runrecord.record_path(app / ".phasedoit", "dev", run, events[0]["t"])
    runrecord.start(Record(str(path), "shop", "dev", run), events[0])
    for item in events[1:]:
        runrecord.append(str(path), item)
    return path


def test_the_command(tmp_path: Path) -> None:
    first = record(tmp_path, RUN, "aaaa1111")
    record(
        tmp_path,
        [e(100, "run", app="shop", stage="dev", run="bbbb2222", verb="remove", phases=[])],
        "bbbb2222",
    )
    picture = run_module(
        "phasedoit.cli", "timeline", "--run", "aaaa", "-o", "run.html", cwd=tmp_path, env=None
    )
    assert (picture.returncode, picture.stdout, picture.stderr) == (0, "", "")
    assert (tmp_path / "run.html").read_text().startswith("<!doctype html>")
    last = run_module("phasedoit.cli", "timeline", "--app", str(tmp_path), cwd=Path("/"), env=None)
    assert parsed(last.stdout).findtext(f"{SVG}title", "").startswith("shop · dev · remove · ")
    assert first.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--stage", "prod"],
            "no run of stage prod recorded in .phasedoit/runs/prod/ (run `doit deploy` first)",
        ),
        (
            ["--run", "ffff"],
            "--run ffff: no recorded run of stage dev has that id (see .phasedoit/runs/dev/)",
        ),
        (["-o", "no/such/folder/t.svg"], "cannot write no/such/folder/t.svg: No such file or directory"),
    ],
)
def test_the_command_says_what_is_wrong_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    record(tmp_path, RUN, "aaaa1111")
    result = run_module("phasedoit.cli", "timeline", *args, cwd=tmp_path, env=None)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", message + "\n")
