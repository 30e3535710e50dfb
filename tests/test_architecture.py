"""Rules that keep the layout honest: no import cycles, no oversized files.

The layer contracts (who may import whom) live in pyproject.toml under [tool.importlinter] and run as
`lint-imports` in .ci/run. This file checks what import-linter does not:

* **No import cycle anywhere** in gateway/, policy/, adapters/, demo_upstream/, counting every import
  statement in a module: top-level, function-local, and those under `if TYPE_CHECKING:`. A cycle that
  only "works" because one side imports lazily or only for type checkers is still two modules that
  cannot be understood (or moved) apart.
* **policy/ takes only `urllib.parse` of urllib**: import-linter can forbid a whole external package
  (`http`, `socket`, ...) but not `urllib.request` alone while `urllib.parse` stays allowed.
* **No file over MAX_LINES** unless it is in ALLOWED_LONG_FILES with a reason.

How imports become edges (stdlib `ast`, no import of the code under test):

* `import a.b.c` -> `a.b.c` (or its longest prefix that is one of our modules);
* `from a.b import c` -> `a.b.c` when that is a module, else `a.b` (the package's `__init__`);
* relative imports resolve against the importing module's package (`__init__` is its own package).

Importing `a.b.c` also runs `a/__init__` and `a/b/__init__` at runtime; those implicit parent-package
edges are NOT counted, or every submodule of a package whose `__init__` re-exports (policy/) would be
in a cycle with it. An explicit import of a package (`from policy import X`) is an edge to its
`__init__`, so a submodule of policy/ that imports `policy` back IS a cycle. A module importing
itself is not counted.
"""

from __future__ import annotations

import ast
from collections import deque
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "policy", "adapters", "demo_upstream")
MAX_LINES = 400

# path relative to the repository root -> why it may exceed MAX_LINES. Keep the reason one honest line.
ALLOWED_LONG_FILES: dict[str, str] = {
    "gateway/config.py": "every setting in one typed model, next to its validation",
}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the first-party packages."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """`name` itself if it is one of our modules, else its longest prefix that is; None if external."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every first-party module `module` imports, anywhere in its file."""
    is_package = path.name == "__init__.py"
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, modules)
                if target:
                    targets.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                keep = len(package_parts) - (node.level - 1)
                assert keep > 0, f"{module}: relative import beyond the top-level package"
                base = ".".join(package_parts[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in modules else _resolve(base, modules)
                if target:
                    targets.add(target)
    targets.discard(module)
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _imports(module, path, modules) for module, path in modules.items()}


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit); components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            if successors:
                successor = successors.pop(0)
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, sorted(graph.get(successor, ()))))
                elif successor in on_stack:
                    low[node] = min(low[node], index[successor])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def _shortest_cycle_through(start: str, graph: dict[str, set[str]], within: set[str]) -> list[str]:
    """start -> ... -> start, breadth first, staying inside one strongly connected component."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for successor in sorted(graph[node] & within):
            if successor == start:
                chain = [node]
                while chain[-1] != start:
                    chain.append(previous[chain[-1]])
                return [start, *reversed(chain[:-1]), start] if node != start else [start, start]
            if successor not in previous:
                previous[successor] = node
                queue.append(successor)
    raise AssertionError(f"{start} is in a strongly connected component but on no cycle")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """For each strongly connected component, the shortest cycle through each of its modules (deduplicated)."""
    found: list[list[str]] = []
    seen: set[frozenset[tuple[str, str]]] = set()
    for component in strongly_connected_components(graph):
        members = set(component)
        for module in component:
            chain = _shortest_cycle_through(module, graph, members)
            edges = frozenset(pairwise(chain))
            if edges not in seen:
                seen.add(edges)
                found.append(chain)
    return found


def test_the_graph_sees_known_edges() -> None:
    """Guard against a resolver that silently finds nothing (and so finds no cycle)."""
    graph = import_graph()
    assert "gateway.app" in graph
    assert "policy.engine" in graph["policy"]  # `from policy.engine import CompiledPolicy` in the __init__
    assert "gateway.ports.store" in graph["adapters.stores.redis_store"]
    assert any(target.startswith("policy") for target in graph["gateway.guard.policy_runtime"])


def test_tarjan_finds_cycles_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}, "f": {"g"}, "g": {"f"}}
    assert strongly_connected_components(graph) == [["a", "b", "c"], ["f", "g"]]
    assert ["a", "b", "c", "a"] in cycles(graph)
    assert ["f", "g", "f"] in cycles(graph)


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles (break them by moving the shared piece down a layer):\n" + "\n".join(
        "  " + " → ".join(chain) for chain in found
    )


def test_policy_uses_urllib_only_to_parse() -> None:
    offending = []
    for path in sorted((ROOT / "policy").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module] if node.module != "urllib" else [f"urllib.{a.name}" for a in node.names]
            else:
                continue
            offending += [
                f"{path.relative_to(ROOT)}:{node.lineno} {name}"
                for name in names
                if (name == "urllib" or name.startswith("urllib.")) and name.split(".")[:2] != ["urllib", "parse"]
            ]
    assert not offending, f"policy/ does no I/O: only urllib.parse of urllib: {offending}"


def _line_count(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def test_no_oversized_files() -> None:
    too_long = {
        path.relative_to(ROOT).as_posix(): _line_count(path)
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if _line_count(path) > MAX_LINES
    }
    unlisted = {path: lines for path, lines in too_long.items() if path not in ALLOWED_LONG_FILES}
    assert not unlisted, (
        f"files over {MAX_LINES} lines: split them at a natural seam, or add them to ALLOWED_LONG_FILES "
        f"in {Path(__file__).name} with a reason: {unlisted}"
    )
    stale = sorted(path for path in ALLOWED_LONG_FILES if path not in too_long)
    assert not stale, f"no longer over {MAX_LINES} lines (or gone): remove from ALLOWED_LONG_FILES: {stale}"
