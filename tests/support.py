"""Test helpers: waiting for a condition, runtimes and users over a data folder, real servers, an HTTP client."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from telentir.config import Config, load_config
from telentir.runtime import Runtime
from telentir.services import accounts, credentials
from telentir.wiring import build_runtime

ROOT = Path(__file__).resolve().parents[1]
FIXED_MASTER_KEY = "11" * 32

T = TypeVar("T")
_user_numbers = itertools.count()


def wait_until(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, message: str | Callable[[], str] = ""
) -> T:
    """Poll `condition` until it returns something truthy and return that; fail the test after `timeout` seconds.

    The condition is asked once more after the deadline has passed, so a slow poll never fails a
    wait that had in fact succeeded. `message` (text, or a function giving it, for a log read at
    the moment of failure) says what was awaited. An exception the condition raises ends the wait.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            awaited = (message() if callable(message) else message) or getattr(condition, "__qualname__", condition)
            raise AssertionError(f"gave up after {timeout} s waiting for {awaited}")
        time.sleep(interval)


def config_over(data_dir: Path | str, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Settings over `data_dir` with the fixed master key, on the session's storage backend, plus `overrides`.

    `environ` is a server's environment (its TELENTIR_* and STRIPE_* settings), read as that server
    reads it; nothing else is read from the process environment (the backend's engines come from
    `tests/backends.py`).
    """
    from .backends import overrides_for  # backends uses free_port from here

    values = {"data_dir": data_dir, "master_key": FIXED_MASTER_KEY, **overrides_for(Path(data_dir)), **overrides}
    return load_config(values, environ=dict(environ or {}))


def runtime_over(data_dir: Path | str, environ: Mapping[str, str] | None = None, **overrides: Any) -> Runtime:
    """A Runtime over `data_dir` (a server's or the CLI's), to make users and read rows; the caller closes it.

    `environ`: the server's settings as its environment (see `config_over`), so the runtime sees
    what the server sees. `with contextlib.closing(runtime_over(...)) as rt:` closes itself.
    """
    return build_runtime(config_over(data_dir, environ, **overrides))


def make_user(rt: Runtime, verified: bool = True, password: str | None = None) -> dict[str, Any]:
    """A new user with a unique email; the dict gains `api_key`."""
    n = next(_user_numbers)
    user = accounts.create_user(
        rt,
        f"user{n}-{id(rt)}@example.com",
        "+15555550100",
        first_name="Test",
        last_name=f"User{n}",
        password=password,
        verified=verified,
    )
    user["api_key"] = credentials.create_api_key(rt, user["id"], "test")["key"]
    return user


def wait_for_output(
    proc: subprocess.Popen[bytes], out_path: Path, marker: bytes, timeout: float, interval: float = 0.05
) -> None:
    """Wait until a child process's output file holds `marker`; fail at once, with its output, if it has ended."""

    def printed() -> bool:
        if marker in out_path.read_bytes():
            return True
        assert proc.poll() is None, f"the child exited with {proc.returncode}:\n{out_path.read_text(errors='replace')}"
        return False

    wait_until(printed, timeout=timeout, interval=interval, message=f"the child to print {marker!r}")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(data_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a server (or CLI) process over `data_dir`, on the session's storage backend."""
    from .backends import env_for  # backends uses free_port from here

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELENTIR_", "STRIPE_", "SCRAPER_"))}
    env.update({"TELENTIR_DATA_DIR": str(data_dir), "TELENTIR_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
    env.update(env_for(data_dir))
    env.update(extra or {})
    return env


class ServerExited(RuntimeError):
    """The server process ended while starting up."""

    def __init__(self, returncode: int, log: str) -> None:
        super().__init__(f"server exited with {returncode}:\n{log}")
        self.returncode, self.log = returncode, log


class ServerProcess:
    """`python -m telentir serve` in a child process (gunicorn, real sockets)."""

    def __init__(
        self,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        workers: int | None = None,
        threads: int | None = None,
        worker_class: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.env = server_env(self.data_dir, env)
        self.workers, self.threads, self.worker_class = workers, threads, worker_class
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir.parent / f"server-{self.data_dir.name}.log"

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:41234."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start and wait until /healthz answers."""
        self.port = free_port()
        cmd = [sys.executable, "-m", "telentir", "serve", "--port", str(self.port)]
        if self.workers:
            cmd += ["--workers", str(self.workers)]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        if self.worker_class:
            cmd += ["--worker-class", self.worker_class]
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(self._healthy, timeout=timeout, message=lambda: f"/healthz to answer 200; the log:\n{self.log()}")
        return self

    def _healthy(self) -> bool:
        """/healthz answers 200; ServerExited if the process has ended."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ServerExited(self.proc.returncode, self.log())
        try:
            with requests.get(self.url + "/healthz", timeout=1) as resp:
                return resp.status_code == 200
        except requests.RequestException:
            return False

    def worker_pids(self) -> set[int]:
        """The pids of the gunicorn master's live workers."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return {int(pid) for pid in children.read_text().split()} if children.exists() else set()

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Graceful stop (SIGTERM to the whole process group)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the master and workers at once: a crash."""
        self._signal(signal.SIGKILL)

    def discard(self) -> None:
        """End a server its tests are done with, at once (SIGKILL): its folder goes with the temporary directory.

        A graceful stop takes about a second (a worker notices SIGTERM at its next poll) and
        proves nothing at teardown; a test that checks the graceful stop calls `stop()` itself.
        """
        self.kill()

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)


@contextmanager
def running_server(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    workers: int | None = None,
    threads: int | None = None,
    worker_class: str | None = None,
    **env: str,
) -> Iterator[ServerProcess]:
    """A started server over a fresh data folder `<name>N/data`, the fixed master key plus `env`; discarded on exit.

    The one way tests start servers: the `server_factory` fixture for a test's own, directly for
    a module's or the session's shared one.
    """
    data_dir = tmp_path_factory.mktemp(name) / "data"
    server = ServerProcess(data_dir, {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, **env}, workers, threads, worker_class)
    try:
        yield server.start()
    finally:
        server.discard()


class Api:
    """requests against one server with one credential."""

    def __init__(self, base_url: str, credential: str | None = None) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        if credential:
            self.session.headers["Authorization"] = f"Bearer {credential}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send a request to `/api` + path (or an absolute path starting with //)."""
        kwargs.setdefault("timeout", 30)
        url = self.base_url + (path[1:] if path.startswith("//") else "/api" + path)
        return self.session.request(method, url, **kwargs)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PUT", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def close(self) -> None:
        self.session.close()


def assert_error(resp: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is the JSON error shape with this status (and code)."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers["Content-Type"]
    body = resp.json()
    assert set(body) >= {"error", "message"} and isinstance(body["message"], str) and body["message"], body
    if code is not None:
        assert body["error"] == code, body
    return body
