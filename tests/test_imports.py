"""Imports go down the data flow, and no module imports itself back (issue 14).

Every module of the package is parsed with :mod:`ast` (nothing is imported), and
every ``import`` and ``from ... import`` statement counts wherever it stands: at
module level, inside functions (lazy imports), in ``try`` blocks, and inside
``if TYPE_CHECKING:`` blocks too — those are **not** excluded, so a type-only
import from a higher layer is an up-arrow like any other (none is needed: the
reports' type-only imports of the tuner and planner go down). Imports made by
``importlib.import_module`` are not seen (the package root uses one, for ``zoo``,
a base module).

``from X import name`` is an edge to the module ``X.name`` when that is a module of
the package, else to ``X``. A submodule import is not counted as importing its
parent packages' ``__init__`` (Python runs them first, but within a package that
is how packages work, not a design choice).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tvm_memflat

PACKAGE = "tvm_memflat"
ROOT = Path(tvm_memflat.__file__).resolve().parent

#: The layers, lowest first: a module may import its own sub-package (or top-level
#: module) and anything in a lower layer, never a higher one. Each entry names the
#: sub-packages and top-level modules of that layer; ``tvm_memflat`` is the package
#: root (``tvm_memflat/__init__.py``, the lazy public API).
LAYERS: list[tuple[str, set[str]]] = [
    # Base modules anyone may import; they import only each other.
    ("base", {"errors", "_io", "_onnx_fold", "host", "naming", "spec", "zoo"}),
    ("frontend", {"frontend"}),            # ONNX / zoo -> Relax
    ("fusion_passes", {"fusion_passes"}),  # legalize memo + opaque marks (profile and build)
    ("analysis", {"analysis"}),            # pure: schedule, lifetimes, profile
    ("transform", {"transform"}),          # the rewrites and the greedy search
    ("lowering", {"lowering"}),            # our lowering around TVM's
    ("planner", {"planner"}),              # offsets, spec plans, the whole-pipeline pass
    ("hardware", {"hardware"}),            # the spec's cycle model
    ("tuner", {"tuner"}),                  # latency-budget search, llvm model, measurement
    ("targets", {"targets"}),              # build for llvm / vta_like, run, stock baseline
    ("passes", {"passes"}),                # the public FlattenMemoryPeaks pass
    ("workflows", {"workflows"}),          # profile / optimize / plan as library functions
    ("reports", {"reports"}),              # text, JSON, plots
    ("cli", {"cli"}),                      # `memflat`
    ("entry", {PACKAGE, "__main__"}),      # the package root's lazy API, `python -m`
]
BASE = "base"


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = [PACKAGE, *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> list[tuple[str, int]]:
    """(module of the package imported, line) for every import statement in ``name``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    base_parts = name.split(".") if _is_package(name) else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    found.append((_existing(alias.name), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base_parts[:len(base_parts) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in MODULES else _existing(target), node.lineno))
    return found


def _existing(name: str) -> str:
    """``name``, or its closest parent that is a module of the package."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _unit(name: str) -> str:
    """The sub-package or top-level module ``name`` belongs to (``tvm_memflat``: the root)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


LAYER_OF = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}


def _layer(name: str) -> int:
    return LAYER_OF[_unit(name)]


GRAPH = {name: sorted(set(_imports(name))) for name in MODULES}


def test_every_module_has_a_layer():
    missing = sorted({_unit(m) for m in MODULES} - set(LAYER_OF))
    assert not missing, (f"add {missing} to LAYERS in tests/test_imports.py (and to the "
                         "diagram in docs/architecture.md)")


def test_no_import_cycle():
    """No module reaches itself through imports (function-local ones included)."""
    edges = {m: sorted({t for t, _ in GRAPH[m] if t != m}) for m in GRAPH}
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(edges, white)
    stack: list[str] = []

    def visit(m):
        colour[m] = grey
        stack.append(m)
        for t in edges[m]:
            if colour[t] == grey:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if colour[t] == white:
                visit(t)
        stack.pop()
        colour[m] = black

    for m in sorted(edges):
        if colour[m] == white:
            visit(m)


def test_imports_go_down_the_layers():
    """Every import is within its own sub-package, or into a lower layer (base modules
    import only base modules)."""
    names = [name for name, _ in LAYERS]
    up = []
    for m, targets in GRAPH.items():
        for t, line in targets:
            if _unit(t) == _unit(m):
                continue
            if _layer(t) < _layer(m) or (names[_layer(m)] == BASE and names[_layer(t)] == BASE):
                continue
            up.append(f"{MODULES[m].relative_to(ROOT.parent)}:{line}: {m} "
                      f"({names[_layer(m)]}) imports {t} ({names[_layer(t)]})")
    assert not up, "imports going up the layers:\n" + "\n".join(up)


def test_the_checker_sees_function_local_and_relative_imports():
    """The parser itself: lazy imports inside functions and ``from .. import x`` count."""
    tuner = {t for t, _ in GRAPH[f"{PACKAGE}.tuner.tuner"]}
    assert f"{PACKAGE}.spec" in tuner           # imported inside tune()
    assert f"{PACKAGE}.tuner.measure" in tuner  # imported inside tune() and _measure()
    tile_region = {t for t, _ in GRAPH[f"{PACKAGE}.transform.tile_region"]}
    assert f"{PACKAGE}.naming" in tile_region   # `from .. import naming`
