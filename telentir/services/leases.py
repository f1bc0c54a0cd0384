"""Job leases: which process works on a job, its heartbeat, and taking over when it goes quiet.

A job row names its `owner` (a process, `JobRunner.owner`) and the owner's last
`heartbeat_at` (Unix seconds). The owner's lease thread renews the heartbeat of every job
the process holds, every third of `TELENTIR_JOB_LEASE_SECONDS`. A job whose heartbeat is
older than the lease has lost its owner (the process died, or stopped answering); any live
process may claim it with one conditional UPDATE, which exactly one claimant wins (SQLite
serialises writers; PostgreSQL re-checks the WHERE clause of a row it waited for), and the
winner settles it. Everything here is plain SQL through the Database interface, so leases
work the same on a database shared by several machines.

Two kinds of open work carry a lease: a job that is reserving or running (`run`), and a
settled job whose Stripe step is pending (`step`: `refund_pending`, `reserve_unknown`).
"""

from __future__ import annotations

import math
import time

from ..runtime import Runtime
from ..storage.db import Transaction
from .job_states import OPEN_STATUSES, PENDING_STEPS, sql_in

# Written into the statements (as the `jobs_status` and `jobs_settlement` indexes are used).
_OPEN = sql_in(OPEN_STATUSES)
_PENDING = sql_in(PENDING_STEPS)


class LeaseLost(Exception):
    """Another process took over a job this process was still working on (its heartbeat came too late)."""


def cutoff(rt: Runtime, force: bool = False) -> float:
    """Heartbeats older than this have expired (`force`: every heartbeat, for start-up under the folder lock)."""
    return math.inf if force else time.time() - rt.config.job_lease_seconds


def heartbeat(rt: Runtime) -> int:
    """Renew the lease of every job this process holds; returns how many rows still named it."""
    held = rt.job_runner.held()
    if not held:
        return 0
    owner, now, renewed = rt.job_runner.owner, time.time(), 0
    with rt.db.atomic() as tx:
        for job_id in held:
            renewed += tx.execute(
                "UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND owner = ?", (now, job_id, owner)
            ).rowcount
    return renewed


def expired_runs(rt: Runtime, force: bool = False) -> list[str]:
    """Reserving or running jobs whose owner's lease has run out."""
    rows = rt.db.query(
        f"SELECT id FROM jobs WHERE status IN {_OPEN} "  # noqa: S608 (enum values only)
        "AND (owner IS NULL OR heartbeat_at IS NULL OR heartbeat_at < ?) ORDER BY created_at",
        (cutoff(rt, force),),
    )
    return [row["id"] for row in rows]


def expired_steps(rt: Runtime, force: bool = False) -> list[str]:
    """Jobs with a pending Stripe step that nobody works on now."""
    rows = rt.db.query(
        f"SELECT id FROM jobs WHERE settlement IN {_PENDING} "  # noqa: S608 (enum values only)
        "AND (owner IS NULL OR heartbeat_at IS NULL OR heartbeat_at < ?) ORDER BY created_at",
        (cutoff(rt, force),),
    )
    return [row["id"] for row in rows]


def claim_run(rt: Runtime, job_id: str, force: bool = False) -> bool:
    """Take over a reserving or running job whose lease expired; True for the one process that wins."""
    with rt.db.atomic() as tx:
        return (
            tx.execute(
                f"UPDATE jobs SET owner = ?, heartbeat_at = ? WHERE id = ? AND status IN {_OPEN} "  # noqa: S608
                "AND (owner IS NULL OR heartbeat_at IS NULL OR heartbeat_at < ?)",
                (rt.job_runner.owner, time.time(), job_id, cutoff(rt, force)),
            ).rowcount
            == 1
        )


def claim_step(rt: Runtime, job_id: str, force: bool = False) -> bool:
    """Take a pending Stripe step nobody works on; True for the one process that wins."""
    with rt.db.atomic() as tx:
        return (
            tx.execute(
                "UPDATE jobs SET owner = ?, heartbeat_at = ? WHERE id = ? "  # noqa: S608 (enum values only)
                f"AND settlement IN {_PENDING} "
                "AND (owner IS NULL OR heartbeat_at IS NULL OR heartbeat_at < ?)",
                (rt.job_runner.owner, time.time(), job_id, cutoff(rt, force)),
            ).rowcount
            == 1
        )


def release(tx: Transaction, job_id: str, owner: str) -> None:
    """Give up `owner`'s lease on a job (nobody works on it now; any process may take it)."""
    tx.execute("UPDATE jobs SET owner = NULL, heartbeat_at = NULL WHERE id = ? AND owner = ?", (job_id, owner))
