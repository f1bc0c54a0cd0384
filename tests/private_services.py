"""The suite's own Redis and PostgreSQL: private servers on free ports, never the machine's.

`redis_url()` and `postgres_url()` start the server on first use (a run that needs neither
starts neither) and return its URL; `stop()` (conftest's `pytest_unconfigure`) stops both and
removes their folders. Each lives in a folder of its own under the temp directory, listens on
127.0.0.1 only and keeps nothing: Redis without persistence; PostgreSQL from `initdb` with
trust authentication and fsync off. The machine's own services (on 6379 and 5432, if any) are
never used, started or stopped.

A watchdog (tests/service_watchdog.py) outlives a pytest that is killed or times out, and then
stops the servers and removes the folders itself.

TELENTIR_TEST_POSTGRES_URL (an admin URL, e.g. postgresql://postgres@127.0.0.1:5432/postgres:
the suite creates and drops databases there) and TELENTIR_TEST_REDIS_URL (e.g.
redis://127.0.0.1:6379/0) point the suite at servers of your own instead; nothing is started then.

    python -m tests.private_services --check   # exits 1, saying what to install, if a program is missing
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

POSTGRES_ENV = "TELENTIR_TEST_POSTGRES_URL"
REDIS_ENV = "TELENTIR_TEST_REDIS_URL"
START_ATTEMPTS = 3  # a free port can be taken by someone else between choosing and binding it
INSTALL_HINT = "install Debian's {package} package (`bash .ci/run` does) or set {env} to a server of your own"


class MissingProgram(RuntimeError):
    """A program the private servers need is not installed."""


class _Servers:
    """This process's private servers: their URLs, what to undo at the end, and the watchdog that will."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.urls: dict[str, str] = {}
        self.failures: dict[str, str] = {}
        self.undo: list[dict[str, Any]] = []
        self.watchdog: subprocess.Popen[bytes] | None = None
        self.children: list[subprocess.Popen[bytes]] = []  # to reap once stopped

    def url(self, name: str, start: Callable[[], str]) -> str:
        """The URL of server `name`, starting it on first use; after a failed start, every call fails at once."""
        with self.lock:
            if name in self.failures:
                raise RuntimeError(self.failures[name])
            if name not in self.urls:
                try:
                    self.urls[name] = start()
                except Exception as exc:
                    self.failures[name] = f"the suite's private {name} did not start: {exc}"
                    raise
            return self.urls[name]

    def remember(self, item: dict[str, Any]) -> None:
        """Tell the watchdog (started on first use) about something to undo at the end."""
        if self.watchdog is None:
            self.watchdog = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("service_watchdog.py"))],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # not in pytest's process group: Ctrl-C and group kills spare it
            )
        stdin: IO[bytes] | None = self.watchdog.stdin
        assert stdin is not None
        stdin.write(json.dumps(item).encode() + b"\n")
        stdin.flush()
        self.undo.append(item)

    def folder(self, kind: str) -> Path:
        """A new folder under the temp directory, removed at the end."""
        folder = Path(tempfile.mkdtemp(prefix=f"telentir-test-{kind}-"))
        self.remember({"folder": str(folder)})
        return folder

    def stop(self) -> None:
        """Close the watchdog's stdin and wait while it undoes everything (or undo it here if it cannot)."""
        with self.lock:
            watchdog, self.watchdog = self.watchdog, None
            if watchdog is None:
                return
            assert watchdog.stdin is not None
            watchdog.stdin.close()
            try:
                done = watchdog.wait(timeout=120) == 0
            except subprocess.TimeoutExpired:
                watchdog.kill()
                watchdog.wait()
                done = False
            if not done:
                from .service_watchdog import undo

                undo(self.undo)
            for child in self.children:
                child.wait(timeout=30)
            self.children.clear()
            self.undo.clear()
            self.urls.clear()
            self.failures.clear()


_servers = _Servers()


def redis_url(db: int = 0) -> str:
    """redis://127.0.0.1:<port>/<db> of the suite's Redis (or of TELENTIR_TEST_REDIS_URL's server)."""
    base = os.environ.get(REDIS_ENV) or _servers.url("redis", _start_redis)
    return urlunsplit(urlsplit(base)._replace(path=f"/{db}"))


def postgres_url() -> str:
    """The admin URL (superuser `postgres`, database `postgres`) of the suite's PostgreSQL.

    Or TELENTIR_TEST_POSTGRES_URL, when set.
    """
    return os.environ.get(POSTGRES_ENV) or _servers.url("postgres", _start_postgres)


def stop() -> None:
    """Stop the servers this process started and remove their folders."""
    _servers.stop()


def watch_process(pid: int, *match: str) -> None:
    """Have the watchdog stop process `pid` (if its command line still holds every `match`) at the session's end.

    For the servers tests start for themselves (tests/redis_server.py): a killed pytest leaves none behind.
    """
    with _servers.lock:
        _servers.remember({"process": pid, "match": list(match)})


def _free_port() -> int:
    from .support import free_port

    return free_port()


# --- Redis ---------------------------------------------------------------------------------------------


def _start_redis() -> str:
    program = shutil.which("redis-server")
    if program is None:
        hint = INSTALL_HINT.format(package="redis-server", env=REDIS_ENV)
        raise MissingProgram(f"redis-server is not installed: {hint}")
    import redis

    folder = _servers.folder("redis")
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        argv = [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(
            [*argv, "--dir", str(folder), "--logfile", str(folder / "redis.log"), "--daemonize", "no"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _servers.children.append(proc)
        _servers.remember({"process": proc.pid, "match": ["redis-server", str(port)]})
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            client = redis.Redis.from_url(url, socket_timeout=2)
            try:
                if client.ping():
                    return url
            except redis.RedisError:
                time.sleep(0.05)
            finally:
                client.close()
        proc.kill()
    raise RuntimeError(f"redis-server did not answer on a free port; its log:\n{_tail(folder / 'redis.log')}")


# --- PostgreSQL ------------------------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """The folder of PostgreSQL's server programs: initdb's on PATH, else Debian's newest version's."""
    on_path = shutil.which("initdb")
    if on_path is not None:
        return Path(on_path).resolve().parent  # Debian's are symlinked into PATH at most: follow to the real folder
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_major_version)
    return found[-1].parent if found else None


def _major_version(initdb: Path) -> int:
    version = initdb.parent.parent.name
    return int(version) if re.fullmatch(r"\d+", version) else 0


def _unprivileged() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root (it refuses root): `postgres`, else `nobody`; else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as")


def _start_postgres() -> str:
    bindir = postgres_bindir()
    if bindir is None:
        raise MissingProgram(
            "PostgreSQL's initdb is not installed: " + INSTALL_HINT.format(package="postgresql", env=POSTGRES_ENV)
        )
    owner = _unprivileged()
    folder = _servers.folder("postgres")
    data = folder / "data"
    if owner is not None:
        os.chown(folder, *owner)

    def as_owner(argv: list[str], log: str, timeout: float) -> subprocess.CompletedProcess[bytes]:
        with open(folder / log, "ab") as out:
            return subprocess.run(
                argv,
                user=owner[0] if owner else None,
                group=owner[1] if owner else None,
                extra_groups=[] if owner else None,
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the postmaster pg_ctl leaves behind is out of pytest's process group
                check=False,
                timeout=timeout,
            )

    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
    if as_owner([*initdb, "--locale=C", "--no-sync"], "initdb.log", 300).returncode != 0:
        raise RuntimeError(f"initdb failed:\n{_tail(folder / 'initdb.log')}")
    with open(data / "postgresql.conf", "a") as conf:  # a throwaway cluster: durability buys nothing here
        conf.write(
            "\n# the test suite's private server\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{folder}'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        )
    uid, gid = owner if owner else (None, None)
    _servers.remember({"postgres": str(data), "pg_ctl": str(bindir / "pg_ctl"), "uid": uid, "gid": gid})
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        start = [str(bindir / "pg_ctl"), "start", "-D", str(data), "-l", str(folder / "postgres.log")]
        if as_owner([*start, "-o", f"-p {port}", "-w", "-t", "120"], "pg_ctl.log", 180).returncode == 0:
            return f"postgresql://postgres@127.0.0.1:{port}/postgres"
    raise RuntimeError(f"PostgreSQL did not start on a free port; its log:\n{_tail(folder / 'postgres.log')}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- the check `make test` runs first -------------------------------------------------------------------


def missing_programs() -> list[str]:
    """Why the private servers could not start (empty when everything they need is installed or overridden)."""
    problems = []
    if not os.environ.get(REDIS_ENV) and shutil.which("redis-server") is None:
        problems.append("redis-server: " + INSTALL_HINT.format(package="redis-server", env=REDIS_ENV))
    if not os.environ.get(POSTGRES_ENV) and postgres_bindir() is None:
        problems.append(
            "PostgreSQL's initdb and pg_ctl (in /usr/lib/postgresql/<version>/bin): "
            + INSTALL_HINT.format(package="postgresql", env=POSTGRES_ENV)
        )
    return problems


def main(argv: list[str] | None = None) -> int:
    """--check: say what is missing and exit 1, or exit 0."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="check that the programs the suite starts are installed")
    args = parser.parse_args(argv)
    if not args.check:
        parser.print_help()
        return 2
    problems = missing_programs()
    for problem in problems:
        print(f"The test suite starts its own Redis and PostgreSQL; missing {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
