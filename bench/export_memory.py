"""The memory GET /account/export takes: RSS growth while streaming the export of 100,000 objects.

    python -m bench.export_memory                 # 100,000 objects of 1 KiB
    python -m bench.export_memory --objects 20000 --json

The objects are written straight into the database in one transaction (their ciphertext in
the row, as small ones are kept), then the export is read through Flask's test client without
buffering, line by line, as a client reading the socket would. RSS (VmRSS) is sampled every
thousand lines; the figure is the peak minus RSS just before the request. The export reads
page by page, so the growth should not depend on the number of objects (target: < 50 MiB).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.getcwd())  # the checkout being measured, when run as a script from it

from telentir import close_app, create_app
from telentir.ids import new_id, now_iso
from telentir.services import accounts, credentials, keyring, roots

MASTER_KEY = "11" * 32
CONTENT_BYTES = 1024
SAMPLE_EVERY = 1000
MIB = 1024 * 1024
FILL_BATCH = 1000


def rss_bytes() -> int:
    """This process's resident set size now (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    """Fill an account, stream its export, print the RSS growth (MiB) and the time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000, help="objects in the account")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        app = create_app({"data_dir": str(Path(folder) / "data"), "master_key": MASTER_KEY, "log_level": "WARNING"})
        try:
            result = _measure(app, args.objects)
        finally:
            close_app(app)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['lines']} lines, {result['bytes'] / MIB:.0f} MiB of NDJSON in {result['seconds']:.1f} s; "
            f"RSS growth {result['rss_growth_mib']:.1f} MiB (before {result['rss_before_mib']:.0f} MiB)"
        )
    return 0


def _measure(app: Any, count: int) -> dict[str, Any]:
    rt = app.extensions["telentir"]
    user = accounts.create_user(rt, "export@example.com", "+15555550100", verified=True)
    headers = {"Authorization": f"Bearer {credentials.create_api_key(rt, user['id'], 'bench')['key']}"}
    roots.ensure_root(rt, user["id"])
    key = keyring.create_key(rt, user["id"], "default", None, None, "{}")
    _fill(rt, user["id"], key["id"], count)
    client = app.test_client()
    gc.collect()
    before = peak = rss_bytes()
    started = time.perf_counter()
    answer = client.get("/api/account/export", headers=headers, buffered=False)
    assert answer.status_code == 200, answer.data
    lines = size = 0
    for chunk in answer.response:
        lines += chunk.count(b"\n")
        size += len(chunk)
        if lines % SAMPLE_EVERY == 0:
            peak = max(peak, rss_bytes())
    answer.close()
    peak = max(peak, rss_bytes())
    assert lines >= count, f"{lines} lines for {count} objects"
    return {
        "objects": count,
        "lines": lines,
        "bytes": size,
        "seconds": round(time.perf_counter() - started, 2),
        "rss_before_mib": round(before / MIB, 1),
        "rss_growth_mib": round((peak - before) / MIB, 1),
    }


def _fill(rt: Any, user_id: str, key_id: str, count: int) -> None:
    """`count` objects of CONTENT_BYTES under the key, inline, in one transaction (fast).

    Made a batch at a time: a list of every row would leave memory behind in the allocator
    that the export could then reuse unseen, hiding part of its growth.
    """
    now = now_iso()
    content, tag = os.urandom(CONTENT_BYTES), os.urandom(16)
    with rt.db.atomic() as tx:
        for start in range(0, count, FILL_BATCH):
            rows = [
                (new_id("obj"), user_id, key_id, content, CONTENT_BYTES, tag, now, now)
                for _ in range(min(FILL_BATCH, count - start))
            ]
            tx.execute_many(
                "INSERT INTO objects (id, user_id, key_id, inline_content, size, auth_tag, metadata, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, '{}', ?, ?)",
                rows,
            )


if __name__ == "__main__":
    sys.exit(main())
