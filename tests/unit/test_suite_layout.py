"""The suite's own layout: packages with their conftest, which tests run on PostgreSQL + S3 + Redis, unit stays unit.

Which tests the second pass (`--backend postgres-s3-redis`) runs is each package's SCALE_OUT
(its conftest.py) and two module marks (tests/backends.py `runs_scale_out`): a module added
to a scale-out package runs there without anyone listing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ..backends import EMBEDDED_ONLY_MARK, SCALE_OUT_MARK, runs_scale_out
from ..support import ROOT

TESTS = ROOT / "tests"
PACKAGES = sorted({path.parent for path in TESTS.glob("*/test_*.py")})
# What a unit test may not use: a server process, the live server, a cluster, the private engines.
SERVER_NAMES = ("ServerProcess", "running_server", "live_server", "server_factory", "Cluster", "private_services")


def _package_scale_out(package: Path) -> object:
    """The value of the conftest's module-level SCALE_OUT (None if it has none)."""
    tree = ast.parse((package / "conftest.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [ast.unparse(target) for target in node.targets] == ["SCALE_OUT"]:
            return ast.literal_eval(node.value)
    return None


def _module_marks(path: Path) -> dict[str, list[ast.expr]]:
    """The marks of the module's `pytestmark`: name → the mark's arguments."""
    marks: dict[str, list[ast.expr]] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and [ast.unparse(target) for target in node.targets] == ["pytestmark"]:
            for expr in ast.walk(node.value):
                call = expr.func if isinstance(expr, ast.Call) else expr
                text = ast.unparse(call)
                if text.startswith("pytest.mark."):
                    marks.setdefault(text.removeprefix("pytest.mark."), []).extend(
                        expr.args if isinstance(expr, ast.Call) else []
                    )
    return marks


def test_the_test_modules_live_in_packages_with_a_conftest_that_says_where_they_run() -> None:
    assert {package.name for package in PACKAGES} >= {"unit", "dataplane", "events", "connect", "billing"}
    for package in PACKAGES:
        assert (package / "__init__.py").is_file(), f"{package.name} is not a package"
        assert (package / "conftest.py").is_file(), f"{package.name} has no conftest.py"
        assert isinstance(_package_scale_out(package), bool), f"{package.name}/conftest.py: SCALE_OUT = True | False"


def test_unit_tests_run_only_on_the_embedded_backend_and_start_no_server() -> None:
    unit = TESTS / "unit"
    assert _package_scale_out(unit) is False
    for path in sorted(unit.glob("test_*.py")):
        assert SCALE_OUT_MARK not in _module_marks(path), f"{path.name}: a scale-out test belongs in a package"
        used = [name for name in SERVER_NAMES if name in path.read_text()]
        assert used == [] or path.name == Path(__file__).name, f"{path.name} uses {used}: not a unit test"


@pytest.mark.parametrize("package", PACKAGES, ids=lambda package: package.name)
def test_a_module_mark_changes_its_package_default_and_gives_a_reason(package: Path) -> None:
    """`embedded_only("why")` only in a scale-out package, `scale_out` only in another: no mark that says nothing."""
    scale_out = _package_scale_out(package)
    for path in sorted(package.glob("test_*.py")):
        marks = _module_marks(path)
        if EMBEDDED_ONLY_MARK in marks:
            assert scale_out, f"{path.name}: its package does not run on PostgreSQL + S3 + Redis anyway"
            (reason,) = marks[EMBEDDED_ONLY_MARK]
            assert isinstance(reason, ast.Constant) and str(reason.value).strip(), f"{path.name}: say why"
        if SCALE_OUT_MARK in marks:
            assert not scale_out, f"{path.name}: its package already runs on PostgreSQL + S3 + Redis"


def test_a_new_module_of_a_scale_out_package_runs_there_unless_marked() -> None:
    assert runs_scale_out(True, []) is True
    assert runs_scale_out(True, ["timeout", "parametrize"]) is True
    assert runs_scale_out(True, [EMBEDDED_ONLY_MARK]) is False
    assert runs_scale_out(False, []) is False
    assert runs_scale_out(False, [SCALE_OUT_MARK]) is True


def test_the_mark_reader_sees_a_mark_in_a_list_and_its_reason() -> None:
    """The checks above could pass by reading no mark at all."""
    marks = _module_marks(TESTS / "dataplane" / "test_disk_full.py")
    assert set(marks) == {"timeout", EMBEDDED_ONLY_MARK} and len(marks[EMBEDDED_ONLY_MARK]) == 1
    assert set(_module_marks(TESTS / "operate" / "test_metrics.py")) == {SCALE_OUT_MARK}
