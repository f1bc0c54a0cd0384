"""Group commit under kill -9: writes acknowledged from a shared COMMIT survive, none half-written.

A child process runs several threads that create objects at once, so their transactions
share COMMITs (telentir/storage/group_commit.py). Each thread announces a create before it
starts ("begin") and after it returned ("ack"), one whole line at a time. The child is
SIGKILLed at several moments, start-up repair runs, and the data must hold every
acknowledged object exactly, at most each thread's one in-flight create, and no stray file.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from telentir.serving import prepare

from ..crash_support import CHILD_PRELUDE, run_and_kill
from ..support import config_over, runtime_over

pytestmark = pytest.mark.embedded_only("SQLite's group commit and local files under kill -9")

THREADS = 8

CHILD = CHILD_PRELUDE + textwrap.dedent("""
    def write(thread):
        rng = random.Random(int(sys.argv[2]) * 100 + thread)
        while True:
            content, tag = os.urandom(rng.randint(1, 8 * 1024)), os.urandom(16)
            say(op="begin", thread=thread, content=content.hex(), tag=tag.hex())
            record = objects.create_object(rt, user["id"], key, content, tag, store, "{}")
            say(op="ack", thread=thread, id=record["id"], commits=rt.db._group.commits)

    say(op="ready", user=user["id"])
    for thread in range(int(sys.argv[4])):
        threading.Thread(target=write, args=(thread,), daemon=True).start()
    threading.Event().wait()
""")


def _expected(lines: list[dict[str, Any]]) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str]]]:
    """Acknowledged objects (id → content hex, tag hex), and each thread's create in flight at the kill."""
    acked: dict[str, tuple[str, str]] = {}
    pending: dict[int, dict[str, Any]] = {}
    for line in lines:
        if line["op"] == "begin":
            pending[line["thread"]] = line
        elif line["op"] == "ack":
            begun = pending.pop(line["thread"])
            acked[line["id"]] = (begun["content"], begun["tag"])
    return acked, [(line["content"], line["tag"]) for line in pending.values()]


@pytest.mark.parametrize("delay,seed", [(0.1, 1), (0.3, 2), (0.6, 3), (1.0, 4)])
def test_killed_group_of_writers_leaves_every_acknowledged_create_and_no_stray_file(
    tmp_path: Path, delay: float, seed: int
) -> None:
    # Odd seeds keep every ciphertext in files (written before the shared transaction), even ones in rows.
    lines = run_and_kill(tmp_path, CHILD, [str(seed), str(0 if seed % 2 else 16384), str(THREADS)], delay)
    user_id = lines[0]["user"]
    acked, in_flight = _expected(lines[1:])
    acks = [line for line in lines if line["op"] == "ack"]
    if delay >= 0.3:
        assert len(acks) >= 20, "the writers were killed before they got going"
        assert acks[-1]["commits"] < len(acks), "no COMMIT was shared: the test proves nothing about grouping"

    prepare(config_over(tmp_path / "data"))
    rt = runtime_over(tmp_path / "data")
    try:
        store = rt.db.query_one("SELECT object_id FROM stores WHERE user_id = ? AND name = 'contacts'", (user_id,))[0]
        rows = rt.db.query("SELECT * FROM objects WHERE related_id = ?", (store,))
        found = {
            r["id"]: (
                (rt.blobs.read(r["blob"]) if r["blob"] else bytes(r["inline_content"])).hex(),
                bytes(r["auth_tag"]).hex(),
            )
            for r in rows
        }
        missing = set(acked) - set(found)
        assert not missing, f"{len(missing)} acknowledged creates lost"
        assert all(found[i] == acked[i] for i in acked), "an acknowledged object holds other bytes"
        extra = [found[i] for i in set(found) - set(acked)]
        assert len(extra) <= len(in_flight) and all(e in in_flight for e in extra), "an object nobody began"

        every_row = rt.db.query("SELECT blob FROM objects WHERE blob IS NOT NULL")
        referenced = {r["blob"] for r in every_row}
        on_disk = {p.name for p in rt.blobs.iter_files()}
        assert on_disk == referenced, f"stray or missing files: {sorted(on_disk ^ referenced)}"
    finally:
        rt.close()
