"""An inline object's object_created event: its ciphertext stored once, replayed as it always was (issue 25).

Since schema version 10 the event's payload holds `"content":null` and the bytes are the object
row's (events.object_n), copied into the event (events.content) before the row's content
changes or the row goes. Events written before keep the hex in their payload. A replay must
send the very text either way: the payload as written before version 10.
"""

from __future__ import annotations

import json
from typing import Any

from telentir.runtime import Runtime

from ..sse_client import must_open
from ..support import Api, ServerProcess

METADATA = {"name": "é ✓ \u2028", "n": 1.5, "big": 12345678901234567890, "tiny": 1e-300, "nested": {"content": None}}


def _old_payload(row: Any, content: bytes) -> str:
    """The object_created payload as servers before schema version 10 wrote it, hex content inside."""
    payload = {
        "id": row["id"],
        "user_id": row["user_id"],
        "metadata": json.loads(row["metadata"]),
        "key_id": row["key_id"],
        "related_object_id": row["related_id"],
        "content": content.hex(),
        "auth_tag": bytes(row["auth_tag"]).hex(),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }
    return json.dumps(payload, separators=(",", ":"))


def _create(api: Api, key_id: str, content: bytes, **extra: Any) -> tuple[str, bytes]:
    body = {"keyId": key_id, "content": content.hex(), "authTag": "cd" * 16, "metadata": METADATA, **extra}
    answer = api.put("/objects", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], content


def _expected(rt: Runtime, object_id: str, content: bytes) -> str:
    row = rt.db.query_one("SELECT * FROM objects WHERE id = ?", (object_id,))
    assert row is not None
    return _old_payload(row, content)


def _replayed(server: ServerProcess, credential: str, since: int, count: int) -> dict[str, str]:
    """object id → the data text of each of the next `count` object_created frames after `since`."""
    with must_open(server.url, "object_created", credential, params={"since": str(since)}) as stream:
        frames = [stream.next_event(timeout=5) for _ in range(count)]
    return {json.loads(frame.data or "")["id"]: frame.data or "" for frame in frames}


def _event(rt: Runtime, user_id: str, object_id: str) -> Any:
    rows = rt.db.query(
        "SELECT id, payload, object_n, content FROM events WHERE user_id = ? AND type = 'object_created'", (user_id,)
    )
    return next(r for r in rows if json.loads(r["payload"])["id"] == object_id)


def test_an_old_format_row_and_a_new_one_replay_the_same_text(new_live_user, live_rt, live_server):
    user, api = new_live_user()
    key_id = api.put("/keys", json={"server": "default"}).json()
    before = live_rt.db.query_one("SELECT COALESCE(MAX(id), 0) FROM events")[0]
    old_id, old_content = _create(api, key_id, bytes(range(256)) * 4)
    new_id, new_content = _create(api, key_id, b"\x00" * 1024)
    empty_id, _ = _create(api, key_id, b"")
    expected = {
        old_id: _expected(live_rt, old_id, old_content),
        new_id: _expected(live_rt, new_id, new_content),
        empty_id: _expected(live_rt, empty_id, b""),
    }
    # The new row: no ciphertext of its own, in the payload or beside it.
    new_row = _event(live_rt, user["id"], new_id)
    assert json.loads(new_row["payload"])["content"] is None and new_row["content"] is None
    assert new_row["object_n"] is not None and len(new_row["payload"]) < 600
    # The first event as a server before version 10 wrote it: hex in the payload, nothing beside.
    old_row = _event(live_rt, user["id"], old_id)
    with live_rt.db.atomic() as tx:
        tx.execute(
            "UPDATE events SET payload = ?, object_n = NULL, content = NULL WHERE id = ?",
            (expected[old_id], old_row["id"]),
        )
    assert _replayed(live_server, user["api_key"], before, 3) == expected


def test_the_creation_time_ciphertext_outlives_a_patch_and_a_delete(new_live_user, live_rt, live_server):
    user, api = new_live_user()
    key_id = api.put("/keys", json={"server": "default"}).json()
    before = live_rt.db.query_one("SELECT COALESCE(MAX(id), 0) FROM events")[0]
    patched, patched_content = _create(api, key_id, b"\x01" * 1024)
    to_file, to_file_content = _create(api, key_id, b"\x02" * 1024)
    parent, parent_content = _create(api, key_id, b"\x03" * 1024)
    child, child_content = _create(api, key_id, b"\x04" * 1024, relatedId=parent)
    renamed, renamed_content = _create(api, key_id, b"\x05" * 1024)
    expected = {
        object_id: _expected(live_rt, object_id, content)
        for object_id, content in [
            (patched, patched_content),
            (to_file, to_file_content),
            (parent, parent_content),
            (child, child_content),
            (renamed, renamed_content),
        ]
    }
    assert api.patch(f"/objects/{patched}", json={"content": "ee" * 1024, "authTag": "ff" * 16}).status_code == 200
    big = {"content": "ee" * 40_000, "authTag": "ff" * 16}  # over the inline limit: a file now
    assert api.patch(f"/objects/{to_file}", json=big).status_code == 200
    assert api.delete(f"/objects/{parent}", params={"cascade": "true"}).status_code == 204
    assert api.patch(f"/objects/{renamed}", json={"metadata": {"other": 1}}).status_code == 200
    assert _replayed(live_server, user["api_key"], before, 5) == expected
    # What changed keeps its bytes in the event; a metadata patch leaves them shared with the row.
    for object_id, content in [(patched, patched_content), (to_file, to_file_content), (child, child_content)]:
        row = _event(live_rt, user["id"], object_id)
        assert (bytes(row["content"]), row["object_n"]) == (content, None)
    shared = _event(live_rt, user["id"], renamed)
    assert shared["content"] is None and shared["object_n"] is not None
