"""The platform's own servers: the current keypair and the public `GET /api/server` view."""

from __future__ import annotations

from typing import Any

from .. import crypto
from ..config import ConfigError
from ..ids import now_iso
from ..runtime import PlatformKey, Runtime
from ..storage.db import Database


def secret_context(name: str) -> str:
    """What a platform server's private key is sealed to."""
    return f"platform:{name}"


def _context(name: str) -> bytes:
    return secret_context(name).encode()


def ensure_platform_key(db: Database, master_key: bytes, name: str) -> PlatformKey:
    """Load the platform server `name`, generating and sealing its keypair on first start."""
    row = db.query_one("SELECT * FROM platform_servers WHERE name = ?", (name,))
    if row is None or row["private_key_sealed"] is None:
        key = crypto.generate_rsa_key()
        sealed = crypto.seal(master_key, crypto.private_key_to_b64(key).encode(), _context(name))
        with db.atomic() as tx:
            # INSERT OR IGNORE: another worker starting at the same moment may have won.
            tx.execute(
                "INSERT OR IGNORE INTO platform_servers (name, public_key, private_key_sealed, created_at) "
                "VALUES (?, ?, ?, ?)",
                (name, crypto.public_key_to_b64(key.public_key()), sealed, now_iso()),
            )
        row = db.query_row("SELECT * FROM platform_servers WHERE name = ?", (name,))
    if row["private_key_sealed"] is None:
        raise RuntimeError(f"platform server {name!r} is registered without a private key on this host")
    try:
        private_b64 = crypto.unseal(master_key, row["private_key_sealed"], _context(name))
    except crypto.CryptoError as exc:
        raise ConfigError(
            "the master key does not open this data folder's platform key: start with the "
            "TELENTIR_MASTER_KEY (or master key file) the data was created with"
        ) from exc
    private = crypto.load_private_key(private_b64.decode())
    return PlatformKey(name=name, private_key=private, public_b64=row["public_key"])


def holds_sealed_secrets(db: Database) -> bool:
    """Whether the database holds private keys sealed with a master key (platform or custodial)."""
    tables = db.query_value(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('platform_servers', 'servers')"
    )
    if tables < 2:
        return False  # a new, still empty database file
    return bool(
        db.query_value(
            "SELECT EXISTS (SELECT 1 FROM platform_servers WHERE private_key_sealed IS NOT NULL) "
            "OR EXISTS (SELECT 1 FROM servers WHERE private_key_sealed IS NOT NULL)"
        )
    )


def server_document(rt: Runtime) -> dict[str, Any]:
    """`GET /api/server`: the current platform server and every platform public key."""
    if rt.server_document is None:
        # Platform servers change only across restarts, so this is built once per process.
        rt.server_document = _build_server_document(rt)
    return rt.server_document


def _build_server_document(rt: Runtime) -> dict[str, Any]:
    keys = {}
    for row in rt.db.query("SELECT name, public_key FROM platform_servers ORDER BY name"):
        public = crypto.load_public_key(row["public_key"])
        keys[row["name"]] = {
            "application/pkix-spki": row["public_key"],
            "application/jwk+json": crypto.public_jwk(public),
        }
    return {"current": rt.platform.name, "keys": keys}
