"""Failed-attempt rate limiting kept in SQLite, so every worker process sees the same counts.

An attempt is counted *before* its outcome is known, in the same transaction as the check
(`charge`), and forgiven afterwards if it succeeded (`refund`). Checking first and counting
only after a slow password hash would let many parallel requests all pass the check.
"""

from __future__ import annotations

import time

from ..errors import RateLimited
from ..runtime import Runtime
from ..storage.db import Transaction

Attempt = tuple[str, float]  # (bucket, at): the table has no key of its own (and no rowid on PostgreSQL)


def charge(rt: Runtime, buckets: list[str]) -> list[Attempt]:
    """Raise RateLimited if any bucket is used up, else count one attempt in each; returns them."""
    now = time.time()
    with rt.db.atomic() as tx:
        tx.execute("DELETE FROM auth_failures WHERE at < ?", (now - rt.config.auth_window_seconds,))
        _check(rt, tx, buckets, now)
        for bucket in buckets:
            tx.execute("INSERT INTO auth_failures (bucket, at) VALUES (?, ?)", (bucket, now))
    return [(bucket, now) for bucket in buckets]


def refund(rt: Runtime, attempts: list[Attempt]) -> None:
    """Forget attempts that turned out to be successes."""
    with rt.db.atomic() as tx:
        for bucket, at in attempts:
            # Another failure on the same bucket in the same microsecond goes too: at worst one
            # failure less is counted, never one more.
            tx.execute("DELETE FROM auth_failures WHERE bucket = ? AND at = ?", (bucket, at))


def _check(rt: Runtime, tx: Transaction, buckets: list[str], now: float) -> None:
    window, limit = rt.config.auth_window_seconds, rt.config.auth_max_attempts
    for bucket in buckets:
        row = tx.execute(
            "SELECT COUNT(*) AS n, MIN(at) AS first FROM auth_failures WHERE bucket = ? AND at > ?",
            (bucket, now - window),
        ).fetchone()
        if row["n"] >= limit:
            raise RateLimited(retry_after=int(row["first"] + window - now) + 1)


def clear(rt: Runtime, bucket: str) -> None:
    """Forget a bucket's failures (after a success on that account)."""
    with rt.db.atomic() as tx:
        tx.execute("DELETE FROM auth_failures WHERE bucket = ?", (bucket,))
