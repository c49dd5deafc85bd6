"""The package is layered: nothing imports upward and no import cycle exists, function-level imports included.

Layers, bottom to top (a module may import its own layer and the layers below it):

0. architecture data and graph, pure Python: ``specs``, ``graph``, ``constants``, ``files`` (result files);
1. ``layers/``, ``profile``, ``metrics`` and ``visualize`` (torch building blocks, counters, metrics, drawing);
2. the backbone: ``backbone``, ``backbones`` (the registered backbone table and its configuration);
3. task models: ``models/``;
4. the registry and weights files: ``registry``, ``weights``;
5. training: ``data/``, ``engine/``, ``tasks/``;
6. tools: ``convert/``, ``export``, ``search/``, ``experiments/``, ``draw``, ``predict``;
7. the command line and the package facade: ``cli``, ``__main__``, ``spinenet/__init__``.

Each module is placed by its path (its first component below ``spinenet``); a module this table does not place
fails the test, so a new module has to be given a layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "spinenet"
LAYERS: list[tuple[str, ...]] = [
    ("specs", "graph", "constants", "files"),
    ("layers", "profile", "metrics", "visualize"),
    ("backbone", "backbones"),
    ("models",),
    ("registry", "weights"),
    ("data", "engine", "tasks"),
    ("convert", "export", "search", "experiments", "draw", "predict"),
    ("cli", "__main__", "__init__"),
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}
# Same-layer imports that close a cycle, each with the change that removes it. Only these edges are left out of the
# cycle search; an upward import is never allowed. None is left.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = ["spinenet", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    if key not in LAYER_OF:
        raise AssertionError(f"{module}: no layer for {key!r}; add it to LAYERS in tests/test_layers.py")
    return LAYER_OF[key]


def imports(module: str) -> set[str]:
    """Every ``spinenet`` module ``module`` imports anywhere in its body (``from X import sub`` -> ``X.sub``)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "spinenet")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "spinenet":
                continue
            subs = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
            found.update(subs or [target])
            if subs and len(subs) < len(node.names):
                found.add(target)
    found.discard(module)
    unknown = {m for m in found if m not in MODULES}
    assert not unknown, f"{module} imports modules that do not exist: {sorted(unknown)}"
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer(module)


def test_no_upward_import():
    upward = [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
              for m, targets in GRAPH.items() for t in sorted(targets) if layer(t) > layer(m)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for root in sorted(graph):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def test_no_import_cycle():
    graph = {m: {t for t in targets if (m, t) not in KNOWN_CYCLE_EDGES} for m, targets in GRAPH.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_function_level_imports_and_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    src = "def f():\n    from .registry import create_model\n"
    tree = ast.parse(src)
    assert any(isinstance(n, ast.ImportFrom) and n.module == "registry" for n in ast.walk(tree))
    assert "spinenet.registry" in GRAPH["spinenet.export"] or "spinenet.registry" in GRAPH["spinenet.cli"]


@pytest.mark.parametrize("module", ["spinenet.models.detection", "spinenet.models.classification",
                                    "spinenet.models.segmentation", "spinenet.models.maskrcnn"])
def test_no_model_module_imports_convert(module):
    assert not any(t.startswith("spinenet.convert") for t in GRAPH[module])
