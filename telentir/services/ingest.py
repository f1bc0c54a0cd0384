"""Connector ingestion (POST /api/connect): stream records from the scraper into a store.

A job: validate → reserve credits (ledger; Stripe when configured) → job row → thread pool:
read SSE frames, encrypt each record under a fresh key wrapped for the user's `default`
server, commit in batches (each batch also moves the job's `created` counter, so the summary
never claims a record that is not stored) → settle: charge what was used, refund the rest.
At start-up, a job still marked running was cut short by a crash and is settled then.
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
from ..errors import BadRequest, NotFound, ServiceUnavailable
from ..ids import is_id, new_id, now_iso
from ..runtime import Runtime
from ..scraper import FrameTooLarge, check_path, scraper_url, stream_frames
from . import credits, keyring, objects, roots
from .stripe_gateway import StripeUnavailable

log = logging.getLogger(__name__)
LEADS_PATH = "/get-leads"
MAX_CREDITS = 1_000_000


# --- validation and start ---------------------------------------------------------------


@dataclass(frozen=True)
class ConnectRequest:
    """A validated POST /api/connect body."""

    repository: str
    path: str
    params: dict[str, Any]


def parse_request(rt: Runtime, body: dict[str, Any]) -> ConnectRequest:
    """Check repository, path and params; 400 naming the field otherwise."""
    repository = body.get("repository")
    if repository not in roots.STORES:
        raise BadRequest(f"repository must be one of {', '.join(roots.STORES)}.")
    path = _canonical(check_path(body.get("path")))
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise BadRequest("params must be a JSON object.")
    if len(json.dumps(params).encode()) > rt.config.connect_max_params_bytes:
        raise BadRequest(f"params must be at most {rt.config.connect_max_params_bytes} bytes as JSON.")
    return ConnectRequest(repository, path, params)


def _canonical(path: str) -> str:
    """`/get-leads` however spelled: routers that ignore case or a trailing slash would serve it unbilled."""
    return LEADS_PATH if path.rstrip("/").lower() == LEADS_PATH else path


def _requested_credits(params: dict[str, Any]) -> int:
    value = params.get("credits")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CREDITS:
        raise BadRequest(f"params.credits must be a whole number of leads from 0 to {MAX_CREDITS}.")
    return value


def start_job(rt: Runtime, user: dict[str, Any], req: ConnectRequest) -> dict[str, Any]:
    """Create the job row and reserve its credits; returns the job row (status running or finished)."""
    if not rt.config.scraper_hostname:
        raise ServiceUnavailable("No scraper service is configured (SCRAPER_HOSTNAME).", code="no_scraper")
    store_id = roots.store_object_ids(rt, user["id"])[req.repository]
    job = {
        "id": new_id("job"),
        "user_id": user["id"],
        "repository": req.repository,
        "store_id": store_id,
        "path": req.path,
        "params": req.params,
        "created_at": now_iso(),
    }
    if req.path != LEADS_PATH:
        return _insert_job(rt, job, "none", None, status="running")
    requested = _requested_credits(req.params)
    if credits.uses_stripe(rt, user):
        return _start_stripe_job(rt, user, job, requested)
    with rt.db.atomic() as tx:
        # Read the balance inside the write lock: two jobs can never spend the same credit.
        grant = credits.compute_grant(rt, user, requested, credits.local_balance(rt, user["id"]))
        row = _insert_job(
            rt, job, "local", None, grant=grant, tx=tx, status="running" if grant.granted else "succeeded"
        )
        _reserve_rows(tx, job, grant, "local")
    rt.metrics.lead_reserved("local", grant.reserved)
    return row


def _start_stripe_job(rt: Runtime, user: dict[str, Any], job: dict[str, Any], requested: int) -> dict[str, Any]:
    customer = user["stripe_customer_id"]
    with credits.stripe_lock(rt, user["id"]):
        grant = credits.compute_grant(rt, user, requested, credits.require_gateway(rt).credit_balance(customer))
        with rt.db.atomic() as tx:
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
            txn = credits.require_gateway(rt).debit(
                customer,
                grant.reserved,
                f"Lead credits reserved for {job['id']}",
                _idempotency_key(job["id"], "reserve"),
            )
        except StripeUnavailable:
            _fail_unreserved(rt, row)
            raise
    with rt.db.atomic() as tx:
        credits.ledger_row(
            tx, user["id"], job["id"], "reserve", amount=-grant.reserved, source="stripe", external_id=txn
        )
        tx.execute("UPDATE jobs SET status = 'running' WHERE id = ?", (job["id"],))
    rt.metrics.lead_reserved("stripe", grant.reserved)
    return {**row, "status": "running"}


def _idempotency_key(job_id: str, step: str) -> str:
    return f"telentir:{job_id}:{step}"


def _fail_unreserved(rt: Runtime, job: dict[str, Any], status: str = "failed") -> None:
    """Stripe did not answer the reservation: maybe it happened, maybe not. Resolve it later."""
    with rt.db.atomic() as tx:
        _release_allowance(tx, job, job["allowance_part"])
        tx.execute(
            "UPDATE jobs SET status = ?, settlement = 'reserve_unknown', error = ?, finished_at = ? WHERE id = ?",
            (status, "Stripe could not be reached to reserve credits.", now_iso(), job["id"]),
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
        "finished_at": None if status in ("running", "reserving") else job["created_at"],
        "settlement": "open" if status in ("running", "reserving") else "settled",
    }
    sql = (
        "INSERT INTO jobs (id, user_id, status, repository, store_id, path, params, billing, customer_id, requested, "
        "granted, allowance_part, price, reserved, settlement, created_at, started_at, finished_at) VALUES (:id, "
        ":user_id, :status, :repository, :store_id, :path, :params, :billing, :customer_id, :requested, :granted, "
        ":allowance_part, :price, :reserved, :settlement, :created_at, :started_at, :finished_at)"
    )
    if tx is not None:
        tx.execute(sql, row)
    else:
        with rt.db.atomic() as own:
            own.execute(sql, row)
    return row


def _reserve_rows(
    tx: Any, job: dict[str, Any], grant: credits.Grant, source: str, allowance_only: bool = False
) -> None:
    month = job["created_at"][:7]
    if grant.allowance_part:
        credits.ledger_row(tx, job["user_id"], job["id"], "allowance", leads=grant.allowance_part, month=month)
    if grant.reserved and not allowance_only:
        credits.ledger_row(tx, job["user_id"], job["id"], "reserve", amount=-grant.reserved, source=source)


def _release_allowance(tx: Any, job: dict[str, Any], leads: int) -> None:
    if leads > 0:
        credits.ledger_row(
            tx, job["user_id"], job["id"], "allowance_release", leads=-leads, month=job["created_at"][:7]
        )


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
    except Exception as exc:  # the job must settle whatever went wrong
        log.exception("ingestion job %s failed", job["id"])
        outcome.status, outcome.error = "failed", f"internal error: {type(exc).__name__}"
    settle(rt, job["id"], outcome.status, outcome.error, outcome.skipped)


def _limit(rt: Runtime, job: dict[str, Any]) -> int:
    return job["granted"] if job["path"] == LEADS_PATH else rt.config.connect_max_records


def _ingest(rt: Runtime, job: dict[str, Any], outcome: Outcome) -> None:
    params = json.loads(job["params"]) if isinstance(job["params"], str) else job["params"]
    if job["path"] == LEADS_PATH:
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
            if _take_frame(frame, writer, outcome) or writer.count >= _limit(rt, job) or outcome.cancel.is_set():
                break
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
    if outcome.cancel.is_set() and outcome.status == "succeeded":
        outcome.status, outcome.error = "cancelled", "The client disconnected."


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
                    self.flush()
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
            for (wrapped, iv, ciphertext, tag), blob_id in zip(batch, blob_ids, strict=True):
                key_id = keyring.insert_key(self.rt, tx, user_id, keyring.DEFAULT_SERVER, wrapped, iv)
                objects.insert_object(self.rt, tx, user_id, key_id, blob_id, ciphertext, tag, store_id, "{}")
            tx.execute("UPDATE jobs SET created = created + ? WHERE id = ?", (len(batch), self.job["id"]))
            tx.after_commit(lambda: self.rt.metrics.records_ingested(len(batch)))

    def _write_large(self, contents: list[bytes]) -> list[str | None]:
        """Blob ids for the ciphertexts too large for the row (None for the rest), files made durable."""
        limit = self.rt.config.inline_max_bytes
        large = [c for c in contents if len(c) > limit]
        written = iter(self.rt.blobs.write_many(large) if large else [])
        return [next(written) if len(c) > limit else None for c in contents]


# --- settlement -------------------------------------------------------------------------------


def settle(rt: Runtime, job_id: str, status: str, error: str | None, skipped: int = 0) -> None:
    """Close a job: charge the leads written, refund the rest, release unused allowance."""
    job = dict(rt.db.query_row("SELECT * FROM jobs WHERE id = ?", (job_id,)))
    used = job["created"] if job["path"] == LEADS_PATH else 0
    used_allowance = min(used, job["allowance_part"])
    charged = min(used - used_allowance, job["granted"] - job["allowance_part"]) * job["price"]
    refund = job["reserved"] - charged
    refunded = _refund_stripe(rt, job, refund) if job["billing"] == "stripe" else True
    with rt.db.atomic() as tx:
        source = "stripe" if job["billing"] == "stripe" else "local"
        if job["billing"] != "none":
            credits.ledger_row(tx, job["user_id"], job_id, "charge", charged=charged, source=source)
        _release_allowance(tx, job, job["allowance_part"] - used_allowance)
        if refund > 0 and refunded:
            credits.ledger_row(
                tx,
                job["user_id"],
                job_id,
                "refund",
                amount=refund,
                source=source,
                external_id=refunded if isinstance(refunded, str) else None,
            )
        tx.execute(
            "UPDATE jobs SET status = ?, error = ?, skipped = skipped + ?, used = ?, allowance_used = ?, "
            "charged = ?, refunded = ?, settlement = ?, finished_at = ? WHERE id = ?",
            (
                status,
                error,
                skipped,
                used,
                used_allowance,
                charged,
                refund if refunded else 0,
                "settled" if refunded or refund <= 0 else "refund_pending",
                now_iso(),
                job_id,
            ),
        )
    rt.metrics.job_settled(status, job["billing"], charged, refund if refunded else 0)


def _refund_stripe(rt: Runtime, job: dict[str, Any], refund: int) -> str | bool:
    """Credit the unused reservation back in Stripe; False (retried later) if Stripe is down."""
    if refund <= 0:
        return True
    try:
        return credits.require_gateway(rt).credit(
            job["customer_id"], refund, f"Unused lead credits of {job['id']}", _idempotency_key(job["id"], "refund")
        )
    except StripeUnavailable:
        log.warning("refund of job %s is pending: Stripe unavailable or not configured", job["id"])
        return False


def retry_pending(rt: Runtime) -> int:
    """Finish Stripe steps that failed before: pending refunds and reservations of unknown fate."""
    done = 0
    for job in rt.db.query("SELECT * FROM jobs WHERE settlement IN ('refund_pending', 'reserve_unknown')"):
        try:
            _finish_pending(rt, dict(job))
            done += 1
        except StripeUnavailable:
            log.warning("Stripe still unavailable; job %s stays pending", job["id"])
    return done


def _finish_pending(rt: Runtime, job: dict[str, Any]) -> None:
    gateway, key = credits.gateway(rt), job["id"]
    if gateway is None:
        raise StripeUnavailable("Stripe is not configured.")
    refund = job["reserved"] - job["charged"]
    reserve_txn = None
    if job["settlement"] == "reserve_unknown":
        # Re-issuing with the same key returns the original debit if it happened, or makes it now;
        # either way the full amount is then credited back: the net effect is exactly zero.
        reserve_txn = gateway.debit(
            job["customer_id"], job["reserved"], f"Lead credits reserved for {key}", _idempotency_key(key, "reserve")
        )
        refund = job["reserved"]
    refund_txn = gateway.credit(
        job["customer_id"], refund, f"Unused lead credits of {key}", _idempotency_key(key, "refund")
    )
    with rt.db.atomic() as tx:
        if reserve_txn is not None:
            credits.ledger_row(
                tx, job["user_id"], key, "reserve", amount=-job["reserved"], source="stripe", external_id=reserve_txn
            )
        credits.ledger_row(tx, job["user_id"], key, "refund", amount=refund, source="stripe", external_id=refund_txn)
        tx.execute("UPDATE jobs SET refunded = ?, settlement = 'settled' WHERE id = ?", (refund, key))
    rt.metrics.lead_refunded("stripe", refund)


def recover(rt: Runtime) -> dict[str, int]:
    """At start-up (no job can be running): settle jobs a crash cut short, then retry pending Stripe steps."""
    interrupted = 0
    for job in rt.db.query("SELECT id, status FROM jobs WHERE status IN ('running', 'reserving')"):
        if job["status"] == "reserving":
            _fail_unreserved(rt, dict(rt.db.query_row("SELECT * FROM jobs WHERE id = ?", (job["id"],))), "interrupted")
        else:
            settle(rt, job["id"], "interrupted", "The server stopped while the job was running.")
        interrupted += 1
    return {"interrupted_jobs": interrupted, "stripe_steps_finished": retry_pending(rt) if credits.gateway(rt) else 0}


# --- the request ------------------------------------------------------------------------------


def connect(rt: Runtime, user: dict[str, Any], req: ConnectRequest, client_gone: Callable[[], bool]) -> str:
    """POST /api/connect: run a job to its end (or the client's departure); returns the job id."""
    runner = rt.job_runner
    runner.claim(user["id"])
    try:
        job = start_job(rt, user, req)
        if job["status"] != "running":
            return str(job["id"])
        cancel = threading.Event()
        future = runner.submit(lambda: run_job(rt, job, cancel))
        _wait(future, cancel, client_gone)
        return str(job["id"])
    finally:
        runner.release(user["id"])


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
