"""An account's data as NDJSON lines, read page by page so memory stays flat however much there is.

One JSON object per line, `kind` first: `account` (GET /auth's profile and the root's stores),
`server` (the root's entry: the custodial private key included, so every key line can be
unwrapped), `key` (GET /keys/{id}), `object` (GET /objects/{id}, ciphertext included) and
`publication`. Each line carries the fields of the matching GET answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..runtime import Runtime
from ..storage.rows import ObjectRow, UserRow, as_row
from ..wire import key_record, object_record
from . import accounts, audit, keyring, ratelimit, roots

PAGE = 200


def start(rt: Runtime, user_id: str) -> None:
    """Count an export against TELENTIR_EXPORTS_PER_USER_PER_HOUR (RateLimited past it) and audit it."""
    most = rt.config.exports_per_user_per_hour
    ratelimit.charge(rt, [ratelimit.Limit(f"export:user:{user_id}", most, ratelimit.HOUR, "exports_per_user_per_hour")])
    audit.record_alone(rt, user_id, "account_exported")


def lines(rt: Runtime, user: UserRow) -> Iterator[bytes]:
    """Every line of the user's export, encoded, each ending in a newline."""
    for record in records(rt, user):
        yield json.dumps(record, separators=(",", ":")).encode() + b"\n"


def records(rt: Runtime, user: UserRow) -> Iterator[dict[str, Any]]:
    """The export's records, account first, then servers, keys, objects (oldest first) and publications."""
    user_id = user["id"]
    # Read, never made: exporting creates nothing (a user whose phone is unverified has no root yet).
    root = roots.root_document(rt, user_id) if roots.has_root(rt, user_id) else {"stores": {}, "servers": {}}
    yield {"kind": "account", **accounts.public_profile(user), "stores": root["stores"]}
    yield from _servers(rt, user_id, root["servers"])
    for row in _paged(rt, "SELECT * FROM keys WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?", user_id, "id", ""):
        yield {"kind": "key", **key_record(row)}
    for row in _paged(rt, "SELECT * FROM objects WHERE user_id = ? AND n > ? ORDER BY n LIMIT ?", user_id, "n", 0):
        record = _object(rt, as_row(ObjectRow, row))
        if record is not None:
            yield {"kind": "object", **record}
    for row in rt.db.query(
        "SELECT type, related_id, object_id, created_at FROM publications WHERE user_id = ? ORDER BY type, related_id",
        (user_id,),
    ):
        yield {"kind": "publication", **dict(row)}


def _servers(rt: Runtime, user_id: str, root_servers: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The root's servers (a user has a handful), with mode and date from GET /servers where registered."""
    registered = {s["name"]: s for s in keyring.list_servers(rt, user_id)}
    for name, entry in root_servers.items():
        yield {"kind": "server", "name": name, **registered.get(name, {"mode": "custodial"}), **entry}


def _paged(rt: Runtime, sql: str, user_id: str, cursor: str, start: Any) -> Iterator[Any]:
    """The rows of `sql` (taking user id, cursor and page size), PAGE at a time by the column `cursor`."""
    after = start
    while rows := rt.db.query(sql, (user_id, after, PAGE)):
        yield from rows
        after = rows[-1][cursor]


def _object(rt: Runtime, row: ObjectRow) -> dict[str, Any] | None:
    """GET /objects/{id}'s record; None for an object deleted (or rewritten) since its page was read."""
    if row["blob"] is None:
        return object_record(row, bytes(row["inline_content"] or b""))
    try:
        return object_record(row, rt.blobs.read(row["blob"]))
    except FileNotFoundError:
        return None
