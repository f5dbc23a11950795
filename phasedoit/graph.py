"""Pure dependency graph: importer -> exporter edges, phase checks, cycles, computed phases, drawings."""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from phasedoit.config import Phase
from phasedoit.errors import PhasedoitError
from phasedoit.templates import Conditional, Dependencies

# How alike a missing import and an export of the app must be for a "did you mean" (difflib's ratio).
NEAR_MISS = 0.7


@dataclass(frozen=True, order=True)
class Edge:
    """`importer` imports `export`, which `exporter` exports: `importer` deploys after `exporter`."""

    importer: str
    exporter: str
    export: str
    # the import or the export exists only if a condition unknown before deploy holds: ordered all the same
    conditional: bool = False


@dataclass(frozen=True)
class Graph:
    services: tuple[str, ...]  # in the user's order
    edges: tuple[Edge, ...]  # in the user's order of importers, then exporters, then export names
    external: tuple[tuple[str, str], ...]  # (importer, export) that no service of the app exports
    # conditional imports that no service of the app exports: never checked, a warning each
    unchecked: tuple[tuple[str, Conditional], ...] = ()
    exports: tuple[tuple[str, str], ...] = ()  # (export, its service): every export of the app, by name
    # (service, the service it deploys after) declared by `after:`, for what no template shows
    after: tuple[tuple[str, str], ...] = ()


def build_graph(
    dependencies: Mapping[str, Dependencies], after: Mapping[str, Sequence[str]] | None = None
) -> Graph:
    """`dependencies` in the user's order; an export defined by two services unconditionally is an error.

    `after`: each service's `after:` list, services known to be in `dependencies`.
    """
    exporters = _exporters(dependencies)
    order = {service: i for i, service in enumerate(dependencies)}
    edges: list[Edge] = []
    external: list[tuple[str, str]] = []
    unchecked: list[tuple[str, Conditional]] = []
    for importer, deps in dependencies.items():
        for export in sorted(deps.imports):
            if export in exporters:
                edges.extend(Edge(importer, s, export, c) for s, c in exporters[export])
            else:
                external.append((importer, export))
        for found in deps.conditional_imports:
            if found.name in exporters:
                edges.extend(Edge(importer, s, found.name, True) for s, _ in exporters[found.name])
            else:
                unchecked.append((importer, found))
    edges.sort(key=lambda e: (order[e.importer], order[e.exporter], e.export))
    exports = tuple((name, found[0][0]) for name, found in sorted(exporters.items()))
    declared = tuple((service, other) for service, others in (after or {}).items() for other in others)
    return Graph(tuple(dependencies), tuple(edges), tuple(external), tuple(unchecked), exports, declared)


def _exporters(dependencies: Mapping[str, Dependencies]) -> dict[str, list[tuple[str, bool]]]:
    """Each export name's services, each with whether it exports it only under a condition.

    Two conditional exports of one name may never both exist: an importer deploys after both.
    """
    exporters: dict[str, list[tuple[str, bool]]] = {}
    problems = []
    for service, deps in dependencies.items():
        for export in sorted(deps.exports):
            first = next((s for s, conditional in exporters.get(export, ()) if not conditional), None)
            if first:
                problems.append(f"export {export} is defined by both {first} and {service}")
            else:
                exporters.setdefault(export, []).append((service, False))
        for found in deps.conditional_exports:
            exporters.setdefault(found.name, []).append((service, True))
    if problems:
        raise PhasedoitError("\n".join(problems))
    return exporters


def check_phases(graph: Graph, phases: Sequence[Phase]) -> list[str]:
    """One line per import whose exporter does not deploy in an earlier phase than its importer."""
    where = {service: i for i, phase in enumerate(phases) for service in phase.services}
    problems = []
    for edge in graph.edges:
        importer_phase, exporter_phase = where[edge.importer], where[edge.exporter]
        if edge.importer != edge.exporter and importer_phase <= exporter_phase:
            problems.append(
                f"{edge.importer} ({phases[importer_phase].label}) {_imports(edge)} {edge.export}"
                f" from {edge.exporter} ({phases[exporter_phase].label}):"
                f" move {edge.importer} to a phase after {exporter_phase + 1}"
            )
    for service, other in graph.after:
        if where[service] <= where[other]:
            problems.append(
                f"{service} ({phases[where[service]].label}) deploys after {other}"
                f" ({phases[where[other]].label}) by services.{service}.after:"
                f" move {service} to a phase after {where[other] + 1}"
            )
    return problems


def _imports(edge: Edge) -> str:
    return "may import" if edge.conditional else "imports"


def validate(graph: Graph, phases: Sequence[Phase]) -> list[str]:
    """The cycles if any (no phase order can satisfy them), else the phase violations."""
    return find_cycles(graph) or check_phases(graph, phases)


def _successors(graph: Graph) -> dict[str, list[str]]:
    successors: dict[str, list[str]] = {service: [] for service in graph.services}
    for service, before in [(e.importer, e.exporter) for e in graph.edges] + list(graph.after):
        if before not in successors[service]:
            successors[service].append(before)
    return successors


def find_cycles(graph: Graph) -> list[str]:
    """One message per strongly connected component that is a cycle, each shown as one cycle in it."""
    successors = _successors(graph)
    return [_cycle_message(graph, _cycle_in(component, successors)) for component in _cycles(successors)]


def _cycles(successors: Mapping[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components that contain a cycle, each in the user's order."""
    order = {service: i for i, service in enumerate(successors)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(service: str) -> None:
        index[service] = low[service] = len(index)
        stack.append(service)
        for successor in successors[service]:
            if successor not in index:
                visit(successor)
                low[service] = min(low[service], low[successor])
            elif successor in stack:
                low[service] = min(low[service], index[successor])
        if low[service] == index[service]:
            component: list[str] = []
            while not component or component[-1] != service:
                component.append(stack.pop())
            if len(component) > 1 or service in successors[service]:
                found.append(sorted(component, key=order.__getitem__))

    for service in successors:
        if service not in index:
            visit(service)
    return sorted(found, key=lambda component: order[component[0]])


def _cycle_in(component: list[str], successors: Mapping[str, list[str]]) -> list[str]:
    """A cycle through the component's first service: a breadth-first shortest path back to it."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    queue = [start]
    while queue:
        service = queue.pop(0)
        for successor in successors[service]:
            if successor == start:
                path = [service]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start] if service != start else [start, start]
            if successor in members and successor not in came_from:
                came_from[successor] = service
                queue.append(successor)
    raise AssertionError(f"no cycle through {start}")  # a cycle component always has one


def _cycle_message(graph: Graph, cycle: list[str]) -> str:
    reasons = []
    for importer, exporter in itertools.pairwise(cycle):
        edges = [e for e in graph.edges if (e.importer, e.exporter) == (importer, exporter)]
        if not edges:
            reasons.append(f"{importer} deploys after {exporter} by services.{importer}.after")
            continue
        exports = " and ".join(e.export for e in edges)
        verb = "imports" if any(not e.conditional for e in edges) else "may import"
        reasons.append(f"{importer} {verb} {exports} from {exporter}")
    return f"dependency cycle: {' -> '.join(cycle)} ({', '.join(reasons)})"


def computed_phases(graph: Graph) -> list[list[str]]:
    """The fewest phases the imports allow: each service right after the last phase it imports from.

    Services keep the user's order within a phase.
    """
    cycles = find_cycles(graph)
    if cycles:
        raise PhasedoitError("\n".join(cycles))
    successors = _successors(graph)
    layer: dict[str, int] = {}

    def layer_of(service: str) -> int:
        if service not in layer:
            layer[service] = 1 + max((layer_of(s) for s in successors[service]), default=-1)
        return layer[service]

    layers: list[list[str]] = [[] for _ in range(1 + max(map(layer_of, graph.services), default=-1))]
    for service in graph.services:
        layers[layer[service]].append(service)
    return layers


def missing_external_imports(
    external: Iterable[tuple[str, str]], existing: Collection[str], exports: Mapping[str, str] | None = None
) -> list[str]:
    """Messages for imports that neither a service of the app nor the target account exports.

    `existing` is the export names already in the account/region (one ListExports listing) plus any
    declared as known external exports; `exports`, the app's own (`Graph.exports`), for near misses.
    """
    return [
        f"{importer} imports {export}, which no service of this app exports"
        f" and which does not exist in the target account/region{_near_misses(export, exports or {})}"
        for importer, export in external
        if export not in existing
    ]


def _near_misses(export: str, exports: Mapping[str, str]) -> str:
    """` (did you mean A (a-api) or B (b-api)?)` for the app's exports closest to a missing one, if any."""
    scores = {name: _likeness(export, name) for name in exports}
    close = sorted((name for name in scores if scores[name] >= NEAR_MISS), key=lambda n: (-scores[n], n))[:3]
    if not close:
        return ""
    shown = [f"{name} ({exports[name]})" for name in close]
    listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
    return f" (did you mean {listed}?)"


def _likeness(a: str, b: str) -> float:
    """How alike two names are after the words they share: `dev-app-` would make any two look alike."""
    shared = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    words = max(a.rfind(separator, 0, shared) for separator in "-:/_.") + 1
    return difflib.SequenceMatcher(None, a[words:], b[words:]).ratio()


def unchecked_imports(graph: Graph, known: Collection[str] = ()) -> list[str]:
    """Warnings for conditional imports that no service of the app exports: not checked before deploying.

    `known`: the export names declared as external, which need no warning.
    """
    return [
        f"{found.where}: Fn::ImportValue {found.expression} imports {found.name} only when {found.when},"
        f" which cannot be known before deploying ({found.reason}); no service of this app exports it,"
        " so it is not checked before deploying"
        for _, found in graph.unchecked
        if found.name not in known
    ]


@dataclass(frozen=True)
class Upstream:
    service: str
    conditional: bool  # imported from only under conditions unknown before deploy

    @property
    def label(self) -> str:
        return f"{self.service} (conditional)" if self.conditional else self.service


def upstreams(graph: Graph) -> dict[str, tuple[Upstream, ...]]:
    """The services each service imports from, in the user's order; conditional if every import is."""
    found: dict[str, dict[str, bool]] = {service: {} for service in graph.services}
    for edge in graph.edges:
        found[edge.importer][edge.exporter] = (
            found[edge.importer].get(edge.exporter, True) and edge.conditional
        )
    return {
        service: tuple(Upstream(exporter, conditional) for exporter, conditional in exporters.items())
        for service, exporters in found.items()
    }


def labels(services: Iterable[str], conditional: Collection[str]) -> list[str]:
    """Upstreams as `doit list` and `doit plan` name them: `zone`, `alert (conditional)`."""
    return [Upstream(service, service in conditional).label for service in services]


def to_dot(graph: Graph, phases: Sequence[Phase]) -> str:
    """A Graphviz drawing: a cluster per phase, an arrow exporter -> importer per export.

    A conditional import's arrow is dashed; a dotted one labelled `after` is an `after:`.
    """
    lines = ["digraph phasedoit {", "  rankdir=LR;", "  node [shape=box];"]
    for i, phase in enumerate(phases):
        lines.append(f"  subgraph cluster_{i + 1} {{")
        lines.append(f"    label={_dot_string(phase.label)};")
        lines.extend(f"    {_dot_string(service)};" for service in phase.services)
        lines.append("  }")
    lines.extend(
        f"  {_dot_string(e.exporter)} -> {_dot_string(e.importer)}"
        f" [label={_dot_string(e.export)}{', style=dashed' if e.conditional else ''}];"
        for e in graph.edges
    )
    lines.extend(
        f'  {_dot_string(other)} -> {_dot_string(service)} [style=dotted, label="after"];'
        for service, other in graph.after
    )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_mermaid(graph: Graph, phases: Sequence[Phase]) -> str:
    """A Mermaid flowchart: a subgraph per phase, an arrow exporter -> importer per export.

    A conditional import's arrow is dotted; so is an `after:`, labelled `after`.
    """
    ids = {service: f"s{i}" for i, service in enumerate(_all_services(graph, phases))}
    lines = ["flowchart LR"]
    for i, phase in enumerate(phases):
        lines.append(f'  subgraph phase{i + 1} ["{_mermaid_text(phase.label)}"]')
        lines.extend(f'    {ids[service]}["{_mermaid_text(service)}"]' for service in phase.services)
        lines.append("  end")
    for e in graph.edges:
        arrow = "-.->" if e.conditional else "-->"
        lines.append(f'  {ids[e.exporter]} {arrow}|"{_mermaid_text(e.export)}"| {ids[e.importer]}')
    lines.extend(f"  {ids[other]} -.->|after| {ids[service]}" for service, other in graph.after)
    return "\n".join(lines) + "\n"


def _all_services(graph: Graph, phases: Iterable[Phase]) -> list[str]:
    in_phases = [service for phase in phases for service in phase.services]
    return in_phases + [service for service in graph.services if service not in in_phases]


def _mermaid_text(text: str) -> str:
    # Mermaid has no backslash escapes inside quoted labels; `#quot;` is its entity for a double quote.
    return text.replace('"', "#quot;")


def as_phases(layers: Sequence[Sequence[str]]) -> list[Phase]:
    """Computed phases (unnamed) in the form the checks and drawings take."""
    return [Phase(i + 1, None, tuple(layer)) for i, layer in enumerate(layers)]
