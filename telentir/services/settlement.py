"""Settling lead jobs: charge what was used, refund the rest, exactly once, whoever does it.

A job is settled by the process holding its lease (`services/leases.py`): the one that ran
it, or, when that one died, a live process that claimed it once the lease expired. Settling
is one transaction conditional on still holding the lease, so it happens once; the process
that ran the job retries it while the storage refuses it (an engine away), so the job keeps
its own ending rather than being swept as `interrupted`. A Stripe refund is recorded as
`refund_pending` in that transaction and sent after it; a Stripe step that fails stays
pending and is retried (`retry_pending`) by whichever process claims it: with the step's
idempotency key while Stripe surely keeps it, and once the key may have expired, only after
looking the step up among the customer's balance transactions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from ..components.stripe_gateway import IDEMPOTENCY_HORIZON_SECONDS, StripeCallFailed, StripeGateway
from ..errors import EngineUnavailable, InsufficientStorage
from ..ids import now_iso
from ..runtime import Runtime
from ..storage.db import Transaction
from ..storage.rows import JobRow, as_row, as_row_or_none
from . import credits, job_states, leases
from .job_states import JobState, JobStatus, Settlement

log = logging.getLogger(__name__)

INTERRUPTED = "The server stopped while the job was running."
# A job's own process retries its settlement while the storage refuses it (`settle`'s patience,
# the job's lease: see ingest.run_job), every 0.25 s at first, then at most every 2 s.
_FIRST_RETRY_DELAY, _MAX_RETRY_DELAY = 0.25, 2.0
_RUNNING = JobStatus.RUNNING.value


@dataclass(frozen=True)
class Bill:
    """What a job owes once it ends: leads used (from the allowance, and paid), money charged and refunded."""

    used: int
    allowance_used: int
    charged: int
    refund: int


def is_billed(job: JobRow) -> bool:
    """Whether the job spends lead credits: decided when it started (TELENTIR_BILLED_PATHS then), kept in `billing`."""
    return bool(job["billing"] != "none")


def bill_of(job: JobRow) -> Bill:
    """Charge the leads written (allowance first), refund the rest of the reservation."""
    used = job["created"] if is_billed(job) else 0
    allowance_used = min(used, job["allowance_part"])
    charged = min(used - allowance_used, job["granted"] - job["allowance_part"]) * job["price"]
    return Bill(used, allowance_used, charged, job["reserved"] - charged)


# --- settling a job that ran ------------------------------------------------------------------


def settle(
    rt: Runtime,
    job_id: str,
    status: JobStatus,
    error: str | None,
    skipped: int = 0,
    *,
    refund_now: bool = True,
    patience: float = 0.0,
) -> bool:
    """Close a running job this process holds; False (and nothing done) if another process took it.

    `refund_now`: send a Stripe refund at once, holding the lease meanwhile; otherwise it is
    left pending, free for the refund thread of any process. `patience`: for how many seconds
    to retry the closing transaction while the storage refuses it (see `_close_patiently`).
    """
    gateway = credits.gateway(rt)
    refund_now = refund_now and gateway is not None
    pending = _close_patiently(rt, job_id, status, error, skipped, refund_now, patience)
    if pending is None:
        return False
    if pending and refund_now and gateway is not None:
        try:
            _finish_refund(rt, gateway, _job(rt, job_id))
        except StripeCallFailed as exc:
            _keep_pending(rt, job_id, exc)
        except (EngineUnavailable, InsufficientStorage) as exc:
            # The job is settled with its own ending; only the refund's record waits. It stays
            # pending, and retry_pending sends it again with the same idempotency key.
            log.warning("job %s is settled; its Stripe refund stays pending: %s", job_id, exc.message)
    return True


def _close_patiently(
    rt: Runtime, job_id: str, status: JobStatus, error: str | None, skipped: int, keep_lease: bool, patience: float
) -> bool | None:
    """Close the job, retrying with a bounded backoff while the storage refuses (an engine away, a full disk).

    The job's own process is alive and keeps heartbeating the job meanwhile (its caller holds
    it), so the job ends with the status and error it ran to once the storage is back, not
    `interrupted` by a sweep. It gives up, raising the refusal, once `patience` seconds are
    spent or when the process is stopping (a graceful stop waits for no engine): the job stays
    open and the lease sweep settles it as interrupted. Each attempt is the one conditional
    transaction of `_close_held`, so retrying never settles a job twice. None: not this
    process's job (any more).
    """
    deadline, delay, retried = time.monotonic() + patience, _FIRST_RETRY_DELAY, False
    while True:
        try:
            pending = _close_held(rt, job_id, status, error, skipped, keep_lease)
        except (EngineUnavailable, InsufficientStorage) as exc:
            if time.monotonic() + delay > deadline:
                raise
            if not retried:
                log.warning("settling job %s waits for the storage to be back: %s", job_id, exc.message)
            if rt.job_runner.stopping.wait(delay):  # stopping: a graceful stop waits for no engine
                raise
            retried, delay = True, min(2 * delay, _MAX_RETRY_DELAY)
            continue
        if pending is None and retried:  # a refused attempt may have committed after all
            return _closed_by_a_lost_answer(rt, job_id, status, error)
        if pending is None:
            log.warning("job %s was settled by another process: this one's lease had expired", job_id)
        return pending


def _close_held(
    rt: Runtime, job_id: str, status: JobStatus, error: str | None, skipped: int, keep_lease: bool
) -> bool | None:
    """Close the running job if this process still owns it (None if not): True when a Stripe refund is to be sent."""
    with rt.db.atomic() as tx:
        row = as_row_or_none(
            JobRow,
            rt.db.query_one(
                "SELECT * FROM jobs WHERE id = ? AND owner = ? AND status = ?",
                (job_id, rt.job_runner.owner, _RUNNING),
            ),
        )
        if row is None:
            return None
        return _close(rt, tx, row, status, error, skipped, keep_lease=keep_lease)


def _closed_by_a_lost_answer(rt: Runtime, job_id: str, status: JobStatus, error: str | None) -> bool | None:
    """After a refused attempt: whether that attempt committed after all (PostgreSQL's answer to COMMIT lost).

    It did if the job ended with this very status and error: a sweep ends it `interrupted`,
    which a retrying owner never writes (a stopping one does not retry). Then its after-commit
    work is done here: the metric, and the refund to send while its lease is still this
    process's (True). None: another process settled it.
    """
    job = _job(rt, job_id)
    if job["status"] != status.value or job["error"] != error:
        log.warning("job %s was settled by another process while this one waited for the storage", job_id)
        return None
    log.warning("job %s: a settlement reported as refused had committed", job_id)
    rt.metrics.job_settled(status, job["billing"], job["charged"], job["refunded"])
    return job["settlement"] == Settlement.REFUND_PENDING and job["owner"] == rt.job_runner.owner


def _close(
    rt: Runtime, tx: Transaction, job: JobRow, status: JobStatus, error: str | None, skipped: int, keep_lease: bool
) -> bool:
    """Write the job's final numbers and ledger rows; True when a Stripe refund is still to be sent."""
    bill, stripe = bill_of(job), job["billing"] == "stripe"
    refunded_now = 0 if stripe else bill.refund
    tx.after_commit(lambda: rt.metrics.job_settled(status, job["billing"], bill.charged, refunded_now))
    pending = stripe and bill.refund > 0
    if job["billing"] != "none":
        credits.ledger_row(
            tx, job["user_id"], job["id"], "charge", charged=bill.charged, source="stripe" if stripe else "local"
        )
    release_allowance(tx, job, job["allowance_part"] - bill.allowance_used)
    if bill.refund > 0 and not stripe:
        credits.ledger_row(tx, job["user_id"], job["id"], "refund", amount=bill.refund, source="local")
    keep = pending and keep_lease
    _moved(
        job_states.move(
            tx,
            job["id"],
            job_states.RUNNING,
            JobState(status, Settlement.REFUND_PENDING if pending else Settlement.SETTLED),
            held_by=job["owner"],
            error=error,
            skipped=job["skipped"] + skipped,
            used=bill.used,
            allowance_used=bill.allowance_used,
            charged=bill.charged,
            refunded=0 if stripe else bill.refund,
            finished_at=now_iso(),
            owner=job["owner"] if keep else None,
            heartbeat_at=time.time() if keep else None,
        ),
        job,
    )
    return pending


def _moved(moved: bool, job: JobRow) -> None:
    """A job read in this transaction, under the write lock, cannot have changed: if it did, write nothing."""
    if not moved:
        raise RuntimeError(f"job {job['id']} changed under this transaction; nothing of it is written")


def release_allowance(tx: Transaction, job: JobRow, leads: int) -> None:
    """Give `leads` of the job's month allowance back."""
    if leads > 0:
        credits.ledger_row(
            tx, job["user_id"], job["id"], "allowance_release", leads=-leads, month=job["created_at"][:7]
        )


# --- a Stripe reservation that did not complete --------------------------------------------


def mark_reserve_unknown(rt: Runtime, job_id: str, status: JobStatus, error: str) -> None:
    """Stripe may or may not have made the reservation: free the allowance, resolve the money later."""
    _end_reservation(rt, job_id, JobState(status, Settlement.RESERVE_UNKNOWN), error)


def mark_reserve_refused(rt: Runtime, job_id: str, error: str) -> None:
    """Stripe refused the reservation (nothing moved): the job fails with nothing reserved."""
    _end_reservation(rt, job_id, JobState(JobStatus.FAILED, Settlement.SETTLED), error)


def _end_reservation(rt: Runtime, job_id: str, after: JobState, error: str) -> None:
    with rt.db.atomic() as tx:
        job = as_row_or_none(
            JobRow,
            rt.db.query_one(
                "SELECT * FROM jobs WHERE id = ? AND owner = ? AND status = ?",
                (job_id, rt.job_runner.owner, JobStatus.RESERVING.value),
            ),
        )
        if job is None:
            return  # another process took the job over and resolves it
        release_allowance(tx, job, job["allowance_part"])
        unknown = after.settlement == Settlement.RESERVE_UNKNOWN
        moved = job_states.move(
            tx,
            job_id,
            job_states.RESERVING,
            after,
            held_by=job["owner"],
            reserved=job["reserved"] if unknown else 0,
            error=error,
            finished_at=now_iso(),
            owner=None,
            heartbeat_at=None,
        )
        _moved(moved, job)
        tx.after_commit(lambda: rt.metrics.job_settled(after.status, job["billing"], 0, 0))


# --- jobs whose owner went quiet ----------------------------------------------------------------


def sweep_expired(rt: Runtime, force: bool = False, refund_now: bool = False) -> int:
    """Claim and settle every reserving or running job whose lease expired; returns how many this process settled.

    `force` (start-up under the data-folder lock) takes every open job: no owner can be alive.
    """
    settled = 0
    for job_id in leases.expired_runs(rt, force):
        if not leases.claim_run(rt, job_id, force):
            continue  # another live process claimed it first
        rt.job_runner.hold(job_id)
        try:
            if _settle_orphan(rt, job_id, refund_now):
                settled += 1
        finally:
            rt.job_runner.drop(job_id)
    return settled


def _settle_orphan(rt: Runtime, job_id: str, refund_now: bool) -> bool:
    status = rt.db.query_value("SELECT status FROM jobs WHERE id = ?", (job_id,))
    log.warning("settling job %s: the process running it stopped heartbeating", job_id)
    if status == JobStatus.RESERVING:
        mark_reserve_unknown(
            rt, job_id, JobStatus.INTERRUPTED, "The server stopped while reserving credits with Stripe."
        )
        return True
    return settle(rt, job_id, JobStatus.INTERRUPTED, INTERRUPTED, refund_now=refund_now)


def recover(rt: Runtime) -> dict[str, int]:
    """At start-up, under the data-folder lock: settle every job a crash cut short, then the pending Stripe steps.

    With SQLite only this folder's server writes the database, and the lock proves no
    process of it is alive, so every open job is an orphan whatever its heartbeat. (A
    database shared by several machines must rely on the leases alone.)
    """
    interrupted = sweep_expired(rt, force=True, refund_now=True)
    return {"interrupted_jobs": interrupted, "stripe_steps_finished": retry_pending(rt, force=True)}


# --- pending Stripe steps -----------------------------------------------------------------------


def retry_pending(rt: Runtime, force: bool = False) -> int:
    """Finish the pending Stripe steps nobody works on (refunds, reservations of unknown fate); returns how many."""
    gateway = credits.gateway(rt)
    if gateway is None:
        return 0
    done, owner = 0, rt.job_runner.owner
    for job_id in leases.expired_steps(rt, force):
        if not leases.claim_step(rt, job_id, force):
            continue
        rt.job_runner.hold(job_id)
        try:
            _finish_step(rt, gateway, _job(rt, job_id))
            done += 1
        except StripeCallFailed as exc:
            _keep_pending(rt, job_id, exc)
        finally:
            with rt.db.atomic() as tx:
                leases.release(tx, job_id, owner)
            rt.job_runner.drop(job_id)
    return done


def _finish_step(rt: Runtime, gateway: StripeGateway, job: JobRow) -> None:
    if job["settlement"] == Settlement.RESERVE_UNKNOWN:
        job = _resolve_reservation(rt, gateway, job)
    if job["settlement"] == Settlement.REFUND_PENDING:
        _finish_refund(rt, gateway, job)


def _resolve_reservation(rt: Runtime, gateway: StripeGateway, job: JobRow) -> JobRow:
    """Find out whether the reservation happened; if it did, record it and make its refund pending."""
    job_id, customer = job["id"], _customer_of(job)
    if _within_horizon(job["created_at"]):
        # Re-issued with its key, the debit returns the original if it happened, or happens now;
        # either way the full amount is then credited back: the net effect is exactly zero.
        txn: str | None = gateway.debit(customer, job["reserved"], f"Lead credits reserved for {job_id}", job_id)
    else:
        txn = gateway.find_transaction(customer, job_id, "reserve", since=_epoch(job["created_at"]))
    unknown = _with_settlement(job, Settlement.RESERVE_UNKNOWN)
    with rt.db.atomic() as tx:
        if txn is None:  # past the horizon and not in Stripe: it never happened
            job_states.move(tx, job_id, unknown, _with_settlement(job, Settlement.SETTLED), reserved=0)
            return {**job, "reserved": 0, "settlement": Settlement.SETTLED}
        moved = job_states.move(tx, job_id, unknown, _with_settlement(job, Settlement.REFUND_PENDING))
        if moved:
            credits.ledger_row(
                tx, job["user_id"], job_id, "reserve", amount=-job["reserved"], source="stripe", external_id=txn
            )
            tx.after_commit(lambda: rt.metrics.lead_reserved("stripe", job["reserved"]))
    return {**job, "settlement": Settlement.REFUND_PENDING}


def _with_settlement(job: JobRow, settlement: Settlement) -> JobState:
    """The job's (ended) status with `settlement`: what a Stripe step expects, or leaves."""
    return JobState(JobStatus(job["status"]), settlement)


def _finish_refund(rt: Runtime, gateway: StripeGateway, job: JobRow) -> None:
    """Send (or find) the refund of a settled job, then record it once."""
    job_id, refund = job["id"], job["reserved"] - job["charged"]
    txn = _refund_transaction(gateway, job, refund)
    with rt.db.atomic() as tx:
        moved = job_states.move(
            tx,
            job_id,
            _with_settlement(job, Settlement.REFUND_PENDING),
            _with_settlement(job, Settlement.SETTLED),
            refunded=refund,
            owner=None,
            heartbeat_at=None,
        )
        if moved:
            credits.ledger_row(tx, job["user_id"], job_id, "refund", amount=refund, source="stripe", external_id=txn)
            tx.after_commit(lambda: rt.metrics.lead_refunded("stripe", refund))


def _refund_transaction(gateway: StripeGateway, job: JobRow, refund: int) -> str:
    job_id, customer, description = job["id"], _customer_of(job), f"Unused lead credits of {job['id']}"
    # The job's creation is the earliest its refund key can have been used (its finished_at may be
    # later than a first attempt: a restored job is settled again).
    if not _within_horizon(job["created_at"]):
        # The key may have expired: a resend could refund twice. Look for the refund first.
        found = gateway.find_transaction(customer, job_id, "refund", since=_epoch(job["created_at"]))
        if found is not None:
            log.warning("refund of job %s had reached Stripe (%s); recorded without resending", job_id, found)
            return found
    return gateway.credit(customer, refund, description, job_id)


def _keep_pending(rt: Runtime, job_id: str, exc: StripeCallFailed) -> None:
    """A Stripe step failed: leave it pending for a later retry, by any process."""
    with rt.db.atomic() as tx:
        leases.release(tx, job_id, rt.job_runner.owner)
    log.warning("Stripe step of job %s stays pending: %s", job_id, exc.message)


def _customer_of(job: JobRow) -> str:
    """The Stripe customer of a job with a Stripe step: every Stripe-billed job names one from its start."""
    if job["customer_id"] is None:
        raise RuntimeError(f"job {job['id']} has a Stripe step but no Stripe customer")
    return job["customer_id"]


def _job(rt: Runtime, job_id: str) -> JobRow:
    return as_row(JobRow, rt.db.query_row("SELECT * FROM jobs WHERE id = ?", (job_id,)))


def _epoch(iso_moment: str) -> float:
    return datetime.fromisoformat(iso_moment).timestamp()


def _within_horizon(iso_moment: str) -> bool:
    """Whether Stripe surely still keeps an idempotency key first used at `iso_moment`."""
    return time.time() - _epoch(iso_moment) < IDEMPOTENCY_HORIZON_SECONDS
