"""The shape of the code: no import cycles, the Redis backend kept inside `telentir.pubsub`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ..support import ROOT

PACKAGE = ROOT / "telentir"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth (inside functions too), except under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if _is_type_checking_block(node):
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The project modules an import statement loads (a name imported from a package may be a submodule)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in MODULES}
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    base = node.module or ""
    if node.level:
        anchor = package.split(".")
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    found = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in MODULES:
            found.add(f"{base}.{alias.name}")
        elif base in MODULES:
            found.add(base)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[module] = set().union(*(_targets(module, node) for node in _imports(tree))) - {module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_package_has_no_import_cycle() -> None:
    cycles = find_cycles(import_graph())
    assert cycles == [], f"import cycles (imports inside functions count too): {cycles}"


def test_the_cycle_finder_finds_a_cycle_made_by_an_import_inside_a_function() -> None:
    """The check above could pass by seeing nothing: it must see function-level imports."""
    tree = ast.parse("def f():\n    from .b import x\n")
    assert _targets("telentir.services.events", _imports(tree)[0]) == set()  # .b does not exist
    tree = ast.parse("def f():\n    from ..runtime import Runtime\n")
    assert _targets("telentir.services.events", _imports(tree)[0]) == {"telentir.runtime"}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_a_type_checking_import_is_not_a_runtime_edge() -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .streaming.hub import SSEHub\n")
    assert [node.module for node in _imports(tree)] == ["typing"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_redis_is_imported_only_inside_pubsub(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text())
    names = {alias.name for node in _imports(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module or "" for node in _imports(tree) if isinstance(node, ast.ImportFrom) and not node.level}
    uses_redis = any(name == "redis" or name.startswith("redis.") for name in names)
    assert not uses_redis or module.startswith("telentir.pubsub"), f"{module} imports redis"


# The scale-out drivers and the only modules that may import them (each imported only when configured).
SCALE_OUT_DRIVERS = {
    "psycopg": {"telentir.storage.postgres", "telentir.storage.copy"},
    "psycopg_pool": {"telentir.storage.postgres"},
    "boto3": {"telentir.storage.s3"},
    "botocore": {"telentir.storage.s3"},
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_scale_out_drivers_are_imported_only_by_their_storage_module(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text())
    names = {alias.name for node in _imports(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module or "" for node in _imports(tree) if isinstance(node, ast.ImportFrom) and not node.level}
    for driver, allowed in SCALE_OUT_DRIVERS.items():
        uses = any(name == driver or name.startswith(driver + ".") for name in names)
        assert not uses or module in allowed, f"{module} imports {driver}"


def test_no_module_outside_pubsub_names_a_broker_class() -> None:
    offenders = [
        module
        for module, path in MODULES.items()
        if not module.startswith("telentir.pubsub")
        and any(name in path.read_text() for name in ("MemoryBroker", "RedisBroker", "MemoryPubSub"))
    ]
    assert offenders == []


def test_a_memory_only_server_never_imports_redis_or_the_scale_out_drivers(tmp_path: Path) -> None:
    """The embedded default loads neither the Redis client nor psycopg nor boto3 (its start-up stays as it was)."""
    script = f"""
import sys
from telentir import create_app, close_app
app = create_app({{"data_dir": {str(tmp_path / "data")!r}, "master_key": "11" * 32, "log_level": "ERROR"}})
client = app.test_client()
assert client.get("/healthz").status_code == 200
close_app(app)
drivers = ("redis", "psycopg", "psycopg_pool", "boto3", "botocore")
print(sorted(m for m in sys.modules if m.split(".")[0] in drivers))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_runtime_has_no_untyped_bag_of_components() -> None:
    from telentir.runtime import Runtime

    assert "extras" not in Runtime.__dataclass_fields__
    untyped = [name for name, field in Runtime.__dataclass_fields__.items() if field.type in ("Any", "object")]
    assert untyped == []


def test_the_architecture_layout_names_every_module() -> None:
    """docs/architecture.md's Layout section stays complete: every module and package of telentir/ is named there."""
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    layout = architecture[architecture.index("## Layout") : architecture.index("## Threads")]
    missing = [
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if path.stem not in layout and not (path.name == "__init__.py" and f"{path.parent.name}/" in layout)
    ]
    assert missing == [], f"add to docs/architecture.md's Layout section: {missing}"


def test_the_architecture_threads_section_names_every_thread_the_code_starts() -> None:
    """Every thread the package names (`name=`, `thread_name_prefix=`) is in docs/architecture.md's Threads table."""
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    threads = architecture[architecture.index("## Threads") :]
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "Periodic" and node.args:
                names.add(ast.unparse(node.args[0]).strip("'\""))
            if isinstance(node, ast.keyword) and node.arg in ("name", "thread_name_prefix"):
                if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                    names.add(node.value.value)
                elif isinstance(node.value, ast.JoinedStr):
                    names.add(ast.unparse(node.value))
    starting = {name for name in names if name.startswith(("telentir-", "f'flush-", 'f"flush-'))}
    assert {"telentir-event-pruner", "telentir-doorbell", "telentir-connect"} <= starting, starting
    missing = [name for name in starting if name.split("{")[0].strip("f'\"") not in threads]
    assert missing == [], f"add to docs/architecture.md's Threads table: {missing}"
