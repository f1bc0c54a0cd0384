"""The user's root: the custodial `default` server and the eight stores with their default keys."""

from __future__ import annotations

import json
from typing import Any

from .. import crypto
from ..ids import now_iso
from ..runtime import Runtime
from . import keyring, objects

STORES = (
    "contacts",
    "calls",
    "agents",
    "tasks",
    "conversational-pathways",
    "campaigns",
    "sms-messages",
    "performance-metrics",
)


def has_root(rt: Runtime, user_id: str) -> bool:
    """Whether the user's root exists (it is created whole, in one transaction)."""
    ready = rt.roots_ready
    if user_id in ready:
        return True
    if rt.db.query_one("SELECT 1 FROM stores WHERE user_id = ? LIMIT 1", (user_id,)) is None:
        return False
    ready.add(user_id)
    return True


def ensure_root(rt: Runtime, user_id: str) -> None:
    """Create the root on first use; concurrent first requests create exactly one."""
    if has_root(rt, user_id):
        return
    # The slow part (RSA keygen) happens outside the write lock; a loser discards its keypair.
    private_key = crypto.generate_rsa_key()
    public_key = private_key.public_key()
    sealed = rt.seal(
        crypto.private_key_to_b64(private_key).encode(), keyring.server_context(user_id, keyring.DEFAULT_SERVER)
    )
    material = [(store, crypto.new_aes_key(), crypto.new_iv()) for store in STORES]
    blobs = [_store_blob(rt, aes, iv, store) for store, aes, iv in material]
    with rt.db.atomic() as tx:
        if tx.execute("SELECT 1 FROM stores WHERE user_id = ? LIMIT 1", (user_id,)).fetchone():
            tx.after_commit(lambda: rt.blobs.delete_many(b[0] for b in blobs if b[0]))
            return
        tx.after_rollback(lambda: rt.blobs.delete_many(b[0] for b in blobs if b[0]))
        tx.execute(
            "INSERT INTO servers (user_id, name, mode, public_key, private_key_sealed, created_at) "
            "VALUES (?, ?, 'custodial', ?, ?, ?)",
            (user_id, keyring.DEFAULT_SERVER, crypto.public_key_to_b64(public_key), sealed, now_iso()),
        )
        for (store, aes, iv), (blob_id, ciphertext, tag) in zip(material, blobs, strict=True):
            key_id = keyring.insert_key(rt, tx, user_id, keyring.DEFAULT_SERVER, crypto.wrap_key(public_key, aes), iv)
            # Counted, never refused: a user at their quota still gets the root their data hangs from.
            object_id = objects.insert_object(
                rt, tx, user_id, key_id, blob_id, ciphertext, tag, None, "{}", enforce_quota=False
            )
            tx.execute(
                "INSERT INTO stores (user_id, name, object_id, default_key) VALUES (?, ?, ?, ?)",
                (user_id, store, object_id, key_id),
            )


_STORE_PLAINTEXT = {store: json.dumps({"name": store}).encode() for store in STORES}


def _store_blob(rt: Runtime, aes: bytes, iv: bytes, store: str) -> tuple[str | None, bytes, bytes]:
    ciphertext, tag = crypto.aes_gcm_encrypt(aes, iv, _STORE_PLAINTEXT[store])
    return objects.store_content(rt, ciphertext), ciphertext, tag


def root_document(rt: Runtime, user_id: str) -> dict[str, Any]:
    """`GET /api/root`: stores with default keys, and servers (the custodial private key included)."""
    ensure_root(rt, user_id)
    stores = {
        r["name"]: {"id": r["object_id"], "defaultKey": r["default_key"]}
        for r in rt.db.query("SELECT name, object_id, default_key FROM stores WHERE user_id = ?", (user_id,))
    }
    servers: dict[str, Any] = {}
    for row in rt.db.query("SELECT * FROM servers WHERE user_id = ? ORDER BY created_at, name", (user_id,)):
        entry: dict[str, Any] = {"publicKey": row["public_key"], "deprecated": bool(row["deprecated"])}
        if row["mode"] == "custodial":
            entry["privateKey"] = rt.unseal(
                row["private_key_sealed"], keyring.server_context(user_id, row["name"])
            ).decode()
        servers[row["name"]] = entry
    return {"stores": {name: stores[name] for name in STORES}, "servers": servers}


def store_object_ids(rt: Runtime, user_id: str) -> dict[str, str]:
    """Store name → store object id."""
    ensure_root(rt, user_id)
    return {
        r["name"]: r["object_id"]
        for r in rt.db.query("SELECT name, object_id FROM stores WHERE user_id = ?", (user_id,))
    }
