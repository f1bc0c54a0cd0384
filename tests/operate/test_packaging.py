"""The package: `python -m build` makes a wheel and an sdist; the wheel in a fresh venv gives a `telentir` command."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

import telentir

from ..support import ROOT, free_port, wait_until

# What a source distribution of the project holds; the rest of the checkout must not be needed.
SOURCE_FILES = ("pyproject.toml", "README.md", "LICENSE", "schema.sql", "telentir")
# Building, and installing the lock's pins into a fresh venv, take longer than one test's default limit.
pytestmark = pytest.mark.timeout(900)


@dataclass
class Built:
    """What `python -m build` made from a copy of the sources: the wheel and the sdist."""

    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`python -m build` (sdist, then the wheel from it) over a copy of the package's sources, offline."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"
    source.mkdir()
    for name in SOURCE_FILES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / name)
    dist = work / "dist"
    # --no-isolation: the build backend (setuptools, pinned in requirements-dev.lock) is the venv's,
    # so building needs no network.
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = dist.glob("telentir_server-*.whl")
    (sdist,) = dist.glob("telentir_server-*.tar.gz")
    return Built(wheel, sdist)


@pytest.fixture(scope="module")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (outside the checkout) with the lock's pins, then the wheel; its bin/."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for args in (
        ["--require-hashes", "--no-deps", "-r", str(ROOT / "requirements.lock")],  # exactly what the image installs
        [str(built.wheel)],  # its dependencies are all there: nothing else is fetched
    ):
        done = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=900, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
    return venv / "bin"


def test_the_wheel_and_the_sdist_hold_the_package_and_its_data(built: Built) -> None:
    version = telentir.__version__
    assert built.wheel.name == f"telentir_server-{version}-py3-none-any.whl"
    assert built.sdist.name == f"telentir_server-{version}.tar.gz"
    with zipfile.ZipFile(built.wheel) as wheel:
        names = set(wheel.namelist())
        entry_points = wheel.read(f"telentir_server-{version}.dist-info/entry_points.txt").decode()
        schema = wheel.read("telentir/schema.sql")
    assert {"telentir/__main__.py", "telentir/py.typed", "telentir/console/app.js"} <= names
    assert any(name.startswith("telentir/storage/migrations/") and name.endswith(".sql") for name in names)
    assert schema == (ROOT / "schema.sql").read_bytes()  # the link's content, not a link
    assert "telentir = telentir.cli:main" in entry_points
    assert not any(name.startswith("tests/") for name in names)
    with tarfile.open(built.sdist) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "LICENSE", "telentir/schema.sql", "telentir/cli/__init__.py"} <= members


def _env(data_dir: Path) -> dict[str, str]:
    """Only TELENTIR_DATA_DIR set: no PYTHONPATH, no checkout on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELENTIR_", "STRIPE_", "SCRAPER_", "PYTHON"))}
    env["TELENTIR_DATA_DIR"] = str(data_dir)
    return env


def _run(bin_dir: Path, cwd: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "telentir"), *args],
        cwd=cwd,
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_command_prints_its_version(installed: Path, tmp_path: Path) -> None:
    done = _run(installed, tmp_path, tmp_path / "data", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"telentir {telentir.__version__}"


def test_the_installed_package_does_not_import_from_the_checkout(installed: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(installed / "python"), "-c", "import telentir; print(telentir.__file__)"],
        cwd=tmp_path,
        env=_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not Path(done.stdout.strip()).resolve().is_relative_to(ROOT)


@pytest.fixture
def served(installed: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """init, a user and an API key made with the installed command, then `telentir serve` from another folder."""
    elsewhere, data_dir = tmp_path / "elsewhere", tmp_path / "state" / "data"
    elsewhere.mkdir()
    for args in (
        ("init",),
        ("users", "create", "ada@example.com", "--phone", "+15555550123", "--verified"),
    ):
        done = _run(installed, elsewhere, data_dir, *args)
        assert done.returncode == 0, done.stderr
    done = _run(installed, elsewhere, data_dir, "api-keys", "create", "ada@example.com")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    port = free_port()
    proc = subprocess.Popen(
        [str(installed / "telentir"), "serve", "--port", str(port)],
        cwd=elsewhere,
        env=_env(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url, proc), timeout=60, message="the installed server to answer /healthz")
        yield url, key
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _healthy(url: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, f"telentir serve exited with {proc.returncode}"
    try:
        return requests.get(url + "/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_init_users_and_serve_work_from_another_folder(served: tuple[str, str]) -> None:
    url, key = served
    resp = requests.get(url + "/api/root", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["stores"]) == 8
    for path in ("/console", "/console/app.js", "/console/console.css"):  # the console ships in the package
        page = requests.get(url + path, timeout=30)
        assert page.status_code == 200 and page.headers["Content-Security-Policy"], (path, page.status_code)


def test_the_changelog_s_newest_release_is_the_package_version() -> None:
    """CHANGELOG.md (Keep a Changelog): `## [Unreleased]` first, then releases newest first, the newest being ours."""
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", (ROOT / "CHANGELOG.md").read_text(), re.M)
    names = [name for name, _ in headings]
    assert names[0] == "Unreleased", names
    releases = [(name, date) for name, date in headings[1:]]
    assert releases and all(re.fullmatch(r"\d+\.\d+\.\d+", name) and date for name, date in releases), headings
    assert releases[0][0] == telentir.__version__
    versions = [tuple(int(part) for part in name.split(".")) for name, _ in releases]
    assert versions == sorted(versions, reverse=True) and [d for _, d in releases] == sorted(
        (d for _, d in releases), reverse=True
    )
