"""A redis-server process of a test's own, on a free port, so the test may stop or kill it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from .private_services import watch_process
from .support import free_port, wait_until


class RedisServer:
    """A redis-server of our own on a free port, so a test may kill it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir

    @property
    def url(self) -> str:
        """redis://127.0.0.1:<port>"""
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        """Start (daemonized) and wait until it answers."""
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--dir",
                str(self.workdir),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wait_until(self.answers, timeout=10, message="redis-server to answer PING")
        watch_process(self.pid(), "redis-server", str(self.port))  # stopped even if pytest is killed
        return self

    def stop(self) -> None:
        """Shut it down and wait until the port is dead."""
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"], check=False, capture_output=True, timeout=10
        )
        wait_until(lambda: not self.answers(), timeout=10, message="redis-server to stop")

    def answers(self) -> bool:
        """PING gets PONG."""
        done = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], check=False, capture_output=True, timeout=10)
        return done.stdout.strip() == b"PONG"

    def pid(self) -> int:
        """The redis-server process id."""
        client = redis.Redis(port=self.port)
        try:
            return int(client.info("server")["process_id"])
        finally:
            client.close()

    def numpat(self) -> int:
        """PUBSUB NUMPAT: pattern subscriptions held on this server."""
        client = redis.Redis(port=self.port)
        try:
            return int(client.pubsub_numpat())
        finally:
            client.close()


def settled_numpat(server: RedisServer, quiet: float, timeout: float = 15.0) -> int:
    """PUBSUB NUMPAT once it has not changed for `quiet` seconds (other servers' streams settle first)."""
    deadline = time.monotonic() + timeout
    value, since = server.numpat(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError(f"PUBSUB NUMPAT never held still for {quiet} s (last {value})")
        time.sleep(0.1)
        if (now := server.numpat()) != value:
            value, since = now, time.monotonic()
    return value


def wait_for_numpat(server: RedisServer, expected: int, timeout: float) -> None:
    """Wait until `server` holds exactly `expected` pattern subscriptions (they come and go asynchronously)."""
    wait_until(
        lambda: server.numpat() == expected,
        timeout=timeout,
        message=lambda: f"PUBSUB NUMPAT to be {expected} (it is {server.numpat()})",
    )
