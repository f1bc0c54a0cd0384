"""Counting events against limits in the database, so every worker process and every node sees the same counts.

A `Limit` allows `most` events of one bucket in a sliding window. `charge` checks the
limits and counts one event in each bucket in the same write transaction, and write
transactions run one at a time on both engines (SQLite's `BEGIN IMMEDIATE`, PostgreSQL's
advisory write lock, telentir/storage/db.py): the check and the increment are one atomic
step, so parallel requests on any worker or node cannot all pass the check. An event is
counted *before* its outcome is known (a password hash, a text sent) and may be forgiven
afterwards (`refund`), when it turns out not to count (a successful sign-in).

Past `most`, a limit either refuses until the oldest event leaves the window (a lockout:
texts per phone, sign-ups per address) or, when it has a `throttle`, lets one more event
through after a delay that doubles with every event past `most`, up to `throttle`
seconds (a slowdown that never shuts the owner of an account out, telentir/services/attempts.py).
Every refusal is a RateLimited (429 with Retry-After) and moves
`telentir_limit_refusals_total{limit}`, labelled with the limit's setting.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import RateLimited
from ..runtime import Runtime
from ..storage.db import Transaction

HOUR = 3600.0
# An IPv6 client usually holds a whole /64 (one per home or host): counting its addresses
# one by one would give it 2**64 fresh allowances.
IPV6_NETWORK_BITS = 64


@dataclass(frozen=True)
class Limit:
    """At most `most` events in `bucket` per `window` seconds; `name` is its setting (the refusal metric's label)."""

    bucket: str
    most: int
    window: float
    name: str
    throttle: float | None = None  # past `most`: a doubling delay up to this many seconds instead of a lockout


@dataclass(frozen=True)
class Charge:
    """The events one `charge` counted (their row ids), to be forgiven with `refund`."""

    ids: tuple[int, ...]


def charge(rt: Runtime, limits: Sequence[Limit]) -> Charge:
    """Count one event in every limit's bucket, or none at all: RateLimited if any limit is reached."""
    now = time.time()
    with rt.db.atomic() as tx:
        tx.execute("DELETE FROM limit_events WHERE expires_at <= ?", (now,))
        refused = _refusal(tx, limits, now)
        ids = () if refused is not None else tuple(_count(tx, limit, now) for limit in limits)
    if refused is not None:
        limit, wait = refused
        rt.metrics.limit_refused(limit.name)
        raise RateLimited(retry_after=math.ceil(wait))
    return Charge(ids)


def refund(rt: Runtime, counted: Charge) -> None:
    """Forget the events of a charge that turned out not to count."""
    with rt.db.atomic() as tx:
        for event_id in counted.ids:
            tx.execute("DELETE FROM limit_events WHERE id = ?", (event_id,))


def clear(rt: Runtime, bucket: str) -> None:
    """Forget every event of a bucket."""
    with rt.db.atomic() as tx:
        tx.execute("DELETE FROM limit_events WHERE bucket = ?", (bucket,))


def count(rt: Runtime, bucket: str) -> int:
    """How many events of a bucket are in their window now."""
    return int(
        rt.db.query_value(
            "SELECT COUNT(*) FROM limit_events WHERE bucket = ? AND expires_at > ?", (bucket, time.time())
        )
    )


def network_of(addr: str) -> str:
    """The client a per-address limit counts: an IPv4 address, or the /64 of an IPv6 one (anything else as given)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_NETWORK_BITS), strict=False))
    return str(ip)


def _count(tx: Transaction, limit: Limit, now: float) -> int:
    """Count one event in the limit's bucket; its row id."""
    return tx.insert(
        "INSERT INTO limit_events (bucket, at, expires_at) VALUES (?, ?, ?)", (limit.bucket, now, now + limit.window)
    )


def _refusal(tx: Transaction, limits: Sequence[Limit], now: float) -> tuple[Limit, float] | None:
    """The limit that refuses an event now for longest, with the seconds to wait; None if all allow it."""
    waits = [(limit, _wait(tx, limit, now)) for limit in limits]
    limit, wait = max(waits, key=lambda pair: pair[1], default=(None, 0.0))
    return None if limit is None or wait <= 0 else (limit, wait)


def _wait(tx: Transaction, limit: Limit, now: float) -> float:
    """Seconds until `limit` allows one more event (0 or less: now)."""
    row = tx.execute(
        "SELECT COUNT(*) AS n, MIN(expires_at) AS first_expiry, MAX(at) AS last "
        "FROM limit_events WHERE bucket = ? AND expires_at > ?",
        (limit.bucket, now),
    ).fetchone()
    if row["n"] < limit.most:
        return 0.0
    if limit.throttle is None:
        return float(row["first_expiry"]) - now
    doublings = min(int(row["n"]) - limit.most, 32)  # past 2**32 seconds, every throttle is at its ceiling
    delay = min(limit.throttle, 2.0**doublings)
    return float(row["last"]) + delay - now
