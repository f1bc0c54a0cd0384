"""requirements.lock: every runtime dependency, direct or not, pinned with hashes; the image installs it."""

from __future__ import annotations

import re
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .support import ROOT

HASH = re.compile(r"--hash=sha256:([0-9a-f]*)")


def lock_entries() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) from requirements.lock."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line.startswith(" "):
            name, _, version = stripped.rstrip(" \\").partition("==")
            assert version, f"not pinned with ==: {line!r}"
            current = canonicalize_name(name)
            entries[current] = (version, [])
        else:
            assert current is not None, line
            entries[current][1].extend(HASH.findall(stripped))
    return entries


def direct_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            name, _, version = text.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def runtime_closure() -> dict[str, str]:
    """Every installed distribution the direct pins need, transitively (markers of this Python)."""
    found: dict[str, str] = {}
    todo = list(direct_pins())
    while todo:
        name = todo.pop()
        if name in found:
            continue
        dist = metadata.distribution(name)
        found[name] = dist.version
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return found


def test_every_entry_is_pinned_with_well_formed_hashes():
    entries = lock_entries()
    assert entries
    for name, (version, hashes) in entries.items():
        assert re.fullmatch(r"[0-9A-Za-z.+!-]+", version), (name, version)
        assert hashes, f"{name} has no hash"
        assert all(len(digest) == 64 for digest in hashes), name


def test_the_lock_keeps_the_direct_pins():
    entries = lock_entries()
    for name, version in direct_pins().items():
        assert entries.get(name, (None,))[0] == version, f"{name}=={version} is not what requirements.lock pins"


def test_the_lock_covers_every_installed_runtime_package_at_its_version():
    entries = lock_entries()
    missing = {name: version for name, version in runtime_closure().items() if entries.get(name, (None,))[0] != version}
    assert missing == {}, "run `make lock`: requirements.lock lacks (or pins otherwise) " + repr(missing)


def test_the_image_installs_from_the_lock_with_hashes_required():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements.lock ." in dockerfile
    assert re.search(r"pip install [^\n]*--require-hashes[^\n]*-r requirements\.lock", dockerfile)
    assert "-r requirements.txt" not in dockerfile
