"""Connector ingestion (POST /api/connect): stream records from the scraper into a store.

A job: validate → reserve credits (ledger; Stripe when configured) → job row → thread pool:
read SSE frames, encrypt each record under a fresh key wrapped for the user's `default`
server, commit in batches (`services/record_writer.py`; each batch also moves the job's
`created` counter, so the summary never claims a record that is not stored) → settle: charge
what was used, refund the rest (`services/settlement.py`). Every change of the job's status
and settlement goes through `services/job_states.py`. The process running a job holds its lease (`services/leases.py`):
if it dies, another live process settles the job once the lease expires, and a batch
committed after that is refused, so a job never writes more records than it was settled for.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3

from ..components.stripe_gateway import StripeCallFailed
from ..errors import BadRequest, EngineUnavailable, InsufficientStorage, NotFound, RateLimited, ServiceUnavailable
from ..ids import is_id, new_id, now_iso
from ..money import MAX_LEADS_PER_JOB
from ..runtime import Runtime
from ..scraper import FrameTooLarge, check_path, scraper_url, stream_frames
from ..storage.rows import JobRow, UserRow, as_row_or_none
from ..wire import is_plain_path
from . import credits, job_states, quotas, roots, settlement
from .job_states import JobStatus, Settlement
from .leases import LeaseLost
from .record_writer import RecordWriter

log = logging.getLogger(__name__)

_OPEN = job_states.sql_in(job_states.OPEN_STATUSES)


# --- validation and start ---------------------------------------------------------------


@dataclass(frozen=True)
class ConnectRequest:
    """A validated POST /api/connect body."""

    repository: str
    path: str
    params: dict[str, Any]
    billed: bool  # the path spends lead credits (TELENTIR_BILLED_PATHS)


def parse_request(rt: Runtime, body: dict[str, Any]) -> ConnectRequest:
    """Check repository, path and params; 400 naming the field otherwise."""
    repository = body.get("repository")
    if repository not in roots.STORES:
        raise BadRequest(f"repository must be one of {', '.join(roots.STORES)}.")
    path, billed = _resolve_path(rt, body.get("path"))
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise BadRequest("params must be a JSON object.")
    if len(json.dumps(params).encode()) > rt.config.connect_max_params_bytes:
        raise BadRequest(f"params must be at most {rt.config.connect_max_params_bytes} bytes as JSON.")
    return ConnectRequest(repository, path, params, billed)


def _resolve_path(rt: Runtime, raw: Any) -> tuple[str, bool]:
    """The path as the scraper will be called (the configured spelling) and whether it is billed; 400 otherwise.

    Compared without case: a scraper router that ignores case would serve `/GET-LEADS` unbilled.
    """
    if not is_plain_path(raw):
        rt.metrics.limit_refused("connect_path")
    path = check_path(raw)
    billed = _spelled_as(path, rt.config.billed_paths)
    allowed = rt.config.connect_paths
    if allowed is not None and _spelled_as(path, allowed) is None:
        rt.metrics.limit_refused("connect_paths")
        raise BadRequest(f"path must be one of {', '.join(allowed)} on this server.")
    return billed or _spelled_as(path, allowed or ()) or path, billed is not None


def _spelled_as(path: str, paths: tuple[str, ...]) -> str | None:
    """The entry of `paths` equal to `path` without case, if any."""
    return next((known for known in paths if known.lower() == path.lower()), None)


def _requested_credits(params: dict[str, Any]) -> int:
    value = params.get("credits")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LEADS_PER_JOB:
        raise BadRequest(f"params.credits must be a whole number of leads from 0 to {MAX_LEADS_PER_JOB}.")
    return value


def start_job(rt: Runtime, user: UserRow, req: ConnectRequest, job_id: str) -> JobRow:
    """Create the job row and reserve its credits; returns the job row (status running or finished).

    The caller holds `job_id` (`JobRunner.hold`), so the row is heartbeaten from its first commit.
    """
    if not rt.config.scraper_hostname:
        raise ServiceUnavailable("No scraper service is configured (SCRAPER_HOSTNAME).", code="no_scraper")
    quotas.refuse_when_full(rt, user["id"])  # before anything is reserved or the scraper called
    store_id = roots.store_object_ids(rt, user["id"])[req.repository]
    job = {
        "id": job_id,
        "user_id": user["id"],
        "repository": req.repository,
        "store_id": store_id,
        "path": req.path,
        "params": req.params,
        "created_at": now_iso(),
    }
    if not req.billed:
        return _insert_job(rt, job, "none", None, status=JobStatus.RUNNING)
    requested = _requested_credits(req.params)
    customer = credits.stripe_customer(rt, user)
    if customer is not None:
        return _start_stripe_job(rt, user, customer, job, requested)
    with rt.db.atomic() as tx:
        # Allowance and balance are read inside the write transaction, after the user's lock:
        # two jobs, in any processes, can never spend the same credit.
        credits.lock_user(tx, user["id"])
        grant = credits.compute_grant(rt, user, requested, credits.local_balance(rt, user["id"]))
        row = _insert_job(rt, job, "local", None, grant=grant, tx=tx, status=_first_status(grant))
        _reserve_rows(tx, job, grant, "local")
    rt.metrics.lead_reserved("local", grant.reserved)
    return row


def _start_stripe_job(rt: Runtime, user: UserRow, customer: str, job: dict[str, Any], requested: int) -> JobRow:
    gateway = credits.require_gateway(rt)
    watermark = credits.ledger_watermark(rt)  # before the read: see credits.unconfirmed_reservations
    credit = gateway.credit_balance(customer)
    with rt.db.atomic() as tx:
        credits.lock_user(tx, user["id"])
        available = credit - credits.unconfirmed_reservations(rt, user["id"], watermark)
        grant = credits.compute_grant(rt, user, requested, available)
        # The job row records the pending reservation before Stripe is called: every other
        # grant for this user, in any process, subtracts it until it is settled.
        row = _insert_job(rt, job, "stripe", customer, grant=grant, tx=tx, status=_first_status(grant, stripe=True))
        _reserve_rows(tx, job, grant, "stripe", allowance_only=True)
    if not grant.reserved:
        return row
    try:
        txn = gateway.debit(customer, grant.reserved, f"Lead credits reserved for {job['id']}", job["id"])
    except StripeCallFailed as exc:
        _reservation_failed(rt, job["id"], exc)
        raise
    return _confirm_reservation(rt, row, txn)


def _first_status(grant: credits.Grant, stripe: bool = False) -> JobStatus:
    """Reserving while Stripe holds the credits, else running; a job granted no lead is done as it is written."""
    if stripe and grant.reserved:
        return JobStatus.RESERVING
    return JobStatus.RUNNING if grant.granted else JobStatus.SUCCEEDED


def _reservation_failed(rt: Runtime, job_id: str, exc: StripeCallFailed) -> None:
    if exc.applied_unknown:  # no answer, or Stripe failed on its side: maybe it happened. Resolve it later.
        settlement.mark_reserve_unknown(rt, job_id, JobStatus.FAILED, "Stripe could not be reached to reserve credits.")
    else:
        settlement.mark_reserve_refused(rt, job_id, f"Stripe refused the reservation: {exc.message}")


def _confirm_reservation(rt: Runtime, row: JobRow, txn: str) -> JobRow:
    """Record the confirmed reservation and let the job run, if this process still holds it."""
    with rt.db.atomic() as tx:
        confirmed = job_states.move(
            tx, row["id"], job_states.RESERVING, job_states.RUNNING, held_by=rt.job_runner.owner
        )
        if confirmed:
            credits.ledger_row(
                tx, row["user_id"], row["id"], "reserve", amount=-row["reserved"], source="stripe", external_id=txn
            )
            tx.after_commit(lambda: rt.metrics.lead_reserved("stripe", row["reserved"]))
    if not confirmed:  # taken over meanwhile: the taker resolves the reservation
        return {**row, "status": JobStatus.INTERRUPTED}
    return {**row, "status": JobStatus.RUNNING}


def _check_open_jobs(rt: Runtime, tx: Any, user_id: str) -> None:
    """429 when the user already runs TELENTIR_CONNECT_PER_USER jobs, in any process (counted in the write lock)."""
    running = tx.execute(
        f"SELECT COUNT(*) FROM jobs WHERE user_id = ? AND status IN {_OPEN}",  # noqa: S608 (enum values only)
        (user_id,),
    ).fetchone()[0]
    if running >= rt.config.connect_per_user:
        rt.metrics.limit_refused("connect_per_user")
        raise RateLimited(
            retry_after=5,
            message="You already have the maximum number of ingestion jobs running; wait for one to finish.",
        )


def _insert_job(
    rt: Runtime,
    job: dict[str, Any],
    billing: str,
    customer: str | None,
    *,
    status: JobStatus,
    grant: credits.Grant | None = None,
    tx: Any = None,
) -> JobRow:
    g = grant or credits.Grant(0, 0, 0, 0)
    is_open = status in job_states.OPEN_STATUSES
    row = JobRow(
        id=job["id"],
        user_id=job["user_id"],
        status=status.value,
        repository=job["repository"],
        store_id=job["store_id"],
        path=job["path"],
        params=json.dumps(job["params"]),
        billing=billing,
        customer_id=customer,
        created=0,
        skipped=0,
        requested=g.requested,
        granted=g.granted,
        allowance_part=g.allowance_part,
        allowance_used=0,
        price=g.price,
        reserved=g.reserved,
        used=0,
        charged=0,
        refunded=0,
        settlement=(Settlement.OPEN if is_open else Settlement.SETTLED).value,
        error=None,
        created_at=job["created_at"],
        started_at=job["created_at"],
        finished_at=None if is_open else job["created_at"],
        owner=rt.job_runner.owner if is_open else None,
        heartbeat_at=time.time() if is_open else None,
    )
    if tx is not None:
        _write_job(rt, tx, row, is_open)
    else:
        with rt.db.atomic() as own:
            _write_job(rt, own, row, is_open)
    if not is_open:  # nothing to run (no lead granted): the job is done as it is written
        rt.metrics.job_settled(status, billing, 0, 0)
    return row


def _write_job(rt: Runtime, tx: Any, row: JobRow, is_open: bool) -> None:
    if is_open:
        _check_open_jobs(rt, tx, row["user_id"])
    job_states.insert(tx, row)


def _reserve_rows(
    tx: Any, job: dict[str, Any], grant: credits.Grant, source: str, allowance_only: bool = False
) -> None:
    month = job["created_at"][:7]
    if grant.allowance_part:
        credits.ledger_row(tx, job["user_id"], job["id"], "allowance", leads=grant.allowance_part, month=month)
    if grant.reserved and not allowance_only:
        credits.ledger_row(tx, job["user_id"], job["id"], "reserve", amount=-grant.reserved, source=source)


# --- running ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How a job's stream ended."""

    status: JobStatus = JobStatus.SUCCEEDED
    error: str | None = None
    skipped: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)


def run_job(rt: Runtime, job: JobRow, cancel: threading.Event) -> None:
    """Stream, write, settle. Never raises: every ending is recorded on the job."""
    outcome = Outcome(cancel=cancel)
    try:
        _ingest(rt, job, outcome)
    except LeaseLost:
        log.warning("job %s was taken over by another process; this one stops writing it", job["id"])
        return
    except (EngineUnavailable, InsufficientStorage) as exc:
        # An engine away or a full disk (logged once by the storage layer): the job ends, its
        # records committed so far are charged, the rest refunded. If the database is still
        # away, settling waits for it (below), still holding the job's lease.
        log.warning("ingestion job %s failed: %s", job["id"], exc.message)
        outcome.status, outcome.error = JobStatus.FAILED, exc.message
    except Exception as exc:  # the job must settle whatever went wrong
        log.exception("ingestion job %s failed", job["id"])
        outcome.status, outcome.error = JobStatus.FAILED, f"internal error: {type(exc).__name__}"
    # A settlement the storage refuses is retried here, by the living owner, so the job keeps the
    # ending it ran to; the lease sweep settles it `interrupted` only if this process stops or dies.
    # For as long as a lease: past it another process may claim the job anyway, and the request
    # waiting for this answer stays within a proxy's usual 60 s read timeout (30 s by default).
    patience = rt.config.job_lease_seconds
    settlement.settle(rt, job["id"], outcome.status, outcome.error, outcome.skipped, patience=patience)


def _limit(rt: Runtime, job: JobRow) -> int:
    return job["granted"] if settlement.is_billed(job) else rt.config.connect_max_records


def _ingest(rt: Runtime, job: JobRow, outcome: Outcome) -> None:
    params = json.loads(job["params"])
    if settlement.is_billed(job):
        params = {**params, "credits": job["granted"]}
    writer = RecordWriter(rt, job).start()
    deadline = time.monotonic() + rt.config.connect_max_seconds
    session = requests.Session()
    try:
        for frame in stream_frames(
            scraper_url(rt.config.scraper_hostname or "", job["path"]),
            params,
            connect_timeout=rt.config.connect_connect_timeout,
            read_timeout=rt.config.connect_read_timeout,
            max_frame_bytes=rt.config.connect_max_frame_bytes,
            deadline=deadline,
            session=session,
        ):
            if _take_frame(frame, writer, outcome) or writer.count >= _limit(rt, job) or _stop(rt, outcome):
                break
            if writer.quota_full.is_set():
                break
            if writer.lease_lost.is_set():
                raise LeaseLost(job["id"])
            if writer.write_failed is not None:
                raise writer.write_failed
    except (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError):  # JobTimeout is a TimeoutError
        outcome.status, outcome.error = JobStatus.FAILED, "The scraper timed out."
    except FrameTooLarge as exc:
        outcome.status, outcome.error = JobStatus.FAILED, str(exc)
    except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
        # A dropped connection mid-stream surfaces from urllib3 or http.client, not requests.
        outcome.status, outcome.error = JobStatus.FAILED, f"The scraper failed: {_describe(exc)}"
    finally:
        session.close()
        writer.close()
    if writer.quota_full.is_set():
        outcome.status, outcome.error = JobStatus.FAILED, _quota_full_error(rt)
    if writer.write_failed is not None:  # refused after the last frame: the stream ended, records were lost
        raise writer.write_failed
    if outcome.cancel.is_set() and outcome.status == JobStatus.SUCCEEDED:
        outcome.status, outcome.error = JobStatus.CANCELLED, "The client disconnected."


def _quota_full_error(rt: Runtime) -> str:
    quota = rt.config.quota_bytes_per_user or 0
    return (
        f"Your storage quota ({quota:,} bytes, TELENTIR_QUOTA_BYTES_PER_USER) is full: "
        "the records that did not fit were not stored or charged."
    )


def _stop(rt: Runtime, outcome: Outcome) -> bool:
    """Whether the job should end now: this process is stopping (the job settles as interrupted), or its client left."""
    if rt.job_runner.stopping.is_set() and outcome.status == JobStatus.SUCCEEDED:
        outcome.status, outcome.error = JobStatus.INTERRUPTED, settlement.INTERRUPTED
        return True
    return outcome.cancel.is_set()


def _take_frame(frame: Any, writer: RecordWriter, outcome: Outcome) -> bool:
    """Handle one frame; True when it ends the stream (an `error` event)."""
    if frame.event == "error":
        outcome.status, outcome.error = JobStatus.FAILED, f"The scraper reported an error: {frame.data[:500]}"
        return True
    if frame.event != "message":  # progress or other named events are not records: never bill them
        outcome.skipped += 1
        return False
    try:
        record = json.loads(frame.data)
    except (ValueError, RecursionError):  # "[[[[…" nested past the parser's stack is garbage too
        record = None
    if not isinstance(record, dict):
        outcome.skipped += 1
        return False
    writer.add(record)
    return False


def _describe(exc: Exception) -> str:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


# --- the request ------------------------------------------------------------------------------


def connect(rt: Runtime, user: UserRow, req: ConnectRequest, client_gone: Callable[[], bool]) -> str:
    """POST /api/connect: run a job to its end (or the client's departure); returns the job id."""
    runner = rt.job_runner
    job_id = new_id("job")
    runner.hold(job_id)  # heartbeat the job's lease from its first commit to its settlement
    try:
        job = start_job(rt, user, req, job_id)
        if job["status"] == JobStatus.RUNNING:
            cancel = threading.Event()
            future = runner.submit(lambda: run_job(rt, job, cancel))
            _wait(future, cancel, client_gone)
        return job_id
    finally:
        runner.drop(job_id)


def _wait(future: Future[None], cancel: threading.Event, client_gone: Callable[[], bool]) -> None:
    while True:
        try:
            future.result(timeout=1.0)
            return
        except TimeoutError:
            if client_gone():
                cancel.set()  # the job stops at its next frame and refunds what it did not use


def job_summary(rt: Runtime, user_id: str, job_id: str) -> dict[str, Any]:
    """`GET /api/connect/jobs/{id}`: the caller's job only."""
    row = (
        as_row_or_none(JobRow, rt.db.query_one("SELECT * FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id)))
        if is_id(job_id, "job")
        else None
    )
    if row is None:
        raise NotFound("No such job.")
    return {
        "id": row["id"],
        "status": row["status"],
        "repository": row["repository"],
        "path": row["path"],
        "created": row["created"],
        "skipped": row["skipped"],
        "credits": {
            "requested": row["requested"],
            "granted": row["granted"],
            "allowance_used": row["allowance_used"],
            "reserved": row["reserved"],
            "used": row["used"],
            "charged": row["charged"],
            "refunded": row["refunded"],
            "settlement": row["settlement"],
        },
        "error": row["error"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
    }
