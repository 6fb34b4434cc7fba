"""The shape of ``core/``: imports flow one way and no module imports one that imports it back.

Every ``import`` counts, including those inside functions: a lazy import hides a cycle from
Python, not from the reader.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"

# Each stage may import the stages before it, never those after it.
STAGES = ["core.data", "core.models", "core.runs", "core.training"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from core.x import y`` counts ``core.x.y``
    when ``y`` is a module)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in CORE.rglob("*.py"):
        module = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                target = ROOT.joinpath(*name.split("."))
                is_core_module = top == "core" and (
                    target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()
                )
                if is_core_module or top in ("streamlit", "ui", "pages"):
                    edges[module].add(name)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_of_core_imports_one_that_imports_it_back():
    assert _cycles(_imports()) == []


def test_stages_import_only_earlier_stages():
    wrong = []
    for module, targets in _imports().items():
        stage = next((s for s in STAGES if module == s or module.startswith(s + ".")), None)
        if stage is None:
            continue
        later = STAGES[STAGES.index(stage) + 1 :]
        wrong += [
            (module, t) for t in targets if any(t == s or t.startswith(s + ".") for s in later)
        ]
    assert wrong == []


def test_core_never_imports_the_app():
    app_imports = [
        (module, target)
        for module, targets in _imports().items()
        for target in targets
        if target.split(".")[0] in ("streamlit", "ui", "pages")
    ]
    assert app_imports == []


def test_the_checks_see_imports_inside_functions():
    # The walker counts a lazy import: the cycle finder is only as good as what it is fed.
    edges = _imports()
    lazy = [
        (module, target)
        for path in CORE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef)
        for inner in ast.walk(node)
        if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("core.")
        for module, target in [(_module_name(path), inner.module)]
    ]
    assert lazy, "expected at least one import inside a function in core/"
    assert all(target in edges[module] for module, target in lazy)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
