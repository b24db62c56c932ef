"""dvc.yaml is the DAG: read DVC's own stage graph (stack-notes §9, §12) — no second copy of the pipeline in Python.

`load_dag(root)` → `Dag` with stages in topological order (ties broken by dvc.yaml order, so foreach items keep their
params order), each stage's upstream stages, cmd, deps, outs, metrics and plots files. Reading needs no `dvc init`
(`Repo(..., uninitialized=True)`), so tools can inspect a checkout before DVC is set up.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    name: str                      # DVC addressing within dvc.yaml: "data", "prune@8"
    cmd: str
    upstream: list[str]
    deps: list[str]
    outs: list[str]                # every out incl. metrics/plots, relative to the root
    metrics: list[str]
    plots: list[str]
    base: str = ""                 # "prune" for "prune@8"
    item: str | None = None        # "8" for "prune@8"

    def __post_init__(self):
        self.base, _, item = self.name.partition("@")
        self.item = item or None


@dataclass
class Dag:
    root: Path
    stages: dict[str, Stage] = field(default_factory=dict)  # topological order

    @property
    def order(self) -> list[str]:
        return list(self.stages)

    def closure(self, targets: list[str]) -> list[str]:
        """`targets` (names or bases: "prune" = every prune@*) plus everything upstream, in order."""
        want: set[str] = set()
        for t in targets:
            hits = [n for n, s in self.stages.items() if n == t or s.base == t]
            if not hits:
                raise ValueError(f"dvc.yaml: no stage {t!r} (stages: {self.order})")
            want.update(hits)
        todo = list(want)
        while todo:
            for u in self.stages[todo.pop()].upstream:
                if u not in want:
                    want.add(u)
                    todo.append(u)
        return [n for n in self.order if n in want]


@contextmanager
def _chdir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _overlaps(a: str, b: str) -> bool:
    pa, pb = Path(a).parts, Path(b).parts
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def load_dag(root: str | Path = ".") -> Dag:
    """Parse `<root>/dvc.yaml` with DVC (params interpolated, foreach expanded) into a `Dag`."""
    import networkx as nx
    from dvc.repo import Repo

    root = Path(root).resolve()
    if not (root / "dvc.yaml").exists():
        raise FileNotFoundError(f"{root / 'dvc.yaml'}: no such file")
    with _chdir(root), Repo(str(root), uninitialized=True) as repo:
        g = repo.index.graph  # edge A -> B means "A depends on B"
        position = {s: i for i, s in enumerate(repo.index.stages)}
        names = {s: s.name for s in g.nodes}
        order = list(nx.lexicographical_topological_sort(g.reverse(copy=True), key=lambda s: position.get(s, 0)))
        pos = {s: i for i, s in enumerate(order)}
        dag = Dag(root)
        for s in order:
            outs = [str(o.def_path) for o in s.outs]
            dag.stages[names[s]] = Stage(
                name=names[s], cmd=s.cmd if isinstance(s.cmd, str) else " && ".join(s.cmd),
                upstream=[names[u] for u in sorted(g.successors(s), key=pos.get)],
                deps=[str(d.def_path) for d in s.deps], outs=outs,
                metrics=[str(o.def_path) for o in s.outs if o.metric],
                plots=[str(o.def_path) for o in s.outs if o.plot])
    _check_disjoint(dag)
    return dag


def _check_disjoint(dag: Dag) -> None:
    """Concurrent stages need disjoint outs (DVC's rwlock); DVC already refuses overlaps — fail early and clearly."""
    seen: list[tuple[str, str]] = []
    for n, s in dag.stages.items():
        for o in s.outs:
            for m, p in seen:
                if m != n and _overlaps(o, p):
                    raise ValueError(f"dvc.yaml: outs overlap: {n} → {o!r} and {m} → {p!r}")
            seen.append((n, o))
