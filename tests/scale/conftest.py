"""Scaling out: PostgreSQL storage, several workers, two nodes, engine errors and outages.

Most modules here start the engines or the cluster they test themselves, so they run once,
in the first pass; a module built for the PostgreSQL + S3 + Redis pass is marked `scale_out`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from telentir.storage.postgres import PostgresDatabase

from ..backends import throwaway_database

SCALE_OUT = False


@pytest.fixture
def pg() -> Iterator[PostgresDatabase]:
    """A new PostgreSQL database with the current schema (a module may define its own `pg`)."""
    with throwaway_database() as url:
        db = PostgresDatabase(url, pool_size=8)
        db.open_schema()
        yield db
        db.close()
