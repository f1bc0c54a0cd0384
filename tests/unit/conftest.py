"""Unit tests: in process, on the embedded engines; no gunicorn, no private Redis or PostgreSQL.

`make test-fast` runs this package alone (under a minute). Nothing here runs in the
PostgreSQL + S3 + Redis pass; a test that needs a server belongs in an integration package.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from telentir.storage.db import SqliteDatabase

SCALE_OUT = False


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SqliteDatabase]:
    """A bare database (schema applied) in a fresh folder, for storage-level tests."""
    database = SqliteDatabase(tmp_path / "t.db")
    database.open_schema()
    yield database
    database.close()
