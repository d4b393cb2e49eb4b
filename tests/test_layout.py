"""The package's layout: imports run one way, and modules stay a size a reader can hold.

**Import cycles.** The graph is built from the source with :mod:`ast`, not by importing: an
edge ``a -> b`` for every ``import`` statement of module ``a`` that runs when ``a`` is imported
(its top level, including the bodies of top-level ``if``/``try``/``with``, but not the
``if TYPE_CHECKING:`` block, and not imports inside functions, which run later and on
demand). ``from pkg import name`` counts as an edge to ``pkg.name`` when that is a module, else
to ``pkg``. Importing a submodule also runs its package's ``__init__``; that implicit edge is
not counted (every package would be in a cycle with its own modules). Names loaded by string
(the registry's built-in tasks, ``_lazy.lazy_names``) are not imports either: they are how a
lower layer reaches plugins without importing them.

**Module size.** A module over ``MAX_LINES`` lines must say why at its top: a paragraph of its
module docstring that starts with ``Size:`` (for example ``Size: one state machine, read top to
bottom; splitting it would scatter its transitions.``). Without one it is listed as a module to
split where a reader would split it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sslpipe"
MAX_LINES = 300
SIZE_MARKER = "Size:"


def test_no_import_cycle() -> None:
    graph = import_graph(PACKAGE)
    cycles = [" -> ".join([*cycle, cycle[0]]) for cycle in find_cycles(graph)]
    assert not cycles, "import cycles in sslpipe:\n  " + "\n  ".join(cycles)


def test_long_modules_say_why() -> None:
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_LINES and not has_size_reason(text):
            unexplained.append(f"{path.relative_to(PACKAGE.parent)} ({lines} lines)")
    assert not unexplained, (
        f"modules over {MAX_LINES} lines without a {SIZE_MARKER!r} paragraph in their module "
        "docstring (split them, or say why not):\n  " + "\n  ".join(unexplained))


def test_the_checks_see_what_they_check() -> None:
    # the graph holds the package's modules and their known edges, so that a test that
    # passes does so because there is no cycle, not because no edge was found
    graph = import_graph(PACKAGE)
    assert "sslpipe.registry" in graph and "sslpipe.tasks.rotation" in graph
    assert "sslpipe.registry" in graph["sslpipe.tasks.rotation"]
    assert "sslpipe.options" in graph["sslpipe.tasks.base"]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert has_size_reason('"""Title.\n\nSize: one loop.\n"""\n')
    assert not has_size_reason('"""Title.\n\nThe size: one loop.\n"""\n')


def has_size_reason(source: str) -> bool:
    """Whether the module docstring of ``source`` has a paragraph starting ``Size:``."""
    doc = ast.get_docstring(ast.parse(source)) or ""
    return any(p.strip().startswith(SIZE_MARKER) for p in doc.split("\n\n"))


def import_graph(package: Path) -> dict[str, set[str]]:
    """``{module: modules it imports at import time}`` over the package's own modules."""
    modules: dict[str, tuple[Path, bool]] = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    graph = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]
        edges = set()
        for node in _import_time(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
                continue
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    edges.add(f"{target}.{alias.name}")
                elif target in modules:
                    edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module, each as the list
    of modules along it (Tarjan's algorithm, then a walk inside the component)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(set(c), graph) for c in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    # from the first module, follow edges inside the component until a module repeats
    path = [min(component)]
    while True:
        nxt = min(w for w in graph[path[-1]] if w in component)
        if nxt in path:
            return path[path.index(nxt):]
        path.append(nxt)


def _import_time(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    out: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, ast.If):
            test = node.test
            type_checking = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
            if not type_checking:
                out += _import_time(node.body)
            out += _import_time(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody,
                          *(h.body for h in node.handlers)):
                out += _import_time(block)
        elif isinstance(node, ast.With):
            out += _import_time(node.body)
    return out
