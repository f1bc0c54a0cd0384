"""Failed-attempt rate limiting kept in SQLite, so every worker process sees the same counts."""
from __future__ import annotations

import time

from ..errors import RateLimited
from ..runtime import Runtime


def check(rt: Runtime, buckets: list[str]) -> None:
    """Raise RateLimited when any bucket has used up its failures in the current window."""
    window, limit = rt.config.auth_window_seconds, rt.config.auth_max_attempts
    since = time.time() - window
    for bucket in buckets:
        row = rt.db.query_one("SELECT COUNT(*) AS n, MIN(at) AS first FROM auth_failures "
                              "WHERE bucket = ? AND at > ?", (bucket, since))
        if row["n"] >= limit:
            raise RateLimited(retry_after=int(row["first"] + window - time.time()) + 1)


def record_failure(rt: Runtime, buckets: list[str]) -> None:
    """Count one failure against each bucket (and forget failures older than the window)."""
    now = time.time()
    with rt.db.atomic() as tx:
        tx.execute("DELETE FROM auth_failures WHERE at < ?", (now - rt.config.auth_window_seconds,))
        for bucket in buckets:
            tx.execute("INSERT INTO auth_failures (bucket, at) VALUES (?, ?)", (bucket, now))


def clear(rt: Runtime, bucket: str) -> None:
    """Forget a bucket's failures (after a success on that account)."""
    with rt.db.atomic() as tx:
        tx.execute("DELETE FROM auth_failures WHERE bucket = ?", (bucket,))
