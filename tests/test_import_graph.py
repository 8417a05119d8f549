"""The package's import graph has no circle, counting every import: at module level, inside functions
and under ``TYPE_CHECKING`` alike (grimp, import-linter's own graph library, sees all three; an
import-linter contract cannot say "no cycles" over the whole package, and ``layers`` only checks the
arrows between the layers it names, not those among modules of one layer)."""
from __future__ import annotations

import grimp


def import_circles(package: str = "crossmodal") -> list[list[str]]:
    """Each strongly connected group of more than one module, as one circle through it (Tarjan)."""
    graph = grimp.build_graph(package, cache_dir=None)
    edges = {module: sorted(graph.find_modules_directly_imported_by(module)) for module in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(root: str) -> None:  # iterative, so deep graphs do not hit the recursion limit
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == module:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

    for module in edges:
        if module not in index:
            visit(module)
    circles = []
    for group in groups:
        start = group[0]
        back = min((graph.find_shortest_chain(importer=other, imported=start) or () for other in group if other != start
                    and graph.direct_import_exists(importer=start, imported=other)), key=len, default=())
        circles.append([start, *back] if back else group)
    return circles


def describe(circle: list[str], graph: grimp.ImportGraph | None = None) -> str:
    graph = graph or grimp.build_graph("crossmodal", cache_dir=None)
    steps = []
    for importer, imported in zip(circle, circle[1:]):
        details = graph.get_import_details(importer=importer, imported=imported)
        where = f" (line {details[0]['line_number']}: {details[0]['line_contents']})" if details else ""
        steps.append(f"{importer} -> {imported}{where}")
    return "\n  ".join(steps)


def test_no_import_circles():
    circles = import_circles()
    assert not circles, "import circles in crossmodal (break each by moving the shared code below both):\n  " + \
        "\n  ".join(describe(circle) for circle in circles)


def test_the_guard_sees_imports_inside_functions_and_under_type_checking(tmp_path, monkeypatch):
    package = tmp_path / "circled"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from circled.b import g\n    return g\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from circled.a import f\n"
                                  "def g():\n    return 1\n")
    (package / "c.py").write_text("import circled.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_circles("circled") == [["circled.a", "circled.b", "circled.a"]]
