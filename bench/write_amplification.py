"""Bytes on disk per object: N creates of 1 KiB through the app, then the SQLite file measured per table.

    python -m bench.write_amplification              # 5,000 objects: bytes per object, in all and per table
    python -m bench.write_amplification --json       # one JSON line {"objects", "bytes_per_object", "tables"}
    python -m bench.write_amplification --objects 50000

The app runs in-process (Flask's test client, as bench/inprocess.py), over a fresh data folder
on the embedded SQLite engine. The file is measured twice, once the user, key and root exist
and once the objects are in, each time after `PRAGMA wal_checkpoint(TRUNCATE)` so every page
is in the main file; the difference, divided by N, is what one object costs on disk. Per
table it counts the pages of the table and of its indexes (SQLite's `dbstat`), so the event
log's share and the objects' share show apart. Like bench/inprocess.py it uses only
`create_app` and the services, so the same file measures an older checkout
(`cd old && python /path/to/bench/write_amplification.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, os.getcwd())  # the checkout being measured, when run as a script from it

from telentir import close_app, create_app
from telentir.services import accounts, credentials, keyring, roots

MASTER_KEY = "11" * 32
OBJECT_BYTES = 1024
GOAL_BYTES = 3 * 1024  # issue 25: at most 3 KB on disk per 1 KiB object


def main(argv: list[str] | None = None) -> int:
    """Create the objects, then print bytes per object (in all and per table) or one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=5000, help="objects of 1 KiB to create")
    parser.add_argument("--json", action="store_true", help='print one JSON line {"objects", "bytes_per_object", …}')
    args = parser.parse_args(argv)
    if args.objects < 1:
        parser.error("--objects must be at least 1")
    with tempfile.TemporaryDirectory() as folder:
        figures = measure(Path(folder) / "data", args.objects)
    if args.json:
        print(json.dumps(figures))
    else:
        _print(figures)
    return 0


def measure(data_dir: Path, count: int) -> dict[str, Any]:
    """Create `count` objects in a new data folder; bytes per object, in all and per table (indexes included)."""
    app = create_app({"data_dir": str(data_dir), "master_key": MASTER_KEY, "log_level": "WARNING"})
    try:
        rt = app.extensions["telentir"]
        path = Path(rt.db.path)
        create = _creator(app)
        before = _sizes(path)
        for _ in range(count):
            create()
    finally:
        close_app(app)
    after = _sizes(path)
    tables = {name: (after[name] - before.get(name, 0)) / count for name in sorted(after) if name != "*"}
    return {
        "objects": count,
        "object_bytes": OBJECT_BYTES,
        "bytes_per_object": round((after["*"] - before["*"]) / count, 1),
        "tables": {name: round(value, 1) for name, value in tables.items() if value},
    }


def _creator(app: Any) -> Any:
    """A callable creating one 1 KiB object as a fresh user with a key and a root, over HTTP in-process."""
    rt = app.extensions["telentir"]
    user = accounts.create_user(rt, "bench@example.com", "+15555550100", verified=True)
    headers = {"Authorization": f"Bearer {credentials.create_api_key(rt, user['id'], 'bench')['key']}"}
    roots.ensure_root(rt, user["id"])
    key = keyring.create_key(rt, user["id"], "default", None, None, "{}")
    client = app.test_client()
    body = {"keyId": key["id"], "content": "ab" * OBJECT_BYTES, "authTag": "cd" * 16}

    def create() -> None:
        answer = client.put("/api/objects", json=body, headers=headers)
        assert answer.status_code == 201, answer.data

    return create


def _sizes(path: Path) -> dict[str, int]:
    """Bytes of each table with its indexes, and of the whole file ("*"), once the WAL is checkpointed."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
        rows = conn.execute(
            "SELECT COALESCE(m.tbl_name, s.name), SUM(s.pgsize) FROM dbstat AS s "
            "LEFT JOIN sqlite_master AS m ON m.name = s.name GROUP BY 1"
        ).fetchall()
    finally:
        conn.close()
    return {"*": pages, **{str(name): int(size) for name, size in rows}}


def _print(figures: dict[str, Any]) -> None:
    per_object = figures["bytes_per_object"]
    verdict = "within" if per_object <= GOAL_BYTES else "over"
    print(f"{figures['objects']} objects of {figures['object_bytes']} B: {per_object:,.0f} B on disk per object")
    print(f"  ({verdict} the goal of {GOAL_BYTES:,} B)")
    for name, value in sorted(figures["tables"].items(), key=lambda item: -item[1]):
        print(f"  {name:24} {value:9,.1f} B per object")


if __name__ == "__main__":
    sys.exit(main())
