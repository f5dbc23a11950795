"""First deploys through a slow network: each schedule against its bound, phase boundaries, and memory.

Run from the repository root: `python -m bench.schedule [WHAT] [--runs N] [-P process]`, WHAT one of
uniform, slow, memory, polling or all (the default).
Starts its own moto server behind the fault layer of tests/faults.py (keeping connections alive, as AWS
does), which holds the answer to every write 1.5 s (a stand-in for CloudFormation's latency; moto itself is
done at once) and serves moto one request at a time. Each run deploys a generated app
from nothing (moto reset, `.phasedoit/` deleted). Prints Markdown tables.

- uniform: 30 services in 3 layers and 100 in 4 (each service imports from two of the layer before),
  at -n 4, 8 and 16, with both schedules: the measured time ÷ the schedule's bound. The bound is the
  makespan of the writes alone under `n` workers: for phases, Σ ceil(phase size / n) * 1.5 s; for
  dependencies, each service started as soon as its upstreams are done and a worker is free.
- slow: 30 services in 3 layers of independent chains, one stack per layer held 6 s, in a different chain
  each time, at -n 16: phases against dependencies.
- memory: the peak of the sum of the RSS of doit's processes during `doit -n 32 deploy` of 100 services.
- polling: CloudFormation's way instead of held writes: each write answered at once, its stack in progress
  for 1.5 s (the layer's `duration`), so that a phase boundary costs the polling's lag; 30 services.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.noop_deploy import ENVIRONMENT, REPO, machine, moto_server
from tests.faults import Layer, running_layer

HOLD = 1.5  # seconds each write is held
SLOW = 6.0  # seconds the slow stacks' writes are held


# ---- the app -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    layers: tuple[tuple[str, ...], ...]
    upstreams: dict[str, tuple[str, ...]]

    @property
    def services(self) -> list[str]:
        return [s for layer in self.layers for s in layer]


def layout(count: int, layers: int, cross: bool = True) -> Layout:
    """`count` services in `layers` layers; each imports from the same position in the layer before
    (a chain) and, with `cross`, from the next position too."""
    sizes = [count // layers + (i < count % layers) for i in range(layers)]
    names = tuple(tuple(f"l{layer + 1}-s{i:02d}" for i in range(size)) for layer, size in enumerate(sizes))
    upstreams: dict[str, tuple[str, ...]] = {}
    for layer, members in enumerate(names):
        for i, name in enumerate(members):
            before = names[layer - 1] if layer else ()
            picks = [i % len(before), (i + 1) % len(before)] if before else []
            upstreams[name] = tuple(before[p] for p in dict.fromkeys(picks if cross else picks[:1]))
    return Layout(names, upstreams)


TEMPLATE = """Parameters:
  Stage: {{Type: String}}
Resources:
  Value:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub /${{Stage}}/{name}
      Type: String
      Value: {name}
{imports}Outputs:
  Name:
    Value: !Ref Value
    Export: {{Name: !Sub '${{Stage}}-{name}'}}
"""
IMPORT = """  Upstream{k}:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub /${{Stage}}/{name}/upstream-{k}
      Type: String
      Value: !ImportValue {{Fn::Sub: '${{Stage}}-{upstream}'}}
"""


def generate(root: Path, app: Layout) -> Path:
    for name in app.services:
        folder = root / "services" / name
        folder.mkdir(parents=True)
        imports = "".join(
            IMPORT.format(k=k, name=name, upstream=u) for k, u in enumerate(app.upstreams[name])
        )
        (folder / "template.yml").write_text(TEMPLATE.format(name=name, imports=imports))
    lines = ["app: bench", "phases:"]
    lines += [f"  - [{', '.join(layer)}]" for layer in app.layers]
    (root / "phases.yml").write_text("\n".join(lines) + "\n")
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    return root


# ---- bounds --------------------------------------------------------------------------------------------


def makespan(
    order: Sequence[str], needs: Mapping[str, Iterable[str]], took: Mapping[str, float], n: int
) -> float:
    """Greedy list scheduling, as doit dispatches: in `order`, each task once its needs are done and a
    worker is free."""
    done: dict[str, float] = {}
    running: list[tuple[float, str]] = []
    waiting = list(order)
    now = 0.0
    while waiting or running:
        for name in list(waiting):
            if len(running) < n and all(d in done for d in needs[name]):
                waiting.remove(name)
                running.append((now + took[name], name))
        running.sort()
        now, finished = running.pop(0)
        done[finished] = now
    return now


def bound(app: Layout, schedule: str, took: Mapping[str, float], n: int) -> float:
    if schedule == "dependencies":
        return makespan(app.services, app.upstreams, took, n)
    return sum(makespan(layer, dict.fromkeys(layer, ()), took, n) for layer in app.layers)


# ---- runs ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    wall: float  # the doit command, start to exit
    span: float  # first write's start to last write's end
    gaps: list[float]  # at each phase boundary: next phase's first write start - this phase's last write end
    rss: float  # peak sum of RSS of doit's processes, MB
    polls: int  # DescribeStacks calls
    # the bound again, with each write as long as it took through the layer (its hold, plus moto's and the
    # layer's own work, one request at a time): what is left of span ÷ this is phasedoit's own
    measured_bound: float


Script = Callable[[Layer], None]  # what the fault layer does to each run's calls


def held(slow: Mapping[str, float] | None = None) -> Script:
    """Every write's answer held HOLD seconds; the creates of the `slow` services, their own time."""

    def script(layer: Layer) -> None:
        layer.latency(HOLD)
        for service, seconds in (slow or {}).items():
            layer.latency(seconds, "CreateStack", stack=f"{service}-dev")

    return script


def in_progress(layer: Layer) -> None:
    """Every create answered at once, its stack CREATE_IN_PROGRESS for HOLD seconds."""
    layer.duration(HOLD, "CreateStack")


def reset(moto: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{moto}/moto-api/reset", method="POST")).close()  # noqa: S310


def deploy(root: Path, app: Layout, moto: str, script: Script, *, n: int, schedule: str, par: str) -> Result:
    """One deploy from nothing through a fresh fault layer; a write ends when its stack is done."""
    reset(moto)
    shutil.rmtree(root / ".phasedoit", ignore_errors=True)
    with running_layer(moto, keep_alive=True) as proxy:
        script(proxy)
        return _measured(root, app, proxy, n=n, schedule=schedule, par=par, pending=script is in_progress)


def _measured(
    root: Path, app: Layout, proxy: Layer, *, n: int, schedule: str, par: str, pending: bool
) -> Result:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PHASEDOIT_"))},
        **ENVIRONMENT,
        "AWS_ENDPOINT_URL": proxy.url,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    argv = [sys.executable, "-m", "doit", "-n", str(n), "-P", par, "deploy", f"schedule={schedule}"]
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = PeakRss(process.pid)
    out, err = process.communicate(timeout=600)
    wall = time.perf_counter() - started
    peak.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}):\n{err[-3000:]}")
    writes = {c.stack.removesuffix("-dev"): c for c in proxy.writes() if c.action == "CreateStack"}
    if sorted(writes) != sorted(app.services):
        raise RuntimeError(f"created {len(writes)} stacks, not {len(app.services)}:\n{out}\n{err[-3000:]}")
    start = {s: c.start for s, c in writes.items()}
    end = {s: c.end + (HOLD if pending else 0.0) for s, c in writes.items()}  # its stack done
    span = max(end.values()) - min(start.values())
    gaps = [
        min(start[s] for s in after) - max(end[s] for s in before)
        for before, after in zip(app.layers, app.layers[1:], strict=False)
    ]
    polls = sum(c.action == "DescribeStacks" for c in proxy.calls)
    took = {s: end[s] - start[s] for s in writes}
    return Result(wall, span, gaps, peak.peak / 1024, polls, bound(app, schedule, took, n))


class PeakRss:
    """Samples the RSS of a process and its descendants every 20 ms, in a thread; keeps the peak (KiB)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.running = pid, 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.running = False
        self.thread.join()

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, sum(_rss(pid) for pid in _tree(self.pid)))
            time.sleep(0.02)


def _tree(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with contextlib.suppress(OSError):  # a process or thread gone while it is read
            for task in Path(f"/proc/{current}/task").glob("*"):
                queue += [int(child) for child in (task / "children").read_text().split()]
    return found


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---- report --------------------------------------------------------------------------------------------


def row(label: str, results: list[Result], limit: float) -> str:
    wall, span = statistics.median(r.wall for r in results), statistics.median(r.span for r in results)
    gaps = [g for r in results for g in r.gaps]
    gap = f"{statistics.median(gaps):.2f} s (max {max(gaps):.2f})" if gaps else "—"
    rss = statistics.median(r.rss for r in results)
    own = statistics.median(r.span / r.measured_bound for r in results)
    return (
        f"| {label} | {limit:.1f} s | {span:.2f} s | **{span / limit:.2f}** | {own:.2f} | {wall:.2f} s"
        f" | {wall / limit:.2f} | {gap} | {rss:.0f} MB | {len(results)} |"
    )


HEADER = (
    "| run | bound | span (writes) | span ÷ bound | span ÷ bound of the writes as measured | wall"
    " | wall ÷ bound | phase-boundary gap | peak RSS | runs |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def uniform(root: Path, moto: str, runs: int, par: str) -> None:
    print(f"\n### Uniform: every write held {HOLD} s (`-P {par}`)\n\n{HEADER}")
    for count, layers in ((30, 3), (100, 4)):
        app = layout(count, layers)
        folder = generate(root / f"uniform-{count}", app)
        took = dict.fromkeys(app.services, HOLD)
        for n in (4, 8, 16):
            for schedule in ("phases", "dependencies"):
                results = [
                    deploy(folder, app, moto, held(), n=n, schedule=schedule, par=par) for _ in range(runs)
                ]
                label = f"{count} services, {layers} layers, `-n {n}`, {schedule}"
                print(row(label, results, bound(app, schedule, took, n)), flush=True)


def slow(root: Path, moto: str, runs: int, par: str) -> None:
    app = layout(30, 3, cross=False)
    slow_ones = {layer[i]: SLOW for i, layer in enumerate(app.layers)}  # one per layer, each in its own chain
    took = {s: slow_ones.get(s, HOLD) for s in app.services}
    folder = generate(root / "slow", app)
    print(f"\n### One slow stack ({SLOW} s) per phase, in different chains (`-P {par}`)\n\n{HEADER}")
    medians = {}
    for schedule in ("phases", "dependencies"):
        script = held(slow_ones)
        results = [deploy(folder, app, moto, script, n=16, schedule=schedule, par=par) for _ in range(runs)]
        medians[schedule] = statistics.median(r.wall for r in results)
        limit = bound(app, schedule, took, 16)
        print(row(f"30 services, `-n 16`, {schedule}", results, limit), flush=True)
    ratio = medians["phases"] / medians["dependencies"]
    print(f"\ndependencies are {ratio:.2f} times as fast as phases (wall, medians)")


def memory(root: Path, moto: str, runs: int) -> None:
    app = layout(100, 4)
    folder = generate(root / "memory", app)
    print(f"\n### Peak memory of `doit -n 32 deploy`, 100 services\n\n{HEADER}")
    took = dict.fromkeys(app.services, HOLD)
    for par in ("thread", "process"):
        results = [deploy(folder, app, moto, held(), n=32, schedule="phases", par=par) for _ in range(runs)]
        print(row(f"`-n 32 -P {par}`", results, bound(app, "phases", took, 32)), flush=True)


def polling(root: Path, moto: str, runs: int, par: str) -> None:
    app = layout(30, 3)
    folder = generate(root / "polling", app)
    took = dict.fromkeys(app.services, HOLD)
    print(f"\n### Polling: writes answered at once, stacks in progress {HOLD} s (`-P {par}`)\n\n{HEADER}")
    for n in (4, 16):
        results = [
            deploy(folder, app, moto, in_progress, n=n, schedule="phases", par=par) for _ in range(runs)
        ]
        print(row(f"30 services, `-n {n}`, phases", results, bound(app, "phases", took, n)), flush=True)
        print(f"\nDescribeStacks calls: {statistics.median(r.polls for r in results):.0f} (median)\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "what", nargs="?", default="all", choices=["uniform", "slow", "memory", "polling", "all"]
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-P", dest="par", default="thread", choices=["thread", "process"])
    args = parser.parse_args()
    print(machine())
    print(f"\nload average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with moto_server(root / "moto.log") as moto:
            if args.what in ("uniform", "all"):
                uniform(root, moto, args.runs, args.par)
            if args.what in ("slow", "all"):
                slow(root, moto, args.runs, args.par)
            if args.what in ("memory", "all"):
                memory(root, moto, args.runs)
            if args.what in ("polling", "all"):
                polling(root, moto, args.runs, args.par)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"bench total: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
