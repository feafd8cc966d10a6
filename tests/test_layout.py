"""The package's layout: every import points one way (cli -> service -> parts -> state -> config -> leaves).

Imports inside functions count as much as those at the top: only `if TYPE_CHECKING:`
imports are left out, since they never run.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "daemon"
PARTS = ("engine", "video", "rules", "summaries", "mqtt", "http", "events")
LEAVES = ("daemon.errors", "daemon.types", "daemon.times", "daemon.redact")
# Below the parts: the configuration (every section, the YAML loader, secrets) and the state files (store,
# history, recovery), which every part may read; config imports only leaves, state only leaves and config.
FOUNDATIONS = {"config": set(LEAVES), "state": {*LEAVES, "daemon.config"}}
MAX_LINES = 400  # past it a module is reported (a warning): split it unless splitting would hide a concept
HARD_MAX_LINES = 800  # past it the test fails


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path) -> set[str]:
    """The package modules `path` imports, at any depth, except under `if TYPE_CHECKING:`."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "daemon")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "daemon":
            for a in node.names:  # `from daemon.video import windows` imports the submodule
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in MODULES}


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out



def test_the_checker_sees_a_cycle_and_function_level_imports():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    source = "import typing\nif typing.TYPE_CHECKING:\n    import daemon.cli\ndef f():\n    from daemon import errors\n"
    path = PACKAGE.parent / "tests" / "_layout_probe.py"
    try:
        path.write_text(source)
        assert imports_of(path) == {"daemon.errors"}
    finally:
        path.unlink()


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_nothing_outside_the_cli_imports_it():
    offenders = {m: sorted(i for i in deps if i.startswith("daemon.cli"))
                 for m, deps in GRAPH.items() if not m.startswith("daemon.cli") and m != "daemon.__main__"}
    assert {m: d for m, d in offenders.items() if d} == {}


def inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("part", PARTS)
def test_parts_import_no_service_cli_or_other_part(part):
    below = ("daemon.config", "daemon.state")
    bad = {}
    for module, deps in GRAPH.items():
        if inside(module, f"daemon.{part}"):
            wrong = sorted(d for d in deps if not (d in LEAVES or d == "daemon" or inside(d, f"daemon.{part}")
                                                   or any(inside(d, b) for b in below)))
            if wrong:
                bad[module] = wrong
    assert bad == {}


@pytest.mark.parametrize("foundation", sorted(FOUNDATIONS))
def test_config_and_state_import_only_what_lies_below(foundation):
    package = f"daemon.{foundation}"
    allowed = FOUNDATIONS[foundation]
    bad = {m: sorted(d for d in deps if not (d in allowed or inside(d, package)
                                             or any(inside(d, a) for a in allowed)))
           for m, deps in GRAPH.items() if inside(m, package)}
    assert {m: d for m, d in bad.items() if d} == {}


def test_leaves_import_only_leaves():
    bad = {m: sorted(d for d in GRAPH[m] if d not in LEAVES) for m in LEAVES}
    assert {m: d for m, d in bad.items() if d} == {}


def test_modules_are_small():
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in MODULES.items()}
    large = {m: n for m, n in sizes.items() if n > MAX_LINES}
    if large:
        warnings.warn(UserWarning("modules over %d lines (split them unless that would hide a concept): %s"
                                  % (MAX_LINES, ", ".join(f"{m} {n}" for m, n in sorted(large.items())))))
    assert {m: n for m, n in large.items() if n > HARD_MAX_LINES} == {}
