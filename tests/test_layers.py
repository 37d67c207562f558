"""Imports only point down the layers, and no module imports itself in a circle.

Layers, top to bottom (a module may import its own package and anything in a lower layer; packages in
one layer do not import each other):

    cli -> commands, benchmark -> workflows, report -> inference -> strategies, models2d, ssl -> engine -> planning
        -> data, networks, losses, evaluation -> metrics, resample -> regions, config, registry -> io -> dicom
        -> errors, hardware

Run ``python tests/test_layers.py`` to print the import graph between packages.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medseg"
LAYERS = [
    ["cli"],
    ["commands", "benchmark"],
    ["workflows", "report"],
    ["inference"],
    ["strategies", "models2d", "ssl"],
    ["engine"],
    ["planning"],
    ["data", "networks", "losses", "evaluation"],
    ["metrics", "resample"],
    ["regions", "config", "registry"],
    ["io"],
    ["dicom"],
    ["errors", "hardware"],
]
LAYER_OF = {name: depth for depth, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The medseg modules ``path`` imports, wherever the import statement is (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("medseg.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medseg"):
            found |= {f"{node.module}.{alias.name}" if node.module == "medseg" else node.module for alias in node.names}
    return found


def top(module: str) -> str:
    """The package (or top-level module) a module belongs to: ``medseg.engine.trainer`` -> ``engine``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_package_has_a_layer():
    assert {top(m) for m in graph()} - {""} <= set(LAYER_OF)


def test_imports_only_point_down():
    upward = []
    for module, imported in graph().items():
        for target in imported:
            source, goal = top(module), top(target)
            if goal in ("", "__version__") or source == goal or not source:
                continue
            if LAYER_OF[goal] <= LAYER_OF[source]:
                upward.append(f"{module} imports {target} ({source} is not above {goal})")
    assert not upward, "\n".join(upward)


def test_no_circular_imports_between_modules():
    modules = graph()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]  # "medseg.models2d.ClassSpec" -> "medseg.models2d"
        return name or None

    edges = {m: {r for t in ts if (r := resolve(t)) and r != m} for m, ts in modules.items()}
    # Package __init__ files re-export their modules; an edge into one counts as an edge to what it re-exports.
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1 and not nxt.startswith(node) and not node.startswith(nxt):
                cycle.extend([*path, node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*path, node]):
                return True
        state[node] = 2
        return False

    assert not any(visit(m, []) for m in modules if m not in state), " -> ".join(cycle)


if __name__ == "__main__":
    packages: dict[str, set[str]] = {}
    for module, imported in graph().items():
        outside = (top(t) for t in imported if top(t) not in ("", top(module)))
        packages.setdefault(top(module) or "medseg", set()).update(outside)
    for name in sorted(packages, key=lambda n: LAYER_OF.get(n, -1)):
        print(f"{name:12s} -> {', '.join(sorted(packages[name], key=lambda n: LAYER_OF.get(n, 99))) or '-'}")
    sys.exit(0)
