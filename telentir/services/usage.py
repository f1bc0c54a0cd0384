"""Figures read from the data folder when `/metrics` is scraped: jobs by status, bytes stored.

Read from the database rather than counted in a process, so whichever worker answers the
scrape reports them exactly, and they survive restarts.
"""

from __future__ import annotations

from typing import Any

from ..metrics import gauge_family
from ..runtime import Runtime
from ..version import __version__
from .job_states import JobStatus

JOB_STATUSES = tuple(status.value for status in JobStatus)


def scrape_gauges(rt: Runtime) -> list[Any]:
    """The gauge families of `/metrics` that come from the database and the disk."""
    jobs = dict.fromkeys(JOB_STATUSES, 0)
    # jobs_status index: a count per status without reading the rows.
    for row in rt.db.query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status"):
        jobs[row["status"]] = row["n"]
    files, blob_bytes = rt.db.query_row("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM objects WHERE blob IS NOT NULL")
    return [
        gauge_family("telentir_build_info", "The server's version.", [({"version": __version__}, 1)], ("version",)),
        gauge_family(
            "telentir_jobs", "Ingestion jobs by status.", [({"status": s}, n) for s, n in jobs.items()], ("status",)
        ),
        gauge_family(
            "telentir_database_bytes",
            "Size of the database (SQLite: the file and its WAL).",
            [({}, rt.db.size_bytes())],
        ),
        gauge_family("telentir_blob_bytes", "Ciphertext stored in files.", [({}, blob_bytes)]),
        gauge_family("telentir_blob_files", "Ciphertext files.", [({}, files)]),
    ]
