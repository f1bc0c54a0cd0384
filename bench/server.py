"""Start the real server for a benchmark and watch its memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
MASTER_KEY = "42" * 32


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m telentir serve` (gunicorn, production settings) over a data folder."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        workers: int | None = None,
        threads: int = 256,
        worker_class: str = "gthread",
    ) -> None:
        self.data_dir, self.workers, self.threads = data_dir, workers, threads
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TELENTIR_")},
            "TELENTIR_DATA_DIR": str(data_dir),
            "TELENTIR_MASTER_KEY": MASTER_KEY,
            "TELENTIR_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.command = [
            sys.executable,
            "-m",
            "telentir",
            "serve",
            "--port",
            str(self.port),
            *(["--workers", str(workers)] if workers is not None else []),  # None: serve's default, one per core
            "--threads",
            str(threads),
            "--worker-class",
            worker_class,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        """Start and wait for /healthz."""
        with open(self.data_dir.parent / f"server-{self.port}.log", "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def worker_pids(self) -> list[int]:
        """gunicorn's worker processes (children of the master)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in children.read_text().split()] if children.exists() else []

    def cpu_seconds(self) -> float:
        """User plus system CPU time the workers have used so far (a worker gone meanwhile counts 0)."""
        ticks = 0
        for pid in self.worker_pids():
            try:
                # Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        """Resident memory of all workers."""
        total = 0
        for pid in self.worker_pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except FileNotFoundError:
                pass
        return total

    def stop(self) -> None:
        """Stop the whole process group."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(20)


class MemoryWatch:
    """Samples a server's RSS in the background; reports start and peak."""

    def __init__(self, server: Server, interval: float = 0.05) -> None:
        self.server, self.interval = server, interval
        self.start_rss = server.rss_bytes()
        self.peak = self.start_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.server.rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.server.rss_bytes())

    @property
    def growth_mib(self) -> float:
        """Peak minus starting RSS, MiB."""
        return (self.peak - self.start_rss) / 2**20

    @property
    def peak_mib(self) -> float:
        """Peak RSS, MiB."""
        return self.peak / 2**20
