"""The suite's own Redis and PostgreSQL (tests/private_services.py): private, and gone when the session is.

`make test` needs nothing running beforehand: these prove the suite's servers are its own
(not the machine's 6379 and 5432), that a pytest killed outright leaves no server or folder
behind (the watchdog undoes them), and that a missing program is named before anything runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from ..private_services import POSTGRES_ENV, REDIS_ENV, postgres_url, redis_url
from ..support import ROOT, wait_until

OVERRIDDEN = pytest.mark.skipif(
    bool(os.environ.get(POSTGRES_ENV) or os.environ.get(REDIS_ENV)),
    reason="TELENTIR_TEST_POSTGRES_URL or TELENTIR_TEST_REDIS_URL points the suite at servers of your own",
)
OWN_FOLDER = str(Path(tempfile.gettempdir()) / "telentir-test-")


@OVERRIDDEN
def test_the_suites_redis_is_a_private_server_on_loopback() -> None:
    url = urlsplit(redis_url())
    assert url.hostname == "127.0.0.1" and url.port not in (None, 6379), url
    client = redis.Redis.from_url(redis_url())
    try:
        assert client.config_get("dir")["dir"].startswith(OWN_FOLDER + "redis-")
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("save")["save"] == ""  # nothing kept
    finally:
        client.close()
    assert urlsplit(redis_url(9)).path == "/9"


@OVERRIDDEN
def test_the_suites_postgresql_is_a_private_throwaway_cluster_on_loopback() -> None:
    url = urlsplit(postgres_url())
    assert url.hostname == "127.0.0.1" and url.port not in (None, 5432), url
    with psycopg.connect(postgres_url()) as conn:
        setting = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in ("data_directory", "listen_addresses")}
        assert setting["data_directory"].startswith(OWN_FOLDER + "postgres-")
        assert setting["listen_addresses"] == "127.0.0.1"
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)


def test_overrides_replace_the_private_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REDIS_ENV, "redis://cache.example:6380/0")
    monkeypatch.setenv(POSTGRES_ENV, "postgresql://admin@db.example:5433/postgres")
    assert redis_url() == "redis://cache.example:6380/0"
    assert redis_url(9) == "redis://cache.example:6380/9"
    assert postgres_url() == "postgresql://admin@db.example:5433/postgres"


# Starts both servers and a test's own redis-server (tests/redis_server.py) in a child process,
# prints their URLs and the folders, then is killed outright.
KILLED_PYTEST = """
import os, signal
from tests import private_services as ps
from tests.redis_server import RedisServer
own = RedisServer(ps._servers.folder("own-redis")).start()
print(ps.redis_url(), ps.postgres_url(), own.url, flush=True)
print(" ".join(item["folder"] for item in ps._servers.undo if "folder" in item), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@OVERRIDDEN
def test_a_killed_pytest_leaves_no_server_and_no_folder_behind() -> None:
    child = subprocess.run(
        [sys.executable, "-c", KILLED_PYTEST],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    urls, folders = child.stdout.splitlines()
    redis_at, postgres_at, own_redis_at = urls.split()
    assert len(folders.split()) == 3 and all(folder.startswith(OWN_FOLDER) for folder in folders.split())

    def gone() -> bool:
        if any(Path(folder).exists() for folder in folders.split()):
            return False
        try:
            psycopg.connect(postgres_at, connect_timeout=2).close()
            return False
        except psycopg.OperationalError:
            pass
        return not any(_answers(url) for url in (redis_at, own_redis_at))

    wait_until(gone, timeout=60, message="the watchdog to stop both servers and remove their folders")


def _answers(redis_at: str) -> bool:
    client = redis.Redis.from_url(redis_at, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def test_make_test_names_a_missing_program_before_running_anything() -> None:
    """`python -m tests.private_services --check` (the Makefile's test-deps) says what to install."""
    env = {key: value for key, value in os.environ.items() if key not in (REDIS_ENV, POSTGRES_ENV)}
    check = [sys.executable, "-m", "tests.private_services", "--check"]
    missing = subprocess.run(check, cwd=ROOT, env={**env, "PATH": ""}, capture_output=True, text=True, check=False)
    assert missing.returncode == 1
    assert "redis-server" in missing.stderr and "bash .ci/run" in missing.stderr, missing.stderr
    # Debian keeps PostgreSQL's server programs off PATH: they are found in /usr/lib/postgresql/<version>/bin.
    debian = any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    assert ("initdb" in missing.stderr) == (not debian), missing.stderr
    overridden = subprocess.run(
        check,
        cwd=ROOT,
        env={**env, "PATH": "", REDIS_ENV: "redis://127.0.0.1:1/0"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert "redis-server" not in overridden.stderr
    assert overridden.returncode == (0 if debian else 1), overridden.stderr
