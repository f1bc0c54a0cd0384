"""Upkeep of storage: sweeping blobs no row names, pruning the audit log, finishing deletions; one process at a time."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..runtime import Runtime
from . import audit, deletion

log = logging.getLogger(__name__)


def sweep_blobs(rt: Runtime) -> int:
    """Remove ciphertexts that no object row names (left by a crash mid-write).

    On one box, at start-up, nothing is writing: every unreferenced blob goes. Storage
    shared with other nodes (PostgreSQL, a bucket) is being written to meanwhile: only
    blobs older than the grace period go, by one node at a time.
    """
    shared = rt.config.uses_postgres or rt.config.uses_s3
    grace = rt.config.blob_sweep_grace_seconds if shared else 0.0
    if not rt.db.claim_singleton("blob-sweeper"):
        return 0
    removed = rt.blobs.sweep(_referenced_check(rt), grace)
    if removed:
        log.warning("blob sweep removed %d unreferenced blob(s) from %s", removed, rt.blobs.describe())
    return removed


def account_upkeep(rt: Runtime) -> None:
    """Prune the audit log past TELENTIR_AUDIT_RETENTION_DAYS; finish account deletions a crash cut short.

    Run by the event pruner (one process of the deployment at a time): on shared storage a
    node that never restarts still finishes another node's interrupted deletion.
    """
    audit.prune(rt)
    deletion.finish_pending(rt)


def _referenced_check(rt: Runtime) -> Callable[[str], bool]:
    """`is_referenced(blob_id)`, reading the referenced ids once, on first use (after the store was listed)."""
    referenced: set[str] | None = None

    def is_referenced(blob_id: str) -> bool:
        nonlocal referenced
        if referenced is None:
            referenced = {row["blob"] for row in rt.db.query("SELECT blob FROM objects WHERE blob IS NOT NULL")}
        return blob_id in referenced

    return is_referenced
