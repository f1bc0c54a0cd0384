"""Crash safety of object create / patch / delete (architecture: "A row never points at a missing file").

A child process loops over the object service, announcing each operation before it starts
("begin") and after it returned ("ack"), flushing each line. It is SIGKILLed at several
moments; start-up repair (`telentir.serving.prepare`) then runs, and the data must hold every
acknowledged change exactly, at most the one in-flight change, and no stray file.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from telentir.serving import prepare

from ..crash_support import CHILD_PRELUDE, run_and_kill
from ..support import config_over, runtime_over

pytestmark = pytest.mark.embedded_only("the order of SQLite rows and ciphertext files on local disk under kill -9")

CHILD = CHILD_PRELUDE + textwrap.dedent("""
    rng = random.Random(int(sys.argv[2]))

    say(op="ready", user=user["id"])
    live = []
    while True:
        choice = rng.random()
        content, tag = os.urandom(rng.randint(1, 16 * 1024)), os.urandom(16)
        if choice < 0.5 or len(live) < 3:
            say(op="begin", kind="create", content=content.hex(), tag=tag.hex())
            record = objects.create_object(rt, user["id"], key, content, tag, store, "{}")
            live.append(record["id"])
            say(op="ack", kind="create", id=record["id"])
        elif choice < 0.8:
            target = rng.choice(live)
            say(op="begin", kind="update", id=target, content=content.hex(), tag=tag.hex())
            objects.update_object(rt, user["id"], target, {"content": content, "auth_tag": tag})
            say(op="ack", kind="update", id=target)
        else:
            target = live.pop(rng.randrange(len(live)))
            say(op="begin", kind="delete", id=target)
            objects.delete_object(rt, user["id"], target, False)
            say(op="ack", kind="delete", id=target)
""")


def _content(rt: Any, row: Any) -> bytes:
    return rt.blobs.read(row["blob"]) if row["blob"] is not None else bytes(row["inline_content"])


def _expected(lines: list[dict[str, Any]]) -> tuple[dict[str, tuple[str, str]], dict[str, Any] | None]:
    """Acknowledged state: object id → (content hex, tag hex); and the operation in flight, if any."""
    state: dict[str, tuple[str, str]] = {}
    pending: dict[str, Any] | None = None
    for line in lines:
        if line["op"] == "begin":
            pending = line
        elif line["op"] == "ack":
            assert pending is not None and pending["kind"] == line["kind"]
            if line["kind"] == "create" or line["kind"] == "update":
                state[line["id"]] = (pending["content"], pending["tag"])
            else:
                del state[line["id"]]
            pending = None
    return state, pending


@pytest.mark.parametrize("delay,seed", [(0.0, 1), (0.05, 2), (0.15, 3), (0.3, 4), (0.6, 5)])
def test_killed_writer_leaves_every_acknowledged_change_and_no_stray_file(tmp_path, delay, seed):
    # Odd seeds keep every ciphertext in files (the file write order), even ones in rows.
    lines = run_and_kill(tmp_path, CHILD, [str(seed), str(0 if seed % 2 else 16384)], delay)
    user_id = lines[0]["user"]
    acked, in_flight = _expected(lines[1:])
    if delay >= 0.15:
        assert sum(line["op"] == "ack" for line in lines) >= 5, "the writer was killed before it got going"

    prepare(config_over(tmp_path / "data"))
    rt = runtime_over(tmp_path / "data")
    try:
        store = rt.db.query_one("SELECT object_id FROM stores WHERE user_id = ? AND name = 'contacts'", (user_id,))[0]
        rows = {r["id"]: r for r in rt.db.query("SELECT * FROM objects WHERE related_id = ?", (store,))}
        found = {i: (_content(rt, r).hex(), bytes(r["auth_tag"]).hex()) for i, r in rows.items()}
        _assert_matches(found, acked, in_flight)

        every_row = rt.db.query("SELECT blob FROM objects WHERE blob IS NOT NULL")
        referenced = {r["blob"] for r in every_row}
        assert all(rt.blobs.path_for(b).is_file() for b in referenced), "a row points at a missing file"
        on_disk = {p.name for p in rt.blobs.iter_files()}
        assert on_disk == referenced, f"stray files: {sorted(on_disk - referenced)}"
        assert len(referenced) == len(every_row)
    finally:
        rt.close()


def _assert_matches(
    found: dict[str, tuple[str, str]], acked: dict[str, tuple[str, str]], in_flight: dict[str, Any] | None
) -> None:
    expected = dict(acked)
    if in_flight is not None and in_flight["kind"] == "create":
        extra = set(found) - set(acked)
        assert len(extra) <= 1, extra  # the in-flight create may have committed before the kill
        for object_id in extra:
            expected[object_id] = (in_flight["content"], in_flight["tag"])
    if (
        in_flight is not None
        and in_flight["kind"] == "update"
        and found.get(in_flight["id"]) == (in_flight["content"], in_flight["tag"])
    ):
        expected[in_flight["id"]] = found[in_flight["id"]]
    if in_flight is not None and in_flight["kind"] == "delete" and in_flight["id"] not in found:
        expected.pop(in_flight["id"])
    assert set(found) == set(expected), (set(found) ^ set(expected), in_flight)
    for object_id, (content, tag) in expected.items():
        assert found[object_id] == (content, tag), (object_id, in_flight)
