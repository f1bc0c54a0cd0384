"""`make run`'s supervisor: the demo scraper and the server, started together and stopped together.

`python -m telentir.devrun --port 8000 --scraper-port 8001` refuses to start when either
port is taken (a busy scraper port would otherwise fail ingestion later), starts the demo
scraper, waits until it listens, starts `telentir serve --demo` pointed at it, and stops
both, waiting for them, when:
- it gets SIGINT, SIGTERM or SIGHUP (GNU make forwards SIGTERM to its recipe);
- its parent (make) got SIGINT or SIGHUP, which make does not forward: make then waits
  for its recipe to end. Linux shows it in `/proc/<make>/status`: make's handler resets
  the signal to its default disposition before waiting, so its "caught" mask loses it;
- its parent went away, or either child ended.
Development only: production runs `telentir serve` under systemd or a container runtime.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
POLL_SECONDS = 0.2
GRACE_SECONDS = 15.0


def port_taken(host: str, port: int) -> bool:
    """Whether something already listens on (or holds) host:port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def caught_signals(pid: int) -> int | None:
    """The mask of signals `pid` handles (Linux /proc), or None where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        return None
    return None


class ParentWatch:
    """Notices when the parent process stops handling a stop signal it handled at our start."""

    def __init__(self) -> None:
        self.ppid = os.getppid()
        mask = caught_signals(self.ppid) or 0
        self.watched = [sig for sig in STOP_SIGNALS if mask & (1 << (sig - 1))]

    def gave_up(self) -> bool:
        """True once the parent is gone or is handling one of the watched signals."""
        if os.getppid() != self.ppid:
            return True
        mask = caught_signals(self.ppid)
        return mask is not None and any(not mask & (1 << (sig - 1)) for sig in self.watched)


class Supervisor:
    """The two children and the stop condition."""

    def __init__(self, host: str, port: int, scraper_port: int) -> None:
        self.host, self.port, self.scraper_port = host, port, scraper_port
        self.children: list[subprocess.Popen[bytes]] = []
        self.stop = threading.Event()
        self.parent = ParentWatch()

    def run(self) -> int:
        """Start both, wait for a reason to stop, stop both; the exit status."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda signum, frame: self.stop.set())
        try:
            scraper = self._start(["demo-scraper", "--host", self.host, "--port", str(self.scraper_port)])
            if not self._wait_listening(self.scraper_port, scraper):
                sys.stderr.write(f"make run: the demo scraper did not start on port {self.scraper_port}\n")
                return 1
            env = {**os.environ, "SCRAPER_HOSTNAME": f"http://{self.host}:{self.scraper_port}"}
            self._start(["serve", "--host", self.host, "--port", str(self.port), "--demo"], env)
            return self._wait()
        finally:
            self._stop_children()

    def _start(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        # Our own interpreter and package, with arguments built here: no outside input.
        child = subprocess.Popen([sys.executable, "-m", "telentir", *args], env=env)  # noqa: S603
        self.children.append(child)
        return child

    def _wait_listening(self, port: int, child: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and child.poll() is None and not self.stop.is_set():
            try:
                socket.create_connection((self.host, port), timeout=0.5).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def _wait(self) -> int:
        while not self.stop.wait(POLL_SECONDS):
            if self.parent.gave_up():
                return 0
            for child in self.children:
                if child.poll() is not None:
                    return child.returncode or 0
        return 0

    def _stop_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)  # gunicorn: graceful stop; the scraper: exit
        deadline = time.monotonic() + GRACE_SECONDS
        for child in self.children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def main(argv: list[str] | None = None) -> int:
    """Parse the options, check the ports, run the supervisor."""
    parser = argparse.ArgumentParser(prog="python -m telentir.devrun", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--scraper-port", type=int, default=8001)
    args = parser.parse_args(argv)
    for name, port in (("PORT", args.port), ("SCRAPER_PORT", args.scraper_port)):
        if port_taken(args.host, port):
            sys.stderr.write(
                f"make run: port {port} ({name}) is taken on {args.host}; stop what uses it, or pick another: "
                f"make run {name}={port + 10}\n"
            )
            return 2
    return Supervisor(args.host, args.port, args.scraper_port).run()


if __name__ == "__main__":
    sys.exit(main())
