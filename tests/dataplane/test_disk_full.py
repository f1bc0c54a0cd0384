"""A full disk on the embedded default: 507 `insufficient_storage`, never a 500, nothing half-written, and recovery.

The data folder is a small tmpfs of the test's own (root mounts one on these machines; the
tests skip elsewhere), filled by creates of 20 KB ciphertexts (files, above the inline size).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import requests

from telentir.errors import InsufficientStorage
from telentir.storage.blobs import FileBlobStore
from telentir.storage.db import SqliteDatabase
from telentir.storage.health import DISK, EngineHealth

from ..dataplane_support import orphan_files
from ..support import FIXED_MASTER_KEY, ServerProcess, assert_error, make_user, runtime_over, wait_until

OBJECT_BYTES = 20_000
METRICS_TOKEN = "disk-full-metrics-token"

# Real servers, a filling disk or outages of several seconds, on a loaded box: generous time.
pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.embedded_only("a full disk of the embedded default: the data folder is a small tmpfs"),
]


def _mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")


def _unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs (the data folder), unmounted at the end."""
    folder = tmp_path / "disk"
    _mount_tmpfs(folder, "24m")
    try:
        yield folder
    finally:
        _unmount(folder)


def _start(data_dir: Path, **env: str) -> ServerProcess:
    # The data folder is the mount itself: the server's log goes next to it, not onto the full disk.
    settings = {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, "TELENTIR_METRICS_TOKEN": METRICS_TOKEN, **env}
    return ServerProcess(data_dir, settings, workers=1, threads=8).start()


class Client:
    """One user's writes and reads, remembering what the server acknowledged."""

    def __init__(self, server: ServerProcess, api_key: str) -> None:
        self.server = server
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.key_id = self.call("PUT", "/keys", {"server": "default"}).json()
        self.acknowledged: dict[str, bytes] = {}  # object id -> ciphertext
        self.statuses: list[int] = []
        self.lock = threading.Lock()

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.session.request(method, self.server.url + "/api" + path, json=body, timeout=60)

    def create(self, size: int = OBJECT_BYTES) -> requests.Response:
        content = secrets.token_bytes(size)
        resp = self.call("PUT", "/objects", {"keyId": self.key_id, "content": content.hex(), "authTag": "ab" * 16})
        with self.lock:
            self.statuses.append(resp.status_code)
            if resp.status_code == 201:
                self.acknowledged[resp.json()["id"]] = content
        if resp.status_code not in (201, 507):
            raise AssertionError(f"create answered {resp.status_code}: {resp.text[:300]}")
        if resp.status_code == 507:
            assert_error(resp, 507, "insufficient_storage")
        return resp

    def fill(self, threads: int = 4, refusals: int = 20, limit: int = 3000) -> None:
        """Create concurrently until `refusals` creates were refused for want of space."""
        failures: list[BaseException] = []

        def run() -> None:
            try:
                while len(failures) == 0 and self.statuses.count(507) < refusals and len(self.statuses) < limit:
                    self.create()
            except BaseException as exc:
                failures.append(exc)

        workers = [threading.Thread(target=run) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert not failures, failures[0]
        assert self.statuses.count(507) >= refusals, f"the disk never filled: {len(self.statuses)} creates"

    def check_everything_readable(self) -> None:
        for object_id, content in self.acknowledged.items():
            resp = self.call("GET", f"/objects/{object_id}")
            assert resp.status_code == 200, (object_id, resp.status_code, resp.text[:200])
            assert bytes.fromhex(resp.json()["content"]) == content, object_id


def _tmp_files(folder: Path) -> list[str]:
    return [name for _, _, files in os.walk(folder) for name in files if name.endswith(".tmp")]


def _metric(server: ServerProcess, name: str) -> float:
    text = requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return sum(values)


def test_a_full_disk_answers_507_keeps_everything_acknowledged_and_recovers_after_deletes(small_disk: Path) -> None:
    server = _start(small_disk)
    try:
        with closing(runtime_over(small_disk)) as rt:
            client = Client(server, make_user(rt)["api_key"])
            client.fill()
            assert 500 not in client.statuses
            body = assert_error(client.create(), 507, "insufficient_storage")
            assert "space" in body["message"]

            # Full: /readyz says so, /healthz stays the liveness probe, reads still work.
            ready = requests.get(server.url + "/readyz", timeout=30)
            assert ready.status_code == 503, ready.text
            assert "disk" in ready.json()["unavailable"] and ready.json()["checks"]["disk"] is False
            assert requests.get(server.url + "/healthz", timeout=30).status_code == 200
            client.check_everything_readable()

            # Small (inline) creates go to the database and its WAL: 201 or 507, never a 500.
            for _ in range(100):
                client.create(size=200)
            assert set(client.statuses) <= {201, 507}

            # Nothing half-written: every file is named by a row, no temp file is left behind.
            assert orphan_files(rt) == set()
            assert _tmp_files(small_disk) == []
            referenced = {r["blob"] for r in rt.db.query("SELECT blob FROM objects WHERE blob IS NOT NULL")}
            assert len(referenced) == sum(1 for c in client.acknowledged.values() if len(c) == OBJECT_BYTES)
            logged = server.log().count("disk full:")
            assert logged == 1, server.log()[-3000:]
            assert _metric(server, "telentir_disk_full_total") >= client.statuses.count(507)

            # Make room: deletes work on a full disk, then creates resume by themselves.
            large = [oid for oid, content in client.acknowledged.items() if len(content) == OBJECT_BYTES]
            doomed = large[: len(large) // 2]
            for object_id in doomed:
                assert client.call("DELETE", f"/objects/{object_id}").status_code == 204
                del client.acknowledged[object_id]
            wait_until(lambda: requests.get(server.url + "/readyz", timeout=30).status_code == 200, timeout=15)
            for _ in range(20):
                assert client.create().status_code == 201

            # Everything acknowledged and not deleted is there, readable, and in the event log.
            client.check_everything_readable()
            user_id = rt.db.query_value("SELECT user_id FROM keys WHERE id = ?", (client.key_id,))
            rows = rt.db.query("SELECT payload FROM events WHERE type = 'object_created' AND user_id = ?", (user_id,))
            assert set(client.acknowledged) <= {json.loads(row["payload"])["id"] for row in rows}
            assert orphan_files(rt) == set()
    finally:
        server.stop()


def test_min_free_bytes_refuses_writes_early_while_reads_and_deletes_go_on(small_disk: Path) -> None:
    reserve = 12 * 1024 * 1024
    server = _start(small_disk, TELENTIR_MIN_FREE_BYTES=str(reserve))
    try:
        with closing(runtime_over(small_disk)) as rt:
            client = Client(server, make_user(rt)["api_key"])
            client.fill(threads=2, refusals=5)
            assert set(client.statuses) == {201, 507}
            stat = os.statvfs(small_disk)
            # Refused early: the disk never filled, and the reserve is intact but for the writes that
            # passed the check together (two clients).
            assert stat.f_bavail * stat.f_frsize > reserve - 1024 * 1024
            body = assert_error(client.create(), 507, "insufficient_storage")
            assert "kept free" in body["message"]
            assert requests.get(server.url + "/readyz", timeout=30).json()["unavailable"] == ["disk"]
            client.check_everything_readable()
            for object_id in list(client.acknowledged)[:120]:
                assert client.call("DELETE", f"/objects/{object_id}").status_code == 204
                del client.acknowledged[object_id]
            wait_until(lambda: client.create().status_code == 201, timeout=15, interval=0.5)
            client.check_everything_readable()
    finally:
        server.stop()


def test_sqlite_full_is_insufficient_storage_and_the_database_stays_whole(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    _mount_tmpfs(folder, "2m")
    try:
        db = SqliteDatabase(folder / "t.db")
        db.open_schema()
        kept = 0
        with pytest.raises(InsufficientStorage):
            for n in range(10_000):
                with db.atomic() as tx:
                    tx.execute(
                        "INSERT INTO limit_events (bucket, at, expires_at) VALUES (?, ?, ?)",
                        (f"{n}-" + "x" * 4000, n, n),
                    )
                kept += 1
        assert kept > 10
        assert db.query_value("SELECT count(*) FROM limit_events") == kept
        db.close()
    finally:
        _unmount(folder)


def test_a_ciphertext_file_that_does_not_fit_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    _mount_tmpfs(folder, "1m")
    try:
        refused: list[str] = []
        store = FileBlobStore(folder / "blobs", health=EngineHealth(refused.append))
        written = []
        with pytest.raises(InsufficientStorage) as info:
            for _ in range(1000):
                written.append(store.write(secrets.token_bytes(50_000)))
        assert info.value.status == 507 and info.value.code == "insufficient_storage"
        assert refused == [DISK] and store.health.is_away(DISK)
        assert _tmp_files(folder) == [] and sorted(store.list_names()) == sorted(written)
        with pytest.raises(InsufficientStorage):
            store.write_many([secrets.token_bytes(30_000) for _ in range(5)])
        assert sorted(store.list_names()) == sorted(written)  # all or none: the batch left nothing
        store.delete_many(written[:4])
        store.write(secrets.token_bytes(50_000))  # room again: writes resume
    finally:
        _unmount(folder)
