"""The imports run one way (planning -> deployers -> the AWS boundary), and planning never loads boto3."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "phasedoit"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """The phasedoit modules `path` imports when it runs (at the top or in a function), not for typing."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("phasedoit"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(
                    child if (REPO / child.replace(".", "/")).with_suffix(".py").exists() else node.module
                )
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("phasedoit")}
    return found


def test_no_import_cycle() -> None:
    graph = {module_name(p): runtime_imports(p) for p in PACKAGE.rglob("*.py")}
    # a package may load its own modules (a deployer looked up by name): that is not a cycle
    edges = {m: {i for i in imports if i != m and not i.startswith(f"{m}.")} for m, imports in graph.items()}
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(edges.get(module, ())):
            if target in path:
                cycles.append([*path[path.index(target) :], target])
            elif len(path) < 12:
                visit(target, [*path, target])

    for module in sorted(edges):
        visit(module, [module])
    assert cycles == []


def test_planning_does_not_load_boto3() -> None:
    code = "import sys, phasedoit.planning, phasedoit.tasks; print('boto3' in sys.modules, 'moto' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "False False\n"
