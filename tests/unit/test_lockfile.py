"""The lock files: every package, direct or not, pinned with hashes; the venv and the image install exactly them.

requirements.lock pins the runtime closure of requirements.txt (the image installs it);
requirements-dev.lock pins requirements-dev.txt (what `make test` and `make run` install), compiled
within requirements.lock so the two never disagree on a shared package.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from ..support import ROOT

HASH = re.compile(r"--hash=sha256:([0-9a-f]*)")
LOCKS = ("requirements.lock", "requirements-dev.lock")


def lock_entries(name: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) from a pip-compile lock file."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in (ROOT / name).read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line.startswith(" "):
            package, _, version = stripped.rstrip(" \\").partition("==")
            assert version, f"{name}: not pinned with ==: {line!r}"
            current = canonicalize_name(package)
            entries[current] = (version, [])
        else:
            assert current is not None, line
            entries[current][1].extend(HASH.findall(stripped))
    return entries


def direct_pins(name: str) -> dict[str, str]:
    """The `name==version` lines of a requirements input file (its `-r` includes left out)."""
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text and not text.startswith("-"):
            package, _, version = text.partition("==")
            assert version, f"{name}: {text!r} is not pinned with =="
            pins[canonicalize_name(package.split("[", 1)[0])] = version.strip()
    return pins


def installed() -> dict[str, str]:
    """Every distribution in this interpreter's environment: name -> version."""
    return {canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}


@pytest.mark.parametrize("lock", LOCKS)
def test_every_entry_is_pinned_with_well_formed_hashes(lock):
    entries = lock_entries(lock)
    assert entries
    for name, (version, hashes) in entries.items():
        assert re.fullmatch(r"[0-9A-Za-z.+!-]+", version), (name, version)
        assert hashes, f"{lock}: {name} has no hash"
        assert all(len(digest) == 64 for digest in hashes), name


@pytest.mark.parametrize(("source", "lock"), [("requirements.txt", LOCKS[0]), ("requirements-dev.txt", LOCKS[1])])
def test_each_lock_keeps_its_direct_pins(source, lock):
    entries = lock_entries(lock)
    for name, version in direct_pins(source).items():
        assert entries.get(name, (None,))[0] == version, f"{name}=={version} is not what {lock} pins: run `make lock`"


def test_the_dev_lock_holds_the_runtime_lock_at_the_same_versions():
    runtime, dev = lock_entries(LOCKS[0]), lock_entries(LOCKS[1])
    differ = {name: (version, dev.get(name, (None,))[0]) for name, (version, _) in runtime.items()}
    assert {name: pair for name, pair in differ.items() if pair[0] != pair[1]} == {}


def test_the_venv_holds_exactly_what_the_dev_lock_pins():
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("runs in the project's own venv (`make test`), which `make` installs from the lock")
    pinned = {name: version for name, (version, _) in lock_entries(LOCKS[1]).items()}
    have = installed()
    assert {name: version for name, version in have.items() if pinned.get(name) != version} == {}, (
        "installed but not pinned (or pinned otherwise) in requirements-dev.lock"
    )
    assert {name: version for name, version in pinned.items() if have.get(name) != version} == {}, (
        "pinned in requirements-dev.lock but not installed at that version"
    )


def test_make_installs_the_dev_lock_with_hashes_required():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install [^\n]*--require-hashes[^\n]*-r requirements-dev\.lock", makefile)
    assert "-r requirements-dev.txt" not in makefile
    assert "--upgrade pip" not in makefile


def test_the_image_installs_from_the_lock_with_hashes_required():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements.lock ." in dockerfile
    assert re.search(r"pip install [^\n]*--require-hashes[^\n]*-r requirements\.lock", dockerfile)
    assert "-r requirements.txt" not in dockerfile


def test_the_readme_names_the_lock_tool_and_the_lock_files():
    """The issue's choice of tool is stated where a newcomer reads first, with the command that refreshes the locks."""
    readme = (ROOT / "README.md").read_text()
    for needed in ("pip-tools", *LOCKS, "make lock", "--require-hashes"):
        assert needed in readme, f"README.md does not say {needed!r}"
