"""`make run`: SIGINT or SIGTERM sent to make alone stops everything; a busy scraper port is refused."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from ..support import ROOT, free_port, server_env, wait_until


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":  # zombies are gone already, only not reaped
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def make_run(tmp_path: Path, port: int, scraper_port: int) -> subprocess.Popen[bytes]:
    env = server_env(tmp_path / "data", {"TELENTIR_MASTER_KEY": "11" * 32})
    # -o: never rebuild the virtualenv from here (the tests run inside it).
    command = ["make", "--no-print-directory", "-o", ".venv/bin/.installed", "run"]
    # make as a terminal starts it: SIGINT and SIGQUIT at their defaults. A suite started in the
    # background by a non-interactive shell inherits them ignored, and make keeps a signal that
    # was ignored at its start ignored (it would never see the SIGINT this test sends). The
    # interpreter resets them, then becomes make (same pid): no preexec_fn in a threaded process.
    reset_then_exec = (
        "import os, signal, sys\n"
        "for sig in (signal.SIGINT, signal.SIGQUIT): signal.signal(sig, signal.SIG_DFL)\n"
        "os.execvp(sys.argv[1], sys.argv[1:])"
    )
    with open(tmp_path / "make.log", "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-c", reset_then_exec, *command, f"PORT={port}", f"SCRAPER_PORT={scraper_port}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session, as in a terminal; a signal to it reaches make alone
        )


def healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_make_alone_stops_the_server_and_the_scraper(tmp_path, sig):
    port, scraper_port = free_port(), free_port()
    make = make_run(tmp_path, port, scraper_port)
    try:
        wait_until(lambda: healthy(port), timeout=30)
        tree = descendants(make.pid)
        assert len(tree) >= 4, tree  # the supervisor, the scraper, gunicorn's master and worker
        os.kill(make.pid, sig)  # make only, not its process group
        make.wait(timeout=30)
        wait_until(lambda: not any(alive(pid) for pid in tree), timeout=10)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
    for busy in (port, scraper_port):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", busy)) != 0, f"port {busy} still answers"
    assert "Demo API key: tlk_" in (tmp_path / "make.log").read_text()


def test_a_busy_scraper_port_stops_make_run_before_anything_starts(tmp_path):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        make = make_run(tmp_path, port, busy)
        assert make.wait(timeout=30) != 0
    output = (tmp_path / "make.log").read_text()
    assert f"port {busy} (SCRAPER_PORT) is taken" in output
    assert not healthy(port)
    assert not (tmp_path / "data").exists()
