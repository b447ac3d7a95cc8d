"""The package's import graph points one way (README "Architecture", ``plmkit/__init__.py``).

Every ``import plmkit...`` in ``src/plmkit`` counts, at module level or inside functions, and so does
``importlib.import_module("plmkit...")`` with a literal name. ``from plmkit.a import b`` is an edge to
``plmkit.a.b`` when that is a module, else to ``plmkit.a`` (a package's ``__init__`` is a node like
any other file). The tests fail on:
- any import cycle (a strongly connected component of more than one file);
- any import from ``plmkit.models`` of something outside ``plmkit.models`` / ``plmkit.errors``, and any
  dynamic import there (``import_module`` / ``__import__``: no probing for optional modules).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LEAF_ALLOWED = ("plmkit.models", "plmkit.errors")


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted((SRC / "plmkit").rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The longest prefix of dotted ``name`` that is a module of the package."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in mods:
            return ".".join(parts)
        parts.pop()
    return None


def _imports(module: str, path: Path) -> tuple[list[str], list[int]]:
    """(imported names, lines of dynamic imports) of one file."""
    is_pkg = path.name == "__init__.py"
    base = module if is_pkg else module.rsplit(".", 1)[0]
    names, dynamic = [], []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                target = ".".join(parts) + ("." + node.module if node.module else "")
            else:
                target = node.module or ""
            names += [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call):
            func = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if func in ("import_module", "__import__"):
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.append(arg.value)
                dynamic.append(node.lineno)
    return names, dynamic


def _graph() -> tuple[dict[str, set[str]], dict[str, list[int]]]:
    mods = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    dynamic: dict[str, list[int]] = {}
    for module, path in mods.items():
        names, dyn = _imports(module, path)
        if dyn:
            dynamic[module] = dyn
        for name in names:
            if name == "plmkit" or name.startswith("plmkit."):
                target = _resolve(name, mods)
                if target is not None and target != module:
                    edges[module].add(target)
        edges.setdefault(module, set())
    return edges, dynamic


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_graph_walk_sees_function_level_and_literal_dynamic_imports():
    edges, _ = _graph()
    assert "plmkit.models.transformer" in edges["plmkit.models"]  # a lazy import inside __getattr__
    assert "plmkit.interop" in edges["plmkit"]  # the composition root's function-level import
    fake = {"a.b": {"a.c"}, "a.c": {"a.b"}, "a.d": {"a.b"}}
    assert _cycles(fake) == [["a.b", "a.c"]]


def test_models_is_a_leaf():
    edges, dynamic = _graph()
    upward = {m: sorted(t for t in targets if not t.startswith(LEAF_ALLOWED))
              for m, targets in edges.items() if m.startswith("plmkit.models")}
    upward = {m: t for m, t in upward.items() if t}
    assert not upward, f"plmkit.models imports above its layer: {upward}"
    probing = {m: lines for m, lines in dynamic.items() if m.startswith("plmkit.models")}
    assert not probing, f"dynamic imports in plmkit.models (file: lines): {probing}"


def test_no_import_cycles():
    edges, _ = _graph()
    cycles = _cycles(edges)
    assert not cycles, "import cycles:\n" + "\n".join(", ".join(c) for c in cycles)


def test_import_plmkit_stays_light():
    """The composition root registers its hooks without importing torch, the configs or the model code
    (``plm --help`` imports ``plmkit``)."""
    code = ("import sys, plmkit, plmkit.models; "
            "print(sorted(m for m in ('torch', 'dataclasses', 'plmkit.interop', 'plmkit.generation', 'plmkit.classic', "
            "'plmkit.models.config', 'plmkit.models.presets', 'plmkit.models.transformer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == "[]"


# Each top-level part of plmkit and its layer (README "Architecture"): a module may import its own layer
# and the layers below, never above. ``plmkit`` itself is the composition root and public facade
# (``plmkit.load``): the workflow layers may call it, the engine below it may not.
LAYERS = {
    "plmkit.errors": 0, "plmkit.textio": 0, "plmkit.checks": 0, "plmkit.progress": 0, "plmkit.packages": 0,
    "plmkit.models": 1,
    "plmkit.tokenization": 2, "plmkit.data": 2,
    "plmkit.classic": 3, "plmkit.generation": 3, "plmkit.interop": 3, "plmkit.objectives": 3,
    "plmkit.config": 4, "plmkit.training": 4,
    "plmkit": 5,
    "plmkit.tasks": 6, "plmkit.knowledge": 6, "plmkit.prompting": 6, "plmkit.compression": 6,
    "plmkit.attribution": 6, "plmkit.analysis": 6, "plmkit.reporting": 6,
    "plmkit.pipelines": 7, "plmkit.reproduce": 7,
    "plmkit.cli": 8, "plmkit.__main__": 8,
}


def _part(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_every_part_has_a_layer():
    parts = {_part(m) for m in _modules()}
    missing = sorted(parts - set(LAYERS))
    assert not missing, f"give these parts a layer in LAYERS (and README's Architecture picture): {missing}"


def test_imports_point_down():
    edges, _ = _graph()
    upward = sorted(f"{m} -> {t}" for m, targets in edges.items() for t in targets
                    if _part(m) in LAYERS and _part(t) in LAYERS and LAYERS[_part(t)] > LAYERS[_part(m)])
    assert not upward, "imports above their layer:\n" + "\n".join(upward)


def test_layer_check_catches_an_upward_import():
    fake = {"plmkit.training.trainer": {"plmkit.tasks.finetuning"}}
    upward = [t for m, ts in fake.items() for t in ts if LAYERS[_part(t)] > LAYERS[_part(m)]]
    assert upward == ["plmkit.tasks.finetuning"]
