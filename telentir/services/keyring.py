"""Servers (whose public keys wrap store keys) and the store keys themselves (docs/protocol.md §2, §3)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from .. import crypto
from ..errors import BadRequest, Conflict, NotFound
from ..ids import is_id, new_id, now_iso
from ..runtime import Runtime
from ..storage.db import IntegrityError, Transaction, set_clause
from ..storage.rows import KeyRow, as_row
from ..wire import is_name, key_record
from . import audit, events, quotas

DEFAULT_SERVER = "default"
MODES = ("generate", "upload_public")
PATCHABLE_COLUMNS = frozenset({"metadata", "deprecated", "wrapped", "iv"})


# --- servers --------------------------------------------------------------------------


def server_context(user_id: str, name: str) -> str:
    """What a custodial private key is sealed to (so sealed keys cannot be swapped)."""
    return f"server:{user_id}:{name}"


def list_servers(rt: Runtime, user_id: str) -> list[dict[str, Any]]:
    """The servers the user registered with POST /servers."""
    rows = rt.db.query(
        "SELECT name, mode, public_key, deprecated, created_at FROM servers "
        "WHERE user_id = ? AND mode != 'custodial' ORDER BY created_at, name",
        (user_id,),
    )
    return [
        {
            "name": r["name"],
            "mode": r["mode"],
            "publicKey": r["public_key"],
            "deprecated": bool(r["deprecated"]),
            "created_at": r["created_at"],
        }
        for r in rows
    ]


def register_server(rt: Runtime, user_id: str, name: str, mode: Any, public_key: Any) -> dict[str, Any]:
    """Register a BYOK server: generate a keypair (private half returned once) or take a public key."""
    if mode not in MODES:
        raise BadRequest('mode must be "generate" or "upload_public".')
    if name == DEFAULT_SERVER or _is_platform_server(rt, name):
        raise Conflict(f"The server name {name!r} is reserved.", code="server_exists")
    if mode == "generate":
        _before_generating(rt, user_id, name)
    private_b64, public_b64 = _server_keys(mode, public_key)
    try:
        with rt.db.atomic() as tx:
            quotas.check_servers(rt, tx, user_id)  # again: another request may have registered one meanwhile
            tx.execute(
                "INSERT INTO servers (user_id, name, mode, public_key, created_at) VALUES (?, ?, ?, ?, ?)",
                (user_id, name, mode, public_b64, now_iso()),
            )
            audit.record(tx, user_id, "server_created", {"name": name, "mode": mode})
    except IntegrityError as exc:
        raise Conflict(f"You already have a server named {name!r}.", code="server_exists") from exc
    return {"name": name, "publicKey": public_b64, "privateKey": private_b64}


def _before_generating(rt: Runtime, user_id: str, name: str) -> None:
    """Refuse, before the costly key generation, what would be refused after it; then count the generation."""
    with rt.db.atomic() as tx:
        if tx.execute("SELECT 1 FROM servers WHERE user_id = ? AND name = ?", (user_id, name)).fetchone():
            raise Conflict(f"You already have a server named {name!r}.", code="server_exists")
        quotas.check_servers(rt, tx, user_id)
        quotas.count_generation(rt, tx, user_id)


def _server_keys(mode: str, public_key: Any) -> tuple[str | None, str]:
    if mode == "generate":
        key = crypto.generate_rsa_key()
        return crypto.private_key_to_b64(key), crypto.public_key_to_b64(key.public_key())
    if not isinstance(public_key, str) or not public_key:
        raise BadRequest("publicKey is required with mode upload_public (base64url SPKI DER).")
    try:
        # Re-encode so the stored form is canonical base64url whatever alphabet came in.
        return None, crypto.public_key_to_b64(crypto.load_public_key(public_key))
    except crypto.CryptoError as exc:
        raise BadRequest(f"publicKey: {exc}.") from exc


def set_server_deprecated(rt: Runtime, user_id: str, name: str, deprecated: bool) -> dict[str, Any]:
    """Mark a registered server deprecated (old keys stay readable; no new keys bind to it)."""
    if not is_name(name):  # never registered; and PostgreSQL cannot even compare text holding NUL
        raise NotFound("No such server.")
    with rt.db.atomic() as tx:
        changed = tx.execute(
            "UPDATE servers SET deprecated = ? WHERE user_id = ? AND name = ? AND mode != 'custodial'",
            (int(deprecated), user_id, name),
        ).rowcount
        if changed:
            audit.record(tx, user_id, "server_updated", {"name": name, "deprecated": deprecated})
    if not changed:
        raise NotFound("No such server.")
    return next(s for s in list_servers(rt, user_id) if s["name"] == name)


def _is_platform_server(rt: Runtime, name: str) -> bool:
    return rt.db.query_one("SELECT 1 FROM platform_servers WHERE name = ?", (name,)) is not None


def resolve_server(rt: Runtime, user_id: str, name: Any) -> rsa.RSAPublicKey:
    """The public key a new key binds to: the user's live server, else a platform server."""
    if not isinstance(name, str) or not name:
        raise BadRequest("server must name one of your servers or a platform server.")
    row = rt.db.query_one(
        "SELECT public_key, deprecated FROM servers WHERE user_id = ? AND name = ?", (user_id, name.lower())
    )
    if row is not None:
        if row["deprecated"]:
            raise Conflict(f"Server {name!r} is deprecated; bind new keys to another server.", code="server_deprecated")
        return crypto.load_public_key(row["public_key"])
    platform = rt.db.query_one("SELECT public_key FROM platform_servers WHERE name = ?", (name.lower(),))
    if platform is None:
        raise BadRequest(f"server {name!r} is not one of your servers or a platform server.")
    return crypto.load_public_key(platform["public_key"])


def wrapped_material(public_key: rsa.RSAPublicKey, key: bytes | None, iv: bytes | None) -> tuple[bytes, bytes]:
    """(wrapped key, iv): minted, wrapped from a raw AES key, or an already-wrapped key as given."""
    if key is None:
        return crypto.wrap_key(public_key, crypto.new_aes_key()), crypto.new_iv()
    assert iv is not None
    modulus_bytes = (public_key.key_size + 7) // 8
    if len(key) in crypto.AES_KEY_SIZES:
        return crypto.wrap_key(public_key, key), iv
    if len(key) == modulus_bytes:
        return key, iv
    raise BadRequest(
        f"key must be a raw AES key (16, 24 or 32 bytes) or a key wrapped for this server "
        f"({modulus_bytes} bytes), not {len(key)} bytes."
    )


def insert_key(
    rt: Runtime, tx: Transaction, user_id: str, server: str, wrapped: bytes, iv: bytes, metadata: str = "{}"
) -> str:
    """Insert a key row and its key_created event inside `tx`; returns the id."""
    key_id, now = new_id("key"), now_iso()
    tx.execute(
        "INSERT INTO keys (id, user_id, server, wrapped, iv, metadata, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (key_id, user_id, server, wrapped, iv, metadata, now, now),
    )
    events.append(rt, tx, "key_created", user_id, {"key_id": key_id, "user_id": user_id, "created_at": now}, now)
    return key_id


def create_key(
    rt: Runtime, user_id: str, server: Any, key: bytes | None, iv: bytes | None, metadata: str
) -> dict[str, Any]:
    """PUT/POST /keys: bind a minted, raw or pre-wrapped AES key to one server."""
    public_key = resolve_server(rt, user_id, server)
    wrapped, iv_bytes = wrapped_material(public_key, key, iv)
    with rt.db.atomic(user_id=user_id) as tx:
        key_id = insert_key(rt, tx, user_id, server.lower(), wrapped, iv_bytes, metadata)
    return get_key(rt, user_id, key_id)


def _key_row(rt: Runtime, user_id: str, key_id: str) -> KeyRow:
    row = (
        rt.db.query_one("SELECT * FROM keys WHERE id = ? AND user_id = ?", (key_id, user_id))
        if is_id(key_id, "key")
        else None
    )
    if row is None:
        raise NotFound("No such key.")
    return as_row(KeyRow, row)


def get_key(rt: Runtime, user_id: str, key_id: str) -> dict[str, Any]:
    """The caller's key record; 404 if absent or someone else's."""
    return key_record(_key_row(rt, user_id, key_id))


def get_keys(rt: Runtime, user_id: str, key_ids: list[str]) -> list[dict[str, Any]]:
    """The caller's key records among `key_ids` (well-formed, distinct), in the order asked; others are left out."""
    marks = ", ".join("?" * len(key_ids))
    rows = rt.db.query(
        f"SELECT * FROM keys WHERE user_id = ? AND id IN ({marks})",  # noqa: S608 (placeholders only)
        (user_id, *key_ids),
    )
    found = {row["id"]: row for row in rows}
    return [key_record(found[key_id]) for key_id in key_ids if key_id in found]


def update_key(rt: Runtime, user_id: str, key_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """PATCH /keys/{id}: metadata, deprecated, and/or key+iv (re-wrap for the same server)."""
    row = _key_row(rt, user_id, key_id)
    if "key" in changes:
        public_key = resolve_server(rt, user_id, row["server"])
        changes["wrapped"], changes["iv"] = wrapped_material(public_key, changes.pop("key"), changes["iv"])
    if changes:
        assignments = set_clause(changes, PATCHABLE_COLUMNS)
        with rt.db.atomic() as tx:
            tx.execute(
                # Columns checked by set_clause; values are bound parameters.
                f"UPDATE keys SET {assignments}, updated_at = :now WHERE id = :id AND user_id = :user_id",  # noqa: S608
                {**changes, "now": now_iso(), "id": key_id, "user_id": user_id},
            )
    return get_key(rt, user_id, key_id)


def delete_key(rt: Runtime, user_id: str, key_id: str) -> None:
    """DELETE /keys/{id}: the record goes, objects under it stay; a store's default key stays."""
    _key_row(rt, user_id, key_id)
    if rt.db.query_one("SELECT 1 FROM stores WHERE default_key = ?", (key_id,)):
        raise Conflict("A store's default key cannot be deleted.", code="default_key")
    now = now_iso()
    with rt.db.atomic(user_id=user_id) as tx:
        if tx.execute("DELETE FROM keys WHERE id = ? AND user_id = ?", (key_id, user_id)).rowcount:
            events.append(
                rt, tx, "key_deleted", user_id, {"key_id": key_id, "user_id": user_id, "deleted_at": now}, now
            )
            audit.record(tx, user_id, "key_deleted", {"keyId": key_id})
