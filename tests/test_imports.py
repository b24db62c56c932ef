"""The import structure, read with `ast` from every module of flows/ and sana_core/ (module-level and function-local
imports alike): no import circles; a stage module imports no other stage (only `flows.stages._common`); a command
imports no stage; the library (`sana_core`) never imports the glue (`flows`)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "sana_core")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def _graph() -> dict[str, set[str]]:
    """module → the project modules it imports (`from pkg import name` counts as pkg.name when that is a module)."""
    mods = _modules()
    graph = {}
    for name, f in mods.items():
        is_pkg = f.name == "__init__.py"
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here[:len(here) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:      # `import a.b.c` of a non-module attribute → the nearest module
                    t = t.rpartition(".")[0]
                if t and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


GRAPH = _graph()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_the_known_edges():
    """The graph is read correctly: a few edges that exist, in each import form (absolute, relative, `from pkg import
    module`), are found, and the walk covers both packages."""
    assert {"flows.stages._common", "flows.stage_runner"} <= GRAPH["flows.stages.judge"]
    assert "sana_core.geneval.world" in GRAPH["sana_core.geneval.detect"]          # from .world import ...
    assert "sana_core.geneval.detect" in GRAPH["sana_core.geneval.score"]          # from . import detect
    assert len([m for m in GRAPH if m.startswith("flows.stages.")]) >= 15 and len(GRAPH) > 60


def test_cycle_finder_finds_a_planted_circle():
    g = {k: set(v) for k, v in GRAPH.items()}
    g["sana_core.geneval.world"].add("sana_core.geneval.score")
    assert any({"sana_core.geneval.world", "sana_core.geneval.score"} <= set(c) for c in _cycles(g))


def test_no_import_circles():
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize("layer", ["flows.stages.", "flows.commands."])
def test_stages_and_commands_import_no_stage(layer):
    bad = {m: sorted(d for d in deps if d.startswith("flows.stages.") and d != "flows.stages._common")
           for m, deps in GRAPH.items() if m.startswith(layer)}
    assert {m: d for m, d in bad.items() if d} == {}


def test_library_never_imports_the_glue():
    bad = {m: sorted(d for d in deps if d.split(".")[0] == "flows") for m, deps in GRAPH.items()
           if m.startswith("sana_core")}
    assert {m: d for m, d in bad.items() if d} == {}
