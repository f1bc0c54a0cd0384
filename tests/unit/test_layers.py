"""The layers of telentir/: api → services → runtime → components, storage, pubsub; never upward.

Every module of the package is parsed (`ast`); an import anywhere in it (inside functions too,
but not under `if TYPE_CHECKING:`) is an edge. A layer may not reach a higher one, directly
or through any module in between, so moving an upward import into a helper module does not
hide it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "telentir"

# Lowest first. A module is in the first layer whose prefix names it; the rest are unranked
# (settings, errors, streaming…): they may be imported by anyone, but what they import counts.
LAYERS = [
    ("components", ("telentir.components", "telentir.storage", "telentir.pubsub")),
    ("runtime", ("telentir.runtime",)),
    ("services", ("telentir.services",)),
    ("api", ("telentir.api", "telentir.wiring")),
]


def module_name(path: Path) -> str:
    """`telentir/services/ingest.py` → `telentir.services.ingest` (a package is its `__init__`)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(module: str, source: str, known: set[str], is_package: bool = False) -> set[str]:
    """The modules of `known` a module's imports load (`from x import y`: the module `x.y` if there is one, else `x`).

    A package's `__init__` loaded only as the parent of a submodule is not an edge: the
    package `telentir` defines `create_app`, whose body imports everything, at call time.
    """
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            return  # for the type checker only: never loaded at run time
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            names.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return names & known


def import_graph() -> dict[str, set[str]]:
    """Every module of telentir/ → the modules of telentir/ it imports."""
    sources = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    known = set(sources)
    return {
        module: imported_names(module, path.read_text(), known, path.name == "__init__.py") - {module}
        for module, path in sources.items()
    }


def layer_of(module: str) -> int | None:
    """The rank of the module's layer (0 is lowest), None for an unranked module."""
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return rank
    return None


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module `start` loads, directly or not, with one import path to it."""
    paths: dict[str, list[str]] = {}
    todo = [(start, [start])]
    while todo:
        module, path = todo.pop()
        for nxt in sorted(graph.get(module, ())):
            if nxt not in paths:
                paths[nxt] = [*path, nxt]
                todo.append((nxt, paths[nxt]))
    return paths


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each ranked module that reaches a module of a higher layer, as the import path that does it."""
    found = []
    for module in sorted(graph):
        rank = layer_of(module)
        if rank is None:
            continue
        for target, path in sorted(reachable(graph, module).items()):
            target_rank = layer_of(target)
            if target_rank is not None and target_rank > rank:
                found.append(" → ".join(path))
    return found


def test_no_module_imports_a_higher_layer() -> None:
    assert upward_imports(import_graph()) == []


def test_the_runtime_imports_no_service() -> None:
    reached = reachable(import_graph(), "telentir.runtime")
    assert not [module for module in reached if module.startswith(("telentir.services", "telentir.api"))]
    assert {"telentir.components.job_runner", "telentir.components.stripe_gateway"} <= set(reached)


@pytest.mark.parametrize(
    ("module", "source", "upward"),
    [
        ("telentir.storage.db", "from ..services import accounts", True),
        ("telentir.pubsub.memory", "import telentir.api.objects", True),
        ("telentir.components.job_runner", "def late() -> None:\n    from ..runtime import Runtime", True),
        ("telentir.runtime", "from .services.ingest import connect", True),
        ("telentir.runtime", "from .config import Config", False),  # config reaches no service
        ("telentir.services.objects", "from ..api import common", True),
        ("telentir.services.objects", "from ..storage.db import Database", False),
        (
            "telentir.storage.db",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..runtime import R",
            False,
        ),
        # Through an unranked module: streaming.feed imports services.
        ("telentir.runtime", "from .streaming import feed", True),
    ],
)
def test_an_added_upward_import_is_caught(module: str, source: str, upward: bool) -> None:
    graph = import_graph()
    graph[module] = graph[module] | imported_names(module, source, set(graph))
    assert bool(upward_imports(graph)) is upward


def test_relative_imports_resolve_from_a_module_and_from_a_package() -> None:
    known = set(import_graph())
    assert imported_names("telentir.storage.db", "from ..services import accounts", known) == {
        "telentir.services.accounts"
    }
    assert imported_names("telentir.storage", "from .db import Database", known, is_package=True) == {
        "telentir.storage.db"
    }
    assert imported_names("telentir.runtime", "from . import crypto\nimport json", known) == {"telentir.crypto"}
