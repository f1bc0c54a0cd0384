"""Stops the suite's private servers and removes their folders when the pytest process that started them ends.

Run as a script (`python tests/service_watchdog.py`, standard library only) in a session of its
own, so Ctrl-C at the terminal and a kill of pytest's process group leave it running. pytest
writes one JSON line to its stdin for each thing to undo, as it makes it:

    {"folder": "/tmp/telentir-test-redis-x1"}
    {"process": 4242, "match": ["redis-server", "40123"]}
    {"postgres": "/tmp/telentir-test-postgres-x2/data", "pg_ctl": "/usr/lib/.../bin/pg_ctl", "uid": 101, "gid": 104}

When its stdin ends (pytest closed it at the end of the session, or pytest died: killed, timed
out, crashed) it undoes them all, the newest first: a server is stopped before its folder goes.
`private_services` calls the same `undo` in-process if the watchdog could not do its work.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def undo(items: list[dict[str, Any]]) -> None:
    """Stop every server and remove every folder of `items`, the newest first; never raises."""
    for item in reversed(items):
        try:
            if "process" in item:
                _stop_process(int(item["process"]), [str(needle) for needle in item["match"]])
            elif "postgres" in item:
                _stop_postgres(item)
            elif "folder" in item:
                shutil.rmtree(item["folder"], ignore_errors=True)
        except Exception as exc:  # best effort: one failure must not keep the rest alive
            print(f"service_watchdog: could not undo {item}: {exc}", file=sys.stderr)


def _is_running(pid: int, match: list[str]) -> bool:
    """Process `pid` is alive (not a zombie) and still the one we started (its command line holds every `match`).

    A pid is reused once its process is reaped: the program's name and its port tell ours apart.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    zombie = any(line.startswith("State:") and "Z" in line.split()[1:2] for line in status.splitlines())
    return not zombie and all(needle.encode() in command for needle in match)


def _stop_process(pid: int, match: list[str]) -> None:
    """SIGTERM, then SIGKILL after ten seconds."""
    if not _is_running(pid, match):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _is_running(pid, match):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.05)


def _stop_postgres(item: dict[str, Any]) -> None:
    """`pg_ctl stop -m immediate`, as the user that owns the cluster (PostgreSQL refuses root)."""
    data = Path(item["postgres"])
    if not (data / "postmaster.pid").exists():
        return
    subprocess.run(
        [item["pg_ctl"], "stop", "-D", str(data), "-m", "immediate", "-w", "-t", "60"],
        user=item.get("uid"),
        group=item.get("gid"),
        extra_groups=[] if item.get("uid") is not None else None,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=90,
    )


def main() -> int:
    """Collect the items from stdin until it ends, then undo them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the end of stdin ends us
    items: list[dict[str, Any]] = []
    for line in sys.stdin:
        if line.strip():
            items.append(json.loads(line))
    undo(items)
    return 0


if __name__ == "__main__":
    sys.exit(main())
