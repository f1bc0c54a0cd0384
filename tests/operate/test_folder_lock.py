"""One owner per data folder: a second server, `init` or `migrate` on a live folder is refused, changing nothing.

The finding: `telentir init` (documented as idempotent) or a second `serve`, even one that
then failed to bind its port, "recovered" the running server's jobs: a running job was
marked interrupted, its reservation released, and it then finished anyway, unbilled.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from telentir.cli import main
from telentir.runtime import Runtime
from telentir.storage.folder_lock import FolderLock, FolderLocked

from ..connect_support import PRICE
from ..money_support import billing_env, billing_runtime, funded_user, job_row, ledger_counts, post_leads
from ..scraper_fixture import TestScraper
from ..support import ROOT, Api, ServerExited, ServerProcess, free_port, server_env, wait_until

FUNDS, ASKED, WRITTEN = 10 * PRICE, 10, 4


@pytest.fixture
def own_scraper() -> Iterator[TestScraper]:
    """A scraper of this test's own: stopping it ends the stalled stream of a running job."""
    with TestScraper() as service:
        yield service


@pytest.fixture
def live(
    server_factory: Callable[..., ServerProcess], own_scraper: TestScraper
) -> Iterator[tuple[ServerProcess, Runtime]]:
    """A running server, and a Runtime over its data folder."""
    server = server_factory("folder", **billing_env(own_scraper.url))
    with closing(billing_runtime(server.data_dir)) as rt:
        yield server, rt
        own_scraper.stopping.set()


class RunningJob:
    """A lead job holding a stalled scraper stream after writing WRITTEN records."""

    def __init__(self, server: ServerProcess, rt: Runtime) -> None:
        self.user = funded_user(rt, "payg", FUNDS)
        self.api = Api(server.url, self.user["api_key"])
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._post)
        self.thread.start()
        self.row: dict[str, Any] = wait_until(
            lambda: rt.db.query_one(
                "SELECT * FROM jobs WHERE user_id = ? AND created >= ?", (self.user["id"], WRITTEN)
            ),
            timeout=20,
        )

    def _post(self) -> None:
        try:
            post_leads(self.api, {"credits": ASKED, "mode": "stall", "after": WRITTEN}, timeout=90)
        except Exception as exc:  # the server may die under it in some tests
            self.errors.append(exc)

    def close(self) -> None:
        self.thread.join(timeout=60)
        self.api.close()


def telentir(data_dir: Path, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m telentir ARGS` over the folder, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "telentir", *args],
        cwd=ROOT,
        env=server_env(data_dir, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_untouched(rt: Runtime, job: RunningJob, stray: Path) -> None:
    row = job_row(rt, job.row["id"])
    assert (row["status"], row["settlement"], row["created"]) == ("running", "open", WRITTEN), row
    assert ledger_counts(rt, job.row["id"]) == {"reserve": 1}
    assert stray.exists(), "a file the live server may still commit was swept"


def assert_billed_once(rt: Runtime, job: RunningJob, scraper: TestScraper) -> None:
    """Let the stalled job end normally: it is charged once, for exactly what it wrote."""
    scraper.stopping.set()
    job.close()
    row = job_row(rt, job.row["id"])
    assert (row["status"], row["used"], row["charged"], row["refunded"]) == (
        "succeeded",
        WRITTEN,
        WRITTEN * PRICE,
        FUNDS - WRITTEN * PRICE,
    ), row
    assert ledger_counts(rt, job.row["id"]) == {"reserve": 1, "charge": 1, "refund": 1}
    assert job.api.get("/credits").json()["amount"] == FUNDS - WRITTEN * PRICE
    assert job.api.get("/billing/state").json()["usage"]["leads"] == WRITTEN


# --- the lock itself ------------------------------------------------------------------------------


def test_the_lock_is_exclusive_names_its_holder_and_is_released(tmp_path: Path) -> None:
    first = FolderLock(tmp_path / "folder").acquire()
    with pytest.raises(FolderLocked) as refused:
        FolderLock(tmp_path / "folder").acquire()  # another open file description, as another process has
    assert refused.value.holder == os.getpid() and f"pid {os.getpid()}" in str(refused.value)
    first.release()
    with FolderLock(tmp_path / "folder") as again:
        assert again.held
    assert not again.held


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from telentir.storage.folder_lock import FolderLock; "
            "FolderLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLocked, match=f"pid {holder.pid}"):
            FolderLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
    FolderLock(tmp_path).acquire().release()


# --- a live server's folder -------------------------------------------------------------------------


def test_init_and_migrate_on_a_live_folder_are_refused_and_change_nothing(live, own_scraper):
    server, rt = live
    job = RunningJob(server, rt)
    stray = rt.blobs.path_for(rt.blobs.write(b"a file a live server has not committed yet"))
    env = billing_env(own_scraper.url)
    for args in (["init"], ["migrate"]):
        done = telentir(server.data_dir, env, *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert f"in use by a running Telentir server (pid {server.proc.pid})" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert_untouched(rt, job, stray)
    dry_run = telentir(server.data_dir, env, "migrate", "--dry-run")  # only reads: allowed
    assert dry_run.returncode == 0 and "nothing to do" in dry_run.stdout, dry_run.stderr
    assert_billed_once(rt, job, own_scraper)


def test_a_second_serve_on_a_live_folder_is_refused_and_changes_nothing(live, own_scraper):
    server, rt = live
    job = RunningJob(server, rt)
    stray = rt.blobs.path_for(rt.blobs.write(b"a file a live server has not committed yet"))
    second = ServerProcess(server.data_dir, billing_env(own_scraper.url))
    with pytest.raises(ServerExited) as refused:
        second.start()
    assert refused.value.returncode == 1 and f"pid {server.proc.pid}" in refused.value.log
    assert_untouched(rt, job, stray)
    assert Api(server.url).get("//healthz").status_code == 200  # the first server serves on
    assert_billed_once(rt, job, own_scraper)


def test_admin_commands_keep_working_while_a_server_runs(live, own_scraper):
    server, _ = live
    env = {**billing_env(own_scraper.url), "TELENTIR_DATA_DIR": str(server.data_dir), "TELENTIR_LOG_LEVEL": "WARNING"}
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
        return result.output

    cli("users", "create", "ada@example.com", "--phone", "+15555550123", "--verified")
    assert "ada@example.com" in cli("users", "list")
    key = cli("api-keys", "create", "ada@example.com").strip().splitlines()[-1]
    cli("users", "set-plan", "ada@example.com", "payg")
    assert "local balance is now $5.00" in cli("credits", "grant", "ada@example.com", "500")
    assert "balance: $5.00" in cli("credits", "show", "ada@example.com")
    api = Api(server.url, key)
    assert api.get("/credits").json()["amount"] == 500  # the live server sees what the commands wrote
    api.close()


# --- a folder whose server crashed ---------------------------------------------------------------------


def test_a_serve_that_cannot_bind_its_port_recovers_nothing(server_factory, own_scraper):
    env = billing_env(own_scraper.url)
    server = server_factory("crashed", **env)
    data_dir = server.data_dir
    with closing(billing_runtime(data_dir)) as rt:
        job = RunningJob(server, rt)
        server.kill()  # the whole server dies mid-job: the job is left running, its folder unlocked
        job.close()
        stray = rt.blobs.path_for(rt.blobs.write(b"left by the crash"))
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            done = telentir(data_dir, env, "serve", "--port", str(port), timeout=90)
        assert done.returncode != 0, done.stdout
        assert_untouched(rt, job, stray)

        server.start()  # a server that can bind recovers, once
        row = job_row(rt, job.row["id"])
        assert (row["status"], row["used"], row["charged"]) == ("interrupted", WRITTEN, WRITTEN * PRICE), row
        assert ledger_counts(rt, job.row["id"]) == {"reserve": 1, "charge": 1, "refund": 1}
        assert not stray.exists()


def test_init_takes_the_folder_once_its_server_is_gone(server_factory, own_scraper):
    env = billing_env(own_scraper.url)
    server = server_factory("gone", **env)
    data_dir = server.data_dir
    with closing(billing_runtime(data_dir)) as rt:
        job = RunningJob(server, rt)
        server.kill()
        job.close()
        done = telentir(data_dir, env, "init")  # SIGKILL released the lock: init may now repair
        assert done.returncode == 0, done.stderr
        row = job_row(rt, job.row["id"])
        assert (row["status"], row["charged"], row["refunded"]) == (
            "interrupted",
            WRITTEN * PRICE,
            FUNDS - WRITTEN * PRICE,
        )
        again = telentir(data_dir, env, "init")  # and stays idempotent
        assert again.returncode == 0 and "removed 0 stray blob file(s)" in again.stdout, again.stderr
        assert ledger_counts(rt, job.row["id"]) == {"reserve": 1, "charge": 1, "refund": 1}


def test_gunicorn_run_directly_is_refused_on_a_live_folder_too(live, own_scraper):
    server, _ = live
    gunicorn = Path(sys.executable).with_name("gunicorn")
    done = subprocess.run(
        [str(gunicorn), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{free_port()}", "app:app"],
        cwd=ROOT,
        env=server_env(server.data_dir, billing_env(own_scraper.url)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and f"pid {server.proc.pid}" in done.stderr, done.stderr


def test_serve_demo_announces_its_user_once_storage_is_ready(tmp_path, own_scraper):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "telentir", "serve", "--port", str(port), "--demo"],
        cwd=ROOT,
        env=server_env(tmp_path / "data", billing_env(own_scraper.url)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        key = next(line.split(": ", 1)[1].strip() for line in proc.stdout if line.startswith("Demo API key:"))
        api = Api(f"http://127.0.0.1:{port}", key)
        try:
            root = wait_until(lambda: _root_or_none(api), timeout=20)
            assert set(root["stores"]) >= {"contacts"}
        finally:
            api.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def _root_or_none(api: Api) -> dict[str, Any] | None:
    try:
        resp = api.get("/root", timeout=5)
    except requests.RequestException:
        return None  # workers still booting
    return resp.json() if resp.status_code == 200 else None
