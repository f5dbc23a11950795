from __future__ import annotations

import pytest

from phasedoit import graph
from phasedoit.config import Phase
from phasedoit.errors import PhasedoitError
from phasedoit.graph import Edge
from phasedoit.templates import Conditional, Dependencies


def _deps(exports: str = "", imports: str = "") -> Dependencies:
    return Dependencies(frozenset(exports.split()), frozenset(imports.split()))


SHOP = {
    "checkout-api": _deps("dev-PurchasedTopicArn dev-OrdersTable"),
    "users-api": _deps("dev-UsersTable"),
    "confirmation-job": _deps(imports="dev-PurchasedTopicArn dev-UsersTable"),
    "billing-job": _deps("dev-Invoices", "dev-OrdersTable dev-Nope"),
    "email-job": _deps(imports="dev-Invoices"),
}


def test_build_graph_edges_in_user_order() -> None:
    shop = graph.build_graph(SHOP)
    assert shop.edges == (
        Edge("confirmation-job", "checkout-api", "dev-PurchasedTopicArn"),
        Edge("confirmation-job", "users-api", "dev-UsersTable"),
        Edge("billing-job", "checkout-api", "dev-OrdersTable"),
        Edge("email-job", "billing-job", "dev-Invoices"),
    )
    assert shop.external == (("billing-job", "dev-Nope"),)


def test_export_defined_twice() -> None:
    with pytest.raises(PhasedoitError) as excinfo:
        graph.build_graph({"a": _deps("dev-X dev-Y"), "b": _deps("dev-X"), "c": _deps("dev-Y")})
    assert (
        str(excinfo.value)
        == "export dev-X is defined by both a and b\nexport dev-Y is defined by both a and c"
    )


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        (
            [
                Phase(1, None, ("checkout-api", "users-api")),
                Phase(2, None, ("confirmation-job", "billing-job")),
                Phase(3, None, ("email-job",)),
            ],
            [],
        ),
        (
            [
                Phase(1, "api", ("checkout-api", "users-api", "confirmation-job")),
                Phase(2, "jobs", ("billing-job", "email-job")),
            ],
            [
                "confirmation-job (phase 1 'api') imports dev-PurchasedTopicArn from checkout-api"
                " (phase 1 'api'): move confirmation-job to a phase after 1",
                "confirmation-job (phase 1 'api') imports dev-UsersTable from users-api"
                " (phase 1 'api'): move confirmation-job to a phase after 1",
                "email-job (phase 2 'jobs') imports dev-Invoices from billing-job"
                " (phase 2 'jobs'): move email-job to a phase after 2",
            ],
        ),
        (
            [
                Phase(1, None, ("checkout-api", "email-job")),
                Phase(2, None, ("users-api", "confirmation-job")),
                Phase(3, None, ("billing-job",)),
            ],
            [
                "confirmation-job (phase 2) imports dev-UsersTable from users-api (phase 2):"
                " move confirmation-job to a phase after 2",
                "email-job (phase 1) imports dev-Invoices from billing-job (phase 3):"
                " move email-job to a phase after 3",
            ],
        ),
    ],
)
def test_check_phases(phases: list[Phase], expected: list[str]) -> None:
    assert graph.check_phases(graph.build_graph(SHOP), phases) == expected


CYCLIC = {
    "a": _deps("dev-A", "dev-B"),
    "b": _deps("dev-B dev-B2", "dev-C"),
    "c": _deps("dev-C", "dev-A dev-D"),
    "d": _deps("dev-D"),
    "e": _deps("dev-E", "dev-F"),
    "f": _deps("dev-F", "dev-E"),
    "g": _deps("dev-G", "dev-G"),
    "h": _deps("dev-H1 dev-H2", "dev-I"),
    "i": _deps("dev-I", "dev-H1 dev-H2"),
}


def test_cycles() -> None:
    assert graph.find_cycles(graph.build_graph(CYCLIC)) == [
        "dependency cycle: a -> b -> c -> a"
        " (a imports dev-B from b, b imports dev-C from c, c imports dev-A from a)",
        "dependency cycle: e -> f -> e (e imports dev-F from f, f imports dev-E from e)",
        "dependency cycle: g -> g (g imports dev-G from g)",
        "dependency cycle: h -> i -> h (h imports dev-I from i, i imports dev-H1 and dev-H2 from h)",
    ]


def test_cycles_start_at_the_first_service_in_the_users_order() -> None:
    reordered = dict(reversed(list(CYCLIC.items())))
    assert graph.find_cycles(graph.build_graph(reordered)) == [
        "dependency cycle: i -> h -> i (i imports dev-H1 and dev-H2 from h, h imports dev-I from i)",
        "dependency cycle: g -> g (g imports dev-G from g)",
        "dependency cycle: f -> e -> f (f imports dev-E from e, e imports dev-F from f)",
        "dependency cycle: c -> a -> b -> c"
        " (c imports dev-A from a, a imports dev-B from b, b imports dev-C from c)",
    ]


def test_cycle_shown_is_a_shortest_one_through_the_first_service() -> None:
    deps = {
        "a": _deps("dev-A", "dev-B dev-C"),
        "b": _deps("dev-B", "dev-C"),
        "c": _deps("dev-C", "dev-A"),
    }
    assert graph.find_cycles(graph.build_graph(deps)) == [
        "dependency cycle: a -> c -> a (a imports dev-C from c, c imports dev-A from a)"
    ]


def test_validate_reports_cycles_before_phase_violations() -> None:
    deps = {"a": _deps("dev-A", "dev-B"), "b": _deps("dev-B", "dev-A")}
    assert graph.validate(graph.build_graph(deps), [Phase(1, None, ("a",)), Phase(2, None, ("b",))]) == [
        "dependency cycle: a -> b -> a (a imports dev-B from b, b imports dev-A from a)"
    ]


def test_computed_phases_cycle_is_an_error() -> None:
    with pytest.raises(PhasedoitError) as excinfo:
        graph.computed_phases(graph.build_graph({"e": _deps("dev-E", "dev-F"), "f": _deps("dev-F", "dev-E")}))
    assert (
        str(excinfo.value) == "dependency cycle: e -> f -> e (e imports dev-F from f, f imports dev-E from e)"
    )


@pytest.mark.parametrize(
    ("deps", "expected"),
    [
        ({}, []),
        ({"a": _deps(), "b": _deps()}, [["a", "b"]]),
        (SHOP, [["checkout-api", "users-api"], ["confirmation-job", "billing-job"], ["email-job"]]),
        # the user's order is kept within a phase, whatever the order of dependencies
        (
            {
                "z-job": _deps(imports="dev-A"),
                "m-api": _deps("dev-M"),
                "a-api": _deps("dev-A"),
                "b-job": _deps(imports="dev-M"),
            },
            [["m-api", "a-api"], ["z-job", "b-job"]],
        ),
        # longest path: d waits for c, which waits for b
        (
            {
                "d": _deps(imports="dev-A dev-C"),
                "c": _deps("dev-C", "dev-B"),
                "b": _deps("dev-B", "dev-A"),
                "a": _deps("dev-A"),
            },
            [["a"], ["b"], ["c"], ["d"]],
        ),
    ],
)
def test_computed_phases(deps: dict[str, Dependencies], expected: list[list[str]]) -> None:
    assert graph.computed_phases(graph.build_graph(deps)) == expected


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ({"dev-Nope", "other"}, []),
        (
            set(),
            [
                "billing-job imports dev-Nope, which no service of this app exports"
                " and which does not exist in the target account/region"
            ],
        ),
    ],
)
def test_missing_external_imports(existing: set[str], expected: list[str]) -> None:
    assert graph.missing_external_imports(graph.build_graph(SHOP).external, existing) == expected


SMALL = {
    "users-api": _deps("dev-Users"),
    "orders-api": _deps("dev-Orders"),
    "mail-job": _deps(imports="dev-Orders dev-Users"),
}
SMALL_PHASES = [Phase(1, "apis", ("users-api", "orders-api")), Phase(2, None, ("mail-job",))]


def test_dot() -> None:
    assert graph.to_dot(graph.build_graph(SMALL), SMALL_PHASES) == (
        "digraph phasedoit {\n"
        "  rankdir=LR;\n"
        "  node [shape=box];\n"
        "  subgraph cluster_1 {\n"
        "    label=\"phase 1 'apis'\";\n"
        '    "users-api";\n'
        '    "orders-api";\n'
        "  }\n"
        "  subgraph cluster_2 {\n"
        '    label="phase 2";\n'
        '    "mail-job";\n'
        "  }\n"
        '  "users-api" -> "mail-job" [label="dev-Users"];\n'
        '  "orders-api" -> "mail-job" [label="dev-Orders"];\n'
        "}\n"
    )


def test_mermaid() -> None:
    assert graph.to_mermaid(graph.build_graph(SMALL), SMALL_PHASES) == (
        "flowchart LR\n"
        "  subgraph phase1 [\"phase 1 'apis'\"]\n"
        '    s0["users-api"]\n'
        '    s1["orders-api"]\n'
        "  end\n"
        '  subgraph phase2 ["phase 2"]\n'
        '    s2["mail-job"]\n'
        "  end\n"
        '  s0 -->|"dev-Users"| s2\n'
        '  s1 -->|"dev-Orders"| s2\n'
    )


def test_drawing_computed_phases() -> None:
    small = graph.build_graph(SMALL)
    phases = graph.as_phases(graph.computed_phases(small))
    assert phases == [Phase(1, None, ("users-api", "orders-api")), Phase(2, None, ("mail-job",))]
    assert graph.to_mermaid(small, phases).splitlines()[1] == '  subgraph phase1 ["phase 1"]'


def _conditional(name: str, when: str = "condition HasX is true") -> Conditional:
    return Conditional(
        name, f"services/{name}/template.yml: Resources.R", f'"{name}"', when, "no known value for Y"
    )


CONDITIONAL = {
    "alert": Dependencies(
        frozenset(["dev-Topic"]),
        conditional_exports=(_conditional("dev-Extra"), _conditional("dev-Fallback")),
    ),
    "db": _deps("dev-Db"),
    "web": Dependencies(
        frozenset(),
        frozenset(["dev-Db"]),
        conditional_imports=(_conditional("dev-Topic"), _conditional("ops-Topic"), _conditional("dev-Extra")),
    ),
    "job": Dependencies(frozenset(), frozenset(["dev-Extra"]), conditional_imports=(_conditional("dev-Db"),)),
    "fallback": Dependencies(conditional_exports=(_conditional("dev-Fallback"),)),
    "user": _deps(imports="dev-Fallback"),
}


def test_conditional_imports_and_exports() -> None:
    found = graph.build_graph(CONDITIONAL)
    assert found.edges == (
        Edge("web", "alert", "dev-Extra", conditional=True),
        Edge("web", "alert", "dev-Topic", conditional=True),
        Edge("web", "db", "dev-Db"),
        Edge("job", "alert", "dev-Extra", conditional=True),
        Edge("job", "db", "dev-Db", conditional=True),
        # two conditional exports of one name: its importer waits for both
        Edge("user", "alert", "dev-Fallback", conditional=True),
        Edge("user", "fallback", "dev-Fallback", conditional=True),
    )
    assert found.external == ()
    assert found.unchecked == (("web", _conditional("ops-Topic")),)
    assert found.exports == (
        ("dev-Db", "db"),
        ("dev-Extra", "alert"),
        ("dev-Fallback", "alert"),
        ("dev-Topic", "alert"),
    )
    assert graph.computed_phases(found) == [["alert", "db", "fallback"], ["web", "job", "user"]]
    assert graph.upstreams(found) == {
        "alert": (),
        "db": (),
        "web": (graph.Upstream("alert", True), graph.Upstream("db", False)),
        # an unconditional import of a conditional export is conditional too
        "job": (graph.Upstream("alert", True), graph.Upstream("db", True)),
        "fallback": (),
        "user": (graph.Upstream("alert", True), graph.Upstream("fallback", True)),
    }
    assert [u.label for u in graph.upstreams(found)["web"]] == ["alert (conditional)", "db"]
    # one unconditional import is enough for an unconditional upstream
    both = {
        "a": _deps("dev-A dev-B"),
        "b": Dependencies(imports=frozenset(["dev-A"]), conditional_imports=(_conditional("dev-B"),)),
    }
    assert graph.upstreams(graph.build_graph(both))["b"] == (graph.Upstream("a", False),)


def test_conditional_imports_outside_the_app_are_warnings() -> None:
    found = graph.build_graph(CONDITIONAL)
    assert graph.unchecked_imports(found) == [
        'services/ops-Topic/template.yml: Resources.R: Fn::ImportValue "ops-Topic" imports ops-Topic only when'
        " condition HasX is true, which cannot be known before deploying (no known value for Y);"
        " no service of this app exports it, so it is not checked before deploying"
    ]
    assert graph.unchecked_imports(found, known={"ops-Topic"}) == []


def test_a_conditional_export_beside_an_unconditional_one_is_no_error() -> None:
    deps = {
        "a": _deps("dev-X"),
        "b": Dependencies(conditional_exports=(_conditional("dev-X"),)),
        "c": _deps("dev-X"),
    }
    with pytest.raises(PhasedoitError) as excinfo:
        graph.build_graph(deps)
    assert str(excinfo.value) == "export dev-X is defined by both a and c"
    del deps["c"]
    assert graph.build_graph({**deps, "i": _deps(imports="dev-X")}).edges == (
        Edge("i", "a", "dev-X"),
        Edge("i", "b", "dev-X", conditional=True),
    )


def test_conditional_imports_in_phase_checks_and_cycles() -> None:
    deps = {
        "a": Dependencies(frozenset(["dev-A"]), conditional_imports=(_conditional("dev-B"),)),
        "b": _deps("dev-B"),
    }
    assert graph.check_phases(graph.build_graph(deps), [Phase(1, None, ("a", "b"))]) == [
        "a (phase 1) may import dev-B from b (phase 1): move a to a phase after 1"
    ]
    deps["b"] = _deps("dev-B", "dev-A")
    assert graph.find_cycles(graph.build_graph(deps)) == [
        "dependency cycle: a -> b -> a (a may import dev-B from b, b imports dev-A from a)"
    ]


NOTES = {
    "infra-dynamodb": _deps("dev-notes-ext-infra-TableName dev-notes-ext-infra-TableArn"),
    "infra-queue": _deps(
        "dev-notes-ext-infra-QueueName dev-notes-ext-infra-QueueArn dev-notes-ext-infra-QueueUrl"
    ),
    "notes-api": _deps(
        imports="dev-notes-ext-infra-ExtTableName dev-notes-ext-infra-Queue dev-notes-ext-infra-QueueNam dev-other-Vpc"
    ),
}


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (
            set(),
            [
                "notes-api imports dev-notes-ext-infra-ExtTableName, which no service of this app exports"
                " and which does not exist in the target account/region"
                " (did you mean dev-notes-ext-infra-TableName (infra-dynamodb)?)",
                # the closest first, at most three
                "notes-api imports dev-notes-ext-infra-Queue, which no service of this app exports"
                " and which does not exist in the target account/region"
                " (did you mean dev-notes-ext-infra-QueueArn (infra-queue), dev-notes-ext-infra-QueueUrl"
                " (infra-queue) or dev-notes-ext-infra-QueueName (infra-queue)?)",
                "notes-api imports dev-notes-ext-infra-QueueNam, which no service of this app exports"
                " and which does not exist in the target account/region"
                " (did you mean dev-notes-ext-infra-QueueName (infra-queue)?)",
                # nothing of the app is close: no hint
                "notes-api imports dev-other-Vpc, which no service of this app exports"
                " and which does not exist in the target account/region",
            ],
        ),
        (
            {
                "dev-notes-ext-infra-ExtTableName",
                "dev-notes-ext-infra-Queue",
                "dev-notes-ext-infra-QueueNam",
                "dev-other-Vpc",
            },
            [],
        ),
    ],
)
def test_missing_external_imports_suggest_near_misses(existing: set[str], expected: list[str]) -> None:
    notes = graph.build_graph(NOTES)
    assert graph.missing_external_imports(notes.external, existing, dict(notes.exports)) == expected


def test_drawings_of_conditional_imports() -> None:
    deps = {"a": _deps("dev-A"), "b": Dependencies(conditional_imports=(_conditional("dev-A"),))}
    phases = [Phase(1, None, ("a",)), Phase(2, None, ("b",))]
    found = graph.build_graph(deps)
    assert graph.to_dot(found, phases).splitlines()[-2] == '  "a" -> "b" [label="dev-A", style=dashed];'
    assert graph.to_mermaid(found, phases).splitlines()[-1] == '  s0 -.->|"dev-A"| s1'
