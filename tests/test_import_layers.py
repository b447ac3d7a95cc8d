"""Imports between the workflow layers point down only (docs/DESIGN layering), and none of their modules is in
an import cycle. Every ``import plmkit...`` counts, also inside functions (walked from the AST of src/plmkit).

    cli/        -> pipelines/ -> tasks/ -> training/ (and config.py below them all)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# package -> the packages above it, which it must never import
ABOVE = {
    "plmkit.config": ("plmkit.training", "plmkit.tasks", "plmkit.pipelines", "plmkit.cli"),
    "plmkit.training": ("plmkit.tasks", "plmkit.pipelines", "plmkit.cli"),
    "plmkit.tasks": ("plmkit.pipelines", "plmkit.cli"),
    "plmkit.pipelines": ("plmkit.cli",),
}
CHECKED = ("plmkit.config", "plmkit.training", "plmkit.tasks", "plmkit.pipelines", "plmkit.cli")


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "plmkit").rglob("*.py"):
        name = ".".join(p.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _resolve(name: str, mods: dict) -> str | None:
    parts = name.split(".")
    while parts:
        if ".".join(parts) in mods:
            return ".".join(parts)
        parts.pop()
    return None


def import_graph() -> dict[str, set[str]]:
    """module -> the plmkit modules it imports (``from a import b`` counts ``a`` and, if a module, ``a.b``)."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        base = m if path.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    b = base.split(".")[: len(base.split(".")) - (node.level - 1)]
                    mod = ".".join(b) + ("." + mod if mod else "")
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
                targets = [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            else:
                continue
            for t in targets:
                r = _resolve(t, mods) if t.startswith("plmkit") else None
                if r and r != m:
                    edges[m].add(r)
    return edges


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


@pytest.fixture(scope="module")
def edges():
    return import_graph()


def test_the_graph_sees_function_level_imports(edges):
    # pipelines/pretrain.py imports the Trainer inside run_pretraining (a function-level import)
    assert "plmkit.training.trainer" in edges["plmkit.pipelines.pretrain"]
    assert "plmkit.pipelines.pretrain" in edges["plmkit.cli.pretrain"]


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_imports_point_down(edges, package):
    upward = sorted(f"{m} -> {t}" for m, ts in edges.items() if _in(m, package)
                    for t in ts if any(_in(t, above) for above in ABOVE[package]))
    assert not upward, upward


def test_no_import_cycle_through_the_workflow_layers(edges):
    cycles = [c for c in _cycles(edges) if any(_in(m, p) for m in c for p in CHECKED)]
    assert not cycles, cycles


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
