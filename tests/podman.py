"""podman for the container tests: the project's Dockerfile built and run for real, without a Docker daemon.

How podman runs on the project's machines (root inside a container, hybrid cgroups, no
systemd): the vfs storage driver, cgroupfs, runc (crun refuses hybrid cgroups), no default
rlimits (`CONTAINERS_CONF` with `default_ulimits = []`), builds in a chroot. The tests keep a
store of their own (under the user's cache folder), so a machine's own podman images, of
whatever storage driver, are never touched, and the base image survives between runs.

No image registry is reachable: the base is made from Debian's packages with mmdebstrap
(python3 in a venv at /usr/local, so `python` and `pip` are /usr/local/bin's as in the
official image), imported once and reused while its recipe is unchanged. Everything else a
run makes (images, containers, volumes) is named with the run's prefix and removed by
`cleanup()`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

BASE_REPOSITORY = "localhost/telentir-test-base"
# The base image's recipe: its tag is a hash of these, so a changed recipe builds a new base.
BASE_SUITE = "bookworm"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
BASE_HOOK = 'chroot "$1" python3 -m venv /usr/local'
# Documentation and translations are not needed in an image (and vfs copies every byte per layer).
BASE_DPKG_OPTIONS = tuple(
    f"--dpkgopt=path-exclude=/usr/share/{folder}/*" for folder in ("doc", "man", "info", "locale")
)
BASE_CHANGES = ("ENV LANG=C.UTF-8", 'CMD ["python3"]')
CONTAINERS_CONF = "[containers]\n# The default rlimits are refused in this kind of container.\ndefault_ulimits = []\n"


def cache_folder() -> Path:
    """Where the tests' podman store lives between runs ($XDG_CACHE_HOME or ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "telentir-tests" / "podman"


def _run_folder() -> Path:
    """podman's run-time state: /run for root (emptied at boot, as podman expects), else the user's runtime folder."""
    if os.geteuid() == 0:
        return Path("/run/telentir-tests-podman")
    return Path(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/telentir-tests-podman-{os.geteuid()}")


class PodmanError(RuntimeError):
    """A podman (or mmdebstrap) command failed; the message holds its output."""


@dataclass
class Podman:
    """One test run's podman: the command with this machine's flags, and what the run made, to remove."""

    store: Path = field(default_factory=cache_folder)
    runtime: Path = field(default_factory=_run_folder)
    prefix: str = field(default_factory=lambda: f"telentir-test-{secrets.token_hex(4)}")
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    removals: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        self.conf = self.store / "containers.conf"
        if not self.conf.exists() or self.conf.read_text() != CONTAINERS_CONF:
            self.conf.write_text(CONTAINERS_CONF)

    def command(self, *args: str) -> list[str]:
        """The podman command line for `args`."""
        return [
            "podman",
            "--storage-driver=vfs",
            "--cgroup-manager=cgroupfs",
            "--runtime=runc",
            "--events-backend=file",
            f"--root={self.store / 'storage'}",
            f"--runroot={self.runtime / 'storage'}",
            f"--tmpdir={self.runtime / 'libpod'}",
            *args,
        ]

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run podman with `args`; raise PodmanError (with its output) when it fails and `check` is set."""
        env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        done = subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        if check and done.returncode != 0:
            raise PodmanError(f"podman {' '.join(args)} exited with {done.returncode}:\n{done.stderr[-4000:]}")
        return done

    def name(self, what: str) -> str:
        """A name of this run's own (removed by cleanup)."""
        return f"{self.prefix}-{what}"

    # --- images -----------------------------------------------------------------------------

    def image_exists(self, image: str) -> bool:
        """Whether the store holds `image`."""
        return self("image", "exists", image, check=False).returncode == 0

    def base_image(self, workdir: Path) -> str:
        """The Debian base image, made with mmdebstrap and imported the first time, reused after; its name.

        A file lock keeps two test runs from making it at once; bases of older recipes are removed.
        """
        recipe = json.dumps([BASE_SUITE, BASE_PACKAGES, BASE_HOOK, BASE_DPKG_OPTIONS, BASE_CHANGES])
        tag = f"{BASE_REPOSITORY}:{BASE_SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
        with _locked(self.store / "base.lock"):
            if self.image_exists(tag):
                return tag
            if shutil.which("mmdebstrap") is None:
                raise PodmanError("mmdebstrap is not installed (apt-get install mmdebstrap): it makes the base image")
            tarball = workdir / "base.tar"
            _check(
                [
                    "mmdebstrap",
                    "--variant=minbase",
                    f"--include={BASE_PACKAGES}",
                    *BASE_DPKG_OPTIONS,
                    f"--customize-hook={BASE_HOOK}",
                    BASE_SUITE,
                    str(tarball),
                ],
                timeout=900,
            )
            changes = [arg for change in BASE_CHANGES for arg in ("--change", change)]
            self("import", *changes, str(tarball), tag, timeout=300)
            tarball.unlink()
            for stale in self._tags(BASE_REPOSITORY):
                if stale != tag:
                    self("rmi", "--force", stale, check=False)
        return tag

    def _tags(self, repository: str) -> list[str]:
        listed = self("images", "--format", "{{.Repository}}:{{.Tag}}", repository).stdout.split()
        return [name for name in listed if name.startswith(repository + ":")]

    def build(self, context: Path, tag: str, build_args: Mapping[str, str]) -> str:
        """`podman build` of the context's Dockerfile into `tag` (removed by cleanup); returns `tag`.

        One layer on top of the base (`--layers=false`: vfs copies the whole tree per layer),
        Docker's image format (OCI drops HEALTHCHECK). The host's CA bundle is mounted for
        the build only, so pip reaches the package registry through this machine's TLS setup.
        """
        self.images.append(tag)
        args = [arg for key, value in build_args.items() for arg in ("--build-arg", f"{key}={value}")]
        self(
            "build",
            "--format=docker",
            "--isolation=chroot",
            "--network=host",
            "--layers=false",
            "--force-rm",
            "--volume=/etc/ssl/certs:/etc/ssl/certs:ro",
            *args,
            "--tag",
            tag,
            "--file",
            str(context / "Dockerfile"),
            str(context),
            timeout=1200,
        )
        return tag

    def inspect_image(self, image: str) -> dict[str, Any]:
        """`podman image inspect`'s document for `image`."""
        documents: list[dict[str, Any]] = json.loads(self("image", "inspect", image).stdout)
        return documents[0]

    # --- containers and volumes -------------------------------------------------------------

    def volume(self, what: str) -> str:
        """A new named volume of this run; its name."""
        name = self.name(what)
        self("volume", "create", name)
        self.volumes.append(name)
        return name

    def start(
        self,
        what: str,
        image: str,
        *,
        options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        command: Sequence[str] = (),
    ) -> Container:
        """`podman run -d` of `image` as a container of this run (removed, with its anonymous volumes, by cleanup)."""
        name = self.name(f"{what}-{secrets.token_hex(2)}")
        self.containers.append(name)
        env_args = [arg for key, value in (env or {}).items() for arg in ("--env", f"{key}={value}")]
        self("run", "--detach", "--name", name, *options, *env_args, image, *command)
        return Container(self, name)

    def sweep_stale(self, older_than: float = 3 * 3600) -> None:
        """Remove what earlier runs made and could not remove (a killed run), once it is `older_than` seconds old.

        A run still going is younger than that: the whole module takes minutes.
        """
        limit = time.time() - older_than
        ours = re.compile(r"(localhost/)?telentir-test-[0-9a-f]{8}-")
        for item in json.loads(self("ps", "--all", "--format=json").stdout or "[]"):
            names = [name for name in item.get("Names") or [] if ours.match(name)]
            if names and item.get("Created", limit) < limit:
                self("rm", "--force", "--volumes", "--time=0", names[0], check=False, timeout=60)
        for item in json.loads(self("volume", "ls", "--format=json").stdout or "[]"):
            if ours.match(item["Name"]) and _timestamp(item["CreatedAt"]) < limit:
                self("volume", "rm", "--force", item["Name"], check=False)
        for item in json.loads(self("images", "--format=json").stdout or "[]"):
            names = [name for name in item.get("Names") or [] if ours.match(name)]
            if names and item.get("Created", limit) < limit:
                self("rmi", "--force", names[0], check=False, timeout=120)

    def discard(self, container: Container) -> None:
        """Remove a container no longer needed, in the background (vfs deletes a whole copy of the image)."""
        self.containers.remove(container.name)
        removal = threading.Thread(
            target=self, args=("rm", "--force", "--volumes", "--time=5", container.name), kwargs={"check": False}
        )
        removal.start()
        self.removals.append(removal)

    def cleanup(self) -> None:
        """Remove every container (with its anonymous volumes), named volume and image this run made."""
        if self.containers:  # one command: podman removes them in parallel
            self("rm", "--force", "--volumes", "--time=5", *self.containers, check=False, timeout=300)
        for removal in self.removals:
            removal.join(timeout=300)
        for name in self.volumes:
            self("volume", "rm", "--force", name, check=False)
        for image in self.images:
            self("rmi", "--force", image, check=False, timeout=120)
        self.containers.clear()
        self.volumes.clear()
        self.images.clear()
        self.removals.clear()


@dataclass
class Container:
    """One container started by `Podman.start`."""

    podman: Podman
    name: str

    def exec(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`podman exec` (as the image's user); the finished process, whatever its exit status."""
        return self.podman("exec", self.name, *command, timeout=timeout, check=False)

    def state(self) -> dict[str, Any]:
        """The container's `.State` (Status, ExitCode, Health, …)."""
        documents = json.loads(self.podman("inspect", "--type=container", self.name).stdout)
        state: dict[str, Any] = documents[0]["State"]
        return state

    def running(self) -> bool:
        """Whether its process still runs."""
        return bool(self.state()["Running"])

    def logs(self) -> str:
        """What it wrote to stdout and stderr so far."""
        done = self.podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def stop(self, grace: int = 30) -> float:
        """`podman stop` (SIGTERM, then SIGKILL after `grace` s); the seconds it took."""
        started = time.monotonic()
        self.podman("stop", f"--time={grace}", self.name, timeout=grace + 60)
        return time.monotonic() - started


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _timestamp(text: str) -> float:
    """An RFC 3339 time as podman writes it (nanoseconds, Z or an offset), in seconds since the epoch."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    return datetime.fromisoformat(text).timestamp()


def _check(command: list[str], timeout: float) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise PodmanError(f"{command[0]} exited with {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
