"""The package's shape: no module imports another that imports it back (directly or around a
loop), counting the imports inside functions too, which Python resolves only when they run."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cai_utils"


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: {package modules it imports}}``, from every relative import in its source."""
    modules = {f.stem for f in package.glob("*.py")}
    graph = {}
    for f in package.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                deps.update(n for n in names if n in modules)
        graph[f.stem] = deps - {f.stem}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (loop := visit(dep)):
                return loop
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (loop := visit(node)):
            return loop
    return None


def test_find_cycle_finds_a_loop_and_only_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"evaluation", "preferences", "judge", "stats", "text_checks"} <= set(graph)
    assert "stats" in graph["report_numbers"] and "report_numbers" in graph["report"]  # real imports
    loop = find_cycle(graph)
    assert loop is None, "import cycle: " + " -> ".join(loop)


MAX_LINES = 300  # issue 15: one small module per responsibility


def test_no_module_is_over_the_size_limit():
    sizes = {f.name: len(f.read_text(encoding="utf-8").splitlines()) for f in PACKAGE.glob("*.py")}
    assert len(sizes) > 40 and sizes["pipeline.py"] > 100  # the files were read
    over = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (split them by responsibility): {over}"


def test_every_module_is_in_the_readme_layout():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):]
    missing = sorted(f.name for f in PACKAGE.glob("*.py")
                     if f.name not in ("__init__.py", "__main__.py") and f"  {f.name} " not in layout)
    assert not missing, f"modules the README's layout does not list: {missing}"
