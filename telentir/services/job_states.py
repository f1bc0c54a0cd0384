"""Every change of a job's `status` and `settlement`: the states, the moves allowed, the one writer.

A job's state is its pair (status, settlement):

    created ─┬─> (reserving, open) ─┬─> (running, open) ─> (succeeded | failed | cancelled | interrupted,
             │                      │                        settled | refund_pending)
             ├─> (running, open)    └─> (failed, settled) | (failed | interrupted, reserve_unknown)
             └─> (succeeded, settled)   nothing granted: done as written
    (…, reserve_unknown) ─> (…, settled | refund_pending)    the reservation resolved with Stripe
    (…, refund_pending)  ─> (…, settled)                     the refund sent

An ended status never changes again, and a settled job never moves at all: money is settled
once. `insert` writes a new job, `move` every later change; both refuse a move the table does
not hold (`IllegalMove`, a bug in the caller). `move` is a compare-and-set: its UPDATE applies
only while the row still holds the old value of what it changes (and, when given, the lease
owner), so of two processes racing to move a job exactly one wins. Who may move a job, and
when, is the leases' business (`services/leases.py`); the money moved with it, settlement's.
The stored values are the enums' strings, the same on the wire (`GET /api/connect/jobs/{id}`).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any, NamedTuple

from ..storage.db import Transaction, set_clause
from ..storage.rows import JobRow


class JobStatus(StrEnum):
    """Where a job's run is."""

    RESERVING = "reserving"  # holding credits with Stripe before the run
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # the client left
    INTERRUPTED = "interrupted"  # the server stopped, or the process running it died


class Settlement(StrEnum):
    """Where a job's money is."""

    OPEN = "open"  # the run goes on: credits reserved, nothing charged yet
    SETTLED = "settled"
    REFUND_PENDING = "refund_pending"  # charged; the Stripe refund of the rest is still to be sent
    RESERVE_UNKNOWN = "reserve_unknown"  # Stripe may or may not have made the reservation


class JobState(NamedTuple):
    """A job's (status, settlement)."""

    status: JobStatus
    settlement: Settlement


# The statuses of a job that runs (or reserves to run) and carries a run lease, in the order
# of the `jobs_open` index's condition, which SQL below repeats literally.
OPEN_STATUSES = (JobStatus.RUNNING, JobStatus.RESERVING)
ENDED_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED)
# Settlements with a Stripe step still to do: they carry a step lease.
PENDING_STEPS = (Settlement.REFUND_PENDING, Settlement.RESERVE_UNKNOWN)

RESERVING = JobState(JobStatus.RESERVING, Settlement.OPEN)
RUNNING = JobState(JobStatus.RUNNING, Settlement.OPEN)
# A Stripe reservation that did not complete: refused (nothing moved), or of unknown fate
# because Stripe did not answer (failed) or the process died meanwhile (interrupted).
_RESERVATION_UNKNOWN = (JobStatus.FAILED, JobStatus.INTERRUPTED)

# Where each state may go (None: a job not yet written).
ALLOWED: dict[JobState | None, frozenset[JobState]] = {
    None: frozenset({RESERVING, RUNNING, JobState(JobStatus.SUCCEEDED, Settlement.SETTLED)}),
    RESERVING: frozenset(
        {RUNNING, JobState(JobStatus.FAILED, Settlement.SETTLED)}
        | {JobState(s, Settlement.RESERVE_UNKNOWN) for s in _RESERVATION_UNKNOWN}
    ),
    RUNNING: frozenset(JobState(s, t) for s in ENDED_STATUSES for t in (Settlement.SETTLED, Settlement.REFUND_PENDING)),
    **{
        JobState(s, Settlement.RESERVE_UNKNOWN): frozenset(
            {JobState(s, Settlement.SETTLED), JobState(s, Settlement.REFUND_PENDING)}
        )
        for s in _RESERVATION_UNKNOWN
    },
    **{JobState(s, Settlement.REFUND_PENDING): frozenset({JobState(s, Settlement.SETTLED)}) for s in ENDED_STATUSES},
}

# The other columns a move may write with the state (names never come from clients).
_MOVED_WITH = frozenset(
    {
        "error",
        "skipped",
        "used",
        "allowance_used",
        "charged",
        "reserved",
        "refunded",
        "finished_at",
        "owner",
        "heartbeat_at",
    }
)

_INSERT = (
    "INSERT INTO jobs (id, user_id, status, repository, store_id, path, params, billing, customer_id, requested, "
    "granted, allowance_part, price, reserved, settlement, created_at, started_at, finished_at, owner, "
    "heartbeat_at) VALUES (:id, :user_id, :status, :repository, :store_id, :path, :params, :billing, "
    ":customer_id, :requested, :granted, :allowance_part, :price, :reserved, :settlement, :created_at, "
    ":started_at, :finished_at, :owner, :heartbeat_at)"
)


class IllegalMove(ValueError):
    """A change of a job's state that the table does not allow."""


def sql_in(values: Iterable[StrEnum]) -> str:
    """`('a', 'b')`: the values as an SQL list written in the statement (a partial index matches literals only)."""
    return "(" + ", ".join(f"'{value.value}'" for value in values) + ")"


def state_of(job: JobRow) -> JobState:
    """The job's state as stored."""
    return JobState(JobStatus(job["status"]), Settlement(job["settlement"]))


def check(before: JobState | None, after: JobState) -> None:
    """Refuse a move the table does not allow."""
    if after not in ALLOWED.get(before, frozenset()):
        raise IllegalMove(f"a job cannot go from {_name(before)} to {_name(after)}")


def insert(tx: Transaction, job: JobRow) -> None:
    """Write a new job in its first state."""
    check(None, state_of(job))
    tx.execute(_INSERT, job)


def move(
    tx: Transaction,
    job_id: str,
    before: JobState,
    after: JobState,
    *,
    held_by: str | None = None,
    **columns: Any,
) -> bool:
    """Move a job from `before` to `after` (writing `columns` with it); False if the row no longer holds `before`.

    Only what changes is written and compared: a job's status when it changes, its settlement
    when that changes; with `held_by`, only while that process holds the job's lease.
    """
    check(before, after)
    changes = dict(columns)
    guards = ["id = :job_id"]
    params: dict[str, Any] = {"job_id": job_id}
    for name, old, new in (
        ("status", before.status, after.status),
        ("settlement", before.settlement, after.settlement),
    ):
        if old != new:
            changes[name] = new.value
            guards.append(f"{name} = :was_{name}")
            params[f"was_{name}"] = old.value
    if held_by is not None:
        guards.append("owner = :held_by")
        params["held_by"] = held_by
    assignments = set_clause(changes, _MOVED_WITH | {"status", "settlement"})
    # Columns checked by set_clause; values are bound parameters.
    sql = f"UPDATE jobs SET {assignments} WHERE {' AND '.join(guards)}"  # noqa: S608
    return bool(tx.execute(sql, {**changes, **params}).rowcount == 1)


def _name(state: JobState | None) -> str:
    return "nothing" if state is None else f"({state.status.value}, {state.settlement.value})"
