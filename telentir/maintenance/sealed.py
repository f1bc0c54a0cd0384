"""Every secret this server seals at rest under the master key, and where each one lives."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from ..services.keyring import server_context
from ..services.platform import secret_context
from ..services.twofactor import totp_context


@dataclass(frozen=True)
class SealedSecret:
    """One sealed value: its table, its row's key, the context it is bound to, and the bytes."""

    table: str
    where: dict[str, str]
    context: str
    sealed: bytes

    @property
    def label(self) -> str:
        """A person-readable name for reports."""
        if self.table == "platform_servers":
            return f"platform server {self.where['name']!r}"
        if self.table == "users":
            return f"user {self.where['id']} (TOTP secret)"
        return f"server {self.where['name']!r} of {self.where['user_id']}"


def sealed_secrets(conn: sqlite3.Connection) -> Iterator[SealedSecret]:
    """The platform servers' private keys, the users' custodial private keys and their TOTP secrets."""
    for name, sealed in conn.execute(
        "SELECT name, private_key_sealed FROM platform_servers WHERE private_key_sealed IS NOT NULL ORDER BY name"
    ):
        yield SealedSecret("platform_servers", {"name": name}, secret_context(name), sealed)
    for user_id, name, sealed in conn.execute(
        "SELECT user_id, name, private_key_sealed FROM servers WHERE private_key_sealed IS NOT NULL "
        "ORDER BY user_id, name"
    ):
        yield SealedSecret("servers", {"user_id": user_id, "name": name}, server_context(user_id, name), sealed)
    for user_id, sealed in conn.execute(
        "SELECT id, totp_secret_sealed FROM users WHERE totp_secret_sealed IS NOT NULL ORDER BY id"
    ):
        yield SealedSecret("users", {"id": user_id}, totp_context(user_id), sealed)


def count_sealed(conn: sqlite3.Connection) -> int:
    """How many secrets `sealed_secrets` yields."""
    platform = conn.execute("SELECT COUNT(*) FROM platform_servers WHERE private_key_sealed IS NOT NULL").fetchone()
    servers = conn.execute("SELECT COUNT(*) FROM servers WHERE private_key_sealed IS NOT NULL").fetchone()
    totp = conn.execute("SELECT COUNT(*) FROM users WHERE totp_secret_sealed IS NOT NULL").fetchone()
    return int(platform[0]) + int(servers[0]) + int(totp[0])


def reseal(conn: sqlite3.Connection, secret: SealedSecret, sealed: bytes) -> None:
    """Store `sealed` in place of `secret` (the caller holds the transaction)."""
    if secret.table == "platform_servers":
        conn.execute(
            "UPDATE platform_servers SET private_key_sealed = ? WHERE name = ?", (sealed, secret.where["name"])
        )
    elif secret.table == "users":
        conn.execute("UPDATE users SET totp_secret_sealed = ? WHERE id = ?", (sealed, secret.where["id"]))
    else:
        conn.execute(
            "UPDATE servers SET private_key_sealed = ? WHERE user_id = ? AND name = ?",
            (sealed, secret.where["user_id"], secret.where["name"]),
        )
