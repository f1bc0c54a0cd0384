"""Writing an ingestion job's records: encrypted for the user's `default` server, committed in batches.

Each batch commits with the job's `created` counter, only while this process holds the job
(`services/leases.py`) and only the records that fit the user's quota, so the job's summary
and its settlement count exactly the records stored.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from .. import crypto
from ..errors import EngineUnavailable, InsufficientStorage
from ..runtime import Runtime
from ..storage.rows import JobRow
from . import keyring, objects, quotas
from .job_states import JobStatus
from .leases import LeaseLost

log = logging.getLogger(__name__)


class RecordWriter:
    """Encrypts records for the user's `default` server and commits them in batches.

    A batch commits when it is full, or at the latest `connect_batch_seconds` after its first
    record: a flusher thread sees to the second even while the scraper is silent.
    """

    def __init__(self, rt: Runtime, job: JobRow) -> None:
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
        # A timed batch the storage refused (an engine away, a full disk): the job ends failed with it,
        # as when the job thread's own flush is refused, instead of going on as if nothing was lost.
        self.write_failed: EngineUnavailable | InsufficientStorage | None = None
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
                        # That batch is not written (nor counted, nor charged): the job thread ends the job.
                        log.warning("a batch of job %s was not written: %s", self.job["id"], exc.message)
                        self.write_failed = exc
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
                "UPDATE jobs SET created = created + ? WHERE id = ? AND owner = ? AND status = ?",
                (kept, self.job["id"], self.rt.job_runner.owner, JobStatus.RUNNING.value),
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
