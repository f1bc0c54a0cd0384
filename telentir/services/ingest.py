"""Connector ingestion (POST /api/connect): stream records from the scraper into a store.

A job: validate → reserve credits (ledger; Stripe when configured) → job row → thread pool:
read SSE frames, encrypt each record under a fresh key wrapped for the user's `default`
server, commit in batches (each batch also moves the job's `created` counter, so the summary
never claims a record that is not stored) → settle: charge what was used, refund the rest
(`services/settlement.py`). The process running a job holds its lease (`services/leases.py`):
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

from .. import crypto
from ..components.stripe_gateway import StripeCallFailed
from ..errors import BadRequest, EngineUnavailable, InsufficientStorage, NotFound, RateLimited, ServiceUnavailable
from ..ids import is_id, new_id, now_iso
from ..money import MAX_LEADS_PER_JOB
from ..runtime import Runtime
from ..scraper import FrameTooLarge, check_path, scraper_url, stream_frames
from ..wire import is_plain_path
from . import credits, keyring, objects, quotas, roots, settlement
from .leases import LeaseLost

log = logging.getLogger(__name__)


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


def start_job(rt: Runtime, user: dict[str, Any], req: ConnectRequest, job_id: str) -> dict[str, Any]:
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
        return _insert_job(rt, job, "none", None, status="running")
    requested = _requested_credits(req.params)
    if credits.uses_stripe(rt, user):
        return _start_stripe_job(rt, user, job, requested)
    with rt.db.atomic() as tx:
        # Allowance and balance are read inside the write transaction, after the user's lock:
        # two jobs, in any processes, can never spend the same credit.
        credits.lock_user(tx, user["id"])
        grant = credits.compute_grant(rt, user, requested, credits.local_balance(rt, user["id"]))
        row = _insert_job(
            rt, job, "local", None, grant=grant, tx=tx, status="running" if grant.granted else "succeeded"
        )
        _reserve_rows(tx, job, grant, "local")
    rt.metrics.lead_reserved("local", grant.reserved)
    return row


def _start_stripe_job(rt: Runtime, user: dict[str, Any], job: dict[str, Any], requested: int) -> dict[str, Any]:
    customer, gateway = user["stripe_customer_id"], credits.require_gateway(rt)
    watermark = credits.ledger_watermark(rt)  # before the read: see credits.unconfirmed_reservations
    credit = gateway.credit_balance(customer)
    with rt.db.atomic() as tx:
        credits.lock_user(tx, user["id"])
        available = credit - credits.unconfirmed_reservations(rt, user["id"], watermark)
        grant = credits.compute_grant(rt, user, requested, available)
        # The job row records the pending reservation before Stripe is called: every other
        # grant for this user, in any process, subtracts it until it is settled.
        row = _insert_job(
            rt,
            job,
            "stripe",
            customer,
            grant=grant,
            tx=tx,
            status="reserving" if grant.reserved else ("running" if grant.granted else "succeeded"),
        )
        _reserve_rows(tx, job, grant, "stripe", allowance_only=True)
    if not grant.reserved:
        return row
    try:
        txn = gateway.debit(customer, grant.reserved, f"Lead credits reserved for {job['id']}", job["id"])
    except StripeCallFailed as exc:
        _reservation_failed(rt, job["id"], exc)
        raise
    return _confirm_reservation(rt, row, txn)


def _reservation_failed(rt: Runtime, job_id: str, exc: StripeCallFailed) -> None:
    if exc.applied_unknown:  # no answer, or Stripe failed on its side: maybe it happened. Resolve it later.
        settlement.mark_reserve_unknown(rt, job_id, "failed", "Stripe could not be reached to reserve credits.")
    else:
        settlement.mark_reserve_refused(rt, job_id, f"Stripe refused the reservation: {exc.message}")


def _confirm_reservation(rt: Runtime, row: dict[str, Any], txn: str) -> dict[str, Any]:
    """Record the confirmed reservation and let the job run, if this process still holds it."""
    with rt.db.atomic() as tx:
        confirmed = tx.execute(
            "UPDATE jobs SET status = 'running' WHERE id = ? AND owner = ? AND status = 'reserving'",
            (row["id"], rt.job_runner.owner),
        ).rowcount
        if confirmed:
            credits.ledger_row(
                tx, row["user_id"], row["id"], "reserve", amount=-row["reserved"], source="stripe", external_id=txn
            )
            tx.after_commit(lambda: rt.metrics.lead_reserved("stripe", row["reserved"]))
    if not confirmed:  # taken over meanwhile: the taker resolves the reservation
        return {**row, "status": "interrupted"}
    return {**row, "status": "running"}


def _check_open_jobs(rt: Runtime, tx: Any, user_id: str) -> None:
    """429 when the user already runs TELENTIR_CONNECT_PER_USER jobs, in any process (counted in the write lock)."""
    running = tx.execute(
        "SELECT COUNT(*) FROM jobs WHERE user_id = ? AND status IN ('running', 'reserving')", (user_id,)
    ).fetchone()[0]
    if running >= rt.config.connect_per_user:
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
    status: str,
    grant: credits.Grant | None = None,
    tx: Any = None,
) -> dict[str, Any]:
    g = grant or credits.Grant(0, 0, 0, 0)
    is_open = status in ("running", "reserving")
    row = {
        **job,
        "params": json.dumps(job["params"]),
        "billing": billing,
        "customer_id": customer,
        "status": status,
        "requested": g.requested,
        "granted": g.granted,
        "allowance_part": g.allowance_part,
        "price": g.price,
        "reserved": g.reserved,
        "started_at": job["created_at"],
        "finished_at": None if is_open else job["created_at"],
        "settlement": "open" if is_open else "settled",
        "owner": rt.job_runner.owner if is_open else None,
        "heartbeat_at": time.time() if is_open else None,
    }
    sql = (
        "INSERT INTO jobs (id, user_id, status, repository, store_id, path, params, billing, customer_id, requested, "
        "granted, allowance_part, price, reserved, settlement, created_at, started_at, finished_at, owner, "
        "heartbeat_at) VALUES (:id, :user_id, :status, :repository, :store_id, :path, :params, :billing, "
        ":customer_id, :requested, :granted, :allowance_part, :price, :reserved, :settlement, :created_at, "
        ":started_at, :finished_at, :owner, :heartbeat_at)"
    )
    if tx is not None:
        _write_job(rt, tx, sql, row, is_open)
    else:
        with rt.db.atomic() as own:
            _write_job(rt, own, sql, row, is_open)
    if not is_open:  # nothing to run (no lead granted): the job is done as it is written
        rt.metrics.job_settled(status, billing, 0, 0)
    return row


def _write_job(rt: Runtime, tx: Any, sql: str, row: dict[str, Any], is_open: bool) -> None:
    if is_open:
        _check_open_jobs(rt, tx, row["user_id"])
    tx.execute(sql, row)


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

    status: str = "succeeded"
    error: str | None = None
    skipped: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)


def run_job(rt: Runtime, job: dict[str, Any], cancel: threading.Event) -> None:
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
        # away, settling fails too, and the lease sweep settles the job once it is back.
        log.warning("ingestion job %s failed: %s", job["id"], exc.message)
        outcome.status, outcome.error = "failed", exc.message
    except Exception as exc:  # the job must settle whatever went wrong
        log.exception("ingestion job %s failed", job["id"])
        outcome.status, outcome.error = "failed", f"internal error: {type(exc).__name__}"
    settlement.settle(rt, job["id"], outcome.status, outcome.error, outcome.skipped)


def _limit(rt: Runtime, job: dict[str, Any]) -> int:
    return job["granted"] if settlement.is_billed(job) else rt.config.connect_max_records


def _ingest(rt: Runtime, job: dict[str, Any], outcome: Outcome) -> None:
    params = json.loads(job["params"]) if isinstance(job["params"], str) else job["params"]
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
    except (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError):  # JobTimeout is a TimeoutError
        outcome.status, outcome.error = "failed", "The scraper timed out."
    except FrameTooLarge as exc:
        outcome.status, outcome.error = "failed", str(exc)
    except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
        # A dropped connection mid-stream surfaces from urllib3 or http.client, not requests.
        outcome.status, outcome.error = "failed", f"The scraper failed: {_describe(exc)}"
    finally:
        session.close()
        writer.close()
    if writer.quota_full.is_set():
        outcome.status, outcome.error = "failed", _quota_full_error(rt)
    if outcome.cancel.is_set() and outcome.status == "succeeded":
        outcome.status, outcome.error = "cancelled", "The client disconnected."


def _quota_full_error(rt: Runtime) -> str:
    quota = rt.config.quota_bytes_per_user or 0
    return (
        f"Your storage quota ({quota:,} bytes, TELENTIR_QUOTA_BYTES_PER_USER) is full: "
        "the records that did not fit were not stored or charged."
    )


def _stop(rt: Runtime, outcome: Outcome) -> bool:
    """Whether the job should end now: this process is stopping (the job settles as interrupted), or its client left."""
    if rt.job_runner.stopping.is_set() and outcome.status == "succeeded":
        outcome.status, outcome.error = "interrupted", "The server stopped while the job was running."
        return True
    return outcome.cancel.is_set()


def _take_frame(frame: Any, writer: RecordWriter, outcome: Outcome) -> bool:
    """Handle one frame; True when it ends the stream (an `error` event)."""
    if frame.event == "error":
        outcome.status, outcome.error = "failed", f"The scraper reported an error: {frame.data[:500]}"
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


class RecordWriter:
    """Encrypts records for the user's `default` server and commits them in batches.

    A batch commits when it is full, or at the latest `connect_batch_seconds` after its first
    record: a flusher thread sees to the second even while the scraper is silent.
    """

    def __init__(self, rt: Runtime, job: dict[str, Any]) -> None:
        self.rt, self.job = rt, job
        row = rt.db.query_row(
            "SELECT public_key FROM servers WHERE user_id = ? AND name = ?", (job["user_id"], keyring.DEFAULT_SERVER)
        )
        self.public_key = crypto.load_public_key(row["public_key"])
        self.pending: list[tuple[bytes, bytes, bytes, bytes]] = []
        self.count = 0
        self._first_pending = 0.0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.lease_lost = threading.Event()  # set when a batch was refused: another process settled the job
        self.quota_full = threading.Event()  # set when a record did not fit the user's quota: the job ends
        self._flusher = threading.Thread(target=self._flush_on_time, name=f"flush-{job['id']}", daemon=True)

    def start(self) -> RecordWriter:
        """Start the timed flusher."""
        self._flusher.start()
        return self

    def close(self) -> None:
        """Stop the flusher and commit what is pending."""
        self._closed.set()
        self._flusher.join()
        self.flush()

    def _flush_on_time(self) -> None:
        interval = self.rt.config.connect_batch_seconds
        try:
            while not self._closed.wait(interval / 4):
                if self.pending and time.monotonic() - self._first_pending >= interval:
                    try:
                        self.flush()
                    except (EngineUnavailable, InsufficientStorage) as exc:
                        # That batch is not written (nor counted, nor charged); later ones may be.
                        log.warning("a batch of job %s was not written: %s", self.job["id"], exc.message)
        except LeaseLost:
            pass  # `lease_lost` is set: the job thread stops at its next frame
        except Exception:
            log.exception("timed flush of job %s failed; the job thread flushes at its end", self.job["id"])
        finally:
            self.rt.db.release_thread_connection()

    def add(self, record: dict[str, Any]) -> None:
        """Encrypt one record under a fresh key and IV; commit when the batch is full or old."""
        aes, iv = crypto.new_aes_key(), crypto.new_iv()
        ciphertext, tag = crypto.aes_gcm_encrypt(aes, iv, json.dumps(record, separators=(",", ":")).encode())
        item = (crypto.wrap_key(self.public_key, aes), iv, ciphertext, tag)
        with self._lock:
            if not self.pending:
                self._first_pending = time.monotonic()
            self.pending.append(item)
            self.count += 1
            full = len(self.pending) >= self.rt.config.connect_batch_size
        if full:
            self.flush()

    def flush(self) -> None:
        """Commit the pending records (files first, then one transaction)."""
        with self._lock:
            self._commit()

    def _commit(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        blob_ids = self._write_large([item[2] for item in batch])
        user_id, store_id = self.job["user_id"], self.job["store_id"]
        with self.rt.db.atomic() as tx:
            tx.after_rollback(lambda: self.rt.blobs.delete_many(b for b in blob_ids if b))
            kept = self._within_quota(tx, batch)
            tx.after_commit(lambda: self.rt.blobs.delete_many(b for b in blob_ids[kept:] if b))
            # Only while this process holds the job: once another settled it, a record
            # written now would be a lead nobody paid for.
            counted = tx.execute(
                "UPDATE jobs SET created = created + ? WHERE id = ? AND owner = ? AND status = 'running'",
                (kept, self.job["id"], self.rt.job_runner.owner),
            ).rowcount
            if not counted:
                self.lease_lost.set()
                raise LeaseLost(self.job["id"])
            for (wrapped, iv, ciphertext, tag), blob_id in zip(batch[:kept], blob_ids[:kept], strict=True):
                key_id = keyring.insert_key(self.rt, tx, user_id, keyring.DEFAULT_SERVER, wrapped, iv)
                objects.insert_object(self.rt, tx, user_id, key_id, blob_id, ciphertext, tag, store_id, "{}")
            tx.after_commit(lambda: self.rt.metrics.records_ingested(kept))

    def _within_quota(self, tx: Any, batch: list[tuple[bytes, bytes, bytes, bytes]]) -> int:
        """How many of the batch's records, in order, fit the user's quota; the rest end the job (`quota_full`).

        Read inside the write transaction: exact against every other write of the user, anywhere.
        The job's `created` counts only the records kept, so settlement charges exactly those.
        """
        if self.quota_full.is_set():
            return 0  # the job is ending: a smaller record after the one that did not fit is not kept either
        room = quotas.room(self.rt, tx, self.job["user_id"])
        if room is None:
            return len(batch)
        kept = 0
        for _, _, ciphertext, _ in batch:
            if len(ciphertext) > room:
                break
            room -= len(ciphertext)
            kept += 1
        if kept < len(batch) and not self.quota_full.is_set():
            self.quota_full.set()
            self.rt.metrics.limit_refused("quota_bytes_per_user")
        return kept

    def _write_large(self, contents: list[bytes]) -> list[str | None]:
        """Blob ids for the ciphertexts too large for the row (None for the rest), files made durable."""
        limit = self.rt.config.inline_max_bytes
        large = [c for c in contents if len(c) > limit]
        written = iter(self.rt.blobs.write_many(large) if large else [])
        return [next(written) if len(c) > limit else None for c in contents]


# --- the request ------------------------------------------------------------------------------


def connect(rt: Runtime, user: dict[str, Any], req: ConnectRequest, client_gone: Callable[[], bool]) -> str:
    """POST /api/connect: run a job to its end (or the client's departure); returns the job id."""
    runner = rt.job_runner
    job_id = new_id("job")
    runner.hold(job_id)  # heartbeat the job's lease from its first commit to its settlement
    try:
        job = start_job(rt, user, req, job_id)
        if job["status"] == "running":
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
        rt.db.query_one("SELECT * FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id))
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
