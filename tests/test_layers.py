"""The package layout is the architecture (docs/architecture.md): imports only run downwards,
and no modules import each other in a circle. Every import counts, also those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lower number = lower layer. A module may import its own layer and the layers below.
LAYERS: dict[str, int] = {
    "d1.config": 0,  # YAML / key=value config loading, used by every layer
    "d1.errors": 0,
    "d1.core": 1,
    "d1.tasks": 2,
    "d1.sandbox": 2,
    "d1.training": 3,
    "d1.recipes": 4,
    "d1.cli": 5,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / "d1").rglob("*.py"))}


def _layer(module: str) -> int | None:
    for prefix, layer in sorted(LAYERS.items(), key=lambda kv: -len(kv[0])):
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The d1 modules `module` imports (a `from pkg import name` of a submodule counts)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("d1")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("d1"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    return {m for m in out if m in known and m != module}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _imports(m, p, known) for m, p in modules.items()}


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in _modules() if m != "d1" and _layer(m) is None]
    assert unplaced == []


def test_no_import_runs_upwards() -> None:
    upward = [
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in _graph().items()
        for t in sorted(targets)
        if m != "d1" and t != "d1" and _layer(t) > _layer(m)  # type: ignore[operator]
    ]
    assert upward == []


def _package(module: str) -> str:
    """The package a module belongs to (its top-level folder under a layer)."""
    parts = module.split(".")
    return ".".join(parts[:3]) if parts[1] in ("core", "recipes", "tasks") else ".".join(parts[:2])


def test_no_import_circle_between_packages() -> None:
    """Packages (d1.core.sampling, d1.recipes.grpo, d1.training, ...) form no circle: a
    package's modules may import each other, but two packages never import each other."""
    edges: dict[str, set[str]] = {}
    for m, targets in _graph().items():
        for t in targets:
            if "d1" in (m, t):
                continue
            a, b = _package(m), _package(t)
            if a != b:
                edges.setdefault(a, set()).add(b)
    circles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert circles == []
