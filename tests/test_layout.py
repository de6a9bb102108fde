"""The package's imports run one way: no module imports another that imports it back.

Import cycles hid shared private helpers and made modules impossible to read
alone (issue 10 removed three). Every ``import eskit...`` counts, including
those inside functions and under ``TYPE_CHECKING``: a cycle there is still two
concepts tangled. A package's ``__init__.py`` that only hands names on is not a
node: importing ``eskit.projections`` means importing what it re-exports.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.joinpath("eskit").rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # "from eskit.pkg import sub" names a submodule when one exists.
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                    for a in node.names
                ]
            for target in targets:
                if target in files and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_imports_it_checks() -> None:
    graph = _graph()
    assert "eskit.stores.model" in graph["eskit.stores.base"]
    assert "eskit.events" in graph["eskit.stores.arguments"]
    assert "eskit.stores.rows" in graph["eskit.subscription"]


def test_no_module_of_the_package_imports_itself_back() -> None:
    graph = _graph()
    # Packages' __init__ files re-export their modules; they are not cycles of their own.
    faces = {name for name in graph if (SRC / Path(*name.split("."))).is_dir()}
    inner = {v: {w for w in ws if w not in faces} for v, ws in graph.items() if v not in faces}
    assert _cycles(inner) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
