"""The typed rows (`telentir/storage/rows.py`) name exactly the columns of their tables."""

from __future__ import annotations

from pathlib import Path
from typing import get_type_hints

import pytest

from telentir.storage.db import SqliteDatabase
from telentir.storage.rows import JobRow, KeyRow, ObjectRow, UserRow, as_row, as_row_or_none


@pytest.mark.parametrize(
    ("table", "row_type"), [("users", UserRow), ("keys", KeyRow), ("objects", ObjectRow), ("jobs", JobRow)]
)
def test_a_row_type_names_every_column_of_its_table(tmp_path: Path, table: str, row_type: type) -> None:
    db = SqliteDatabase(tmp_path / "rows.db")
    db.open_schema()
    try:
        columns = [row["name"] for row in db.query(f"PRAGMA table_info({table})")]
    finally:
        db.close()
    assert sorted(get_type_hints(row_type)) == sorted(columns)


def test_a_row_becomes_a_plain_dict_and_nothing_stays_nothing(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "rows.db")
    db.open_schema()
    try:
        with db.atomic() as tx:
            tx.execute(
                "INSERT INTO users (id, email, phone, plan, created_at) VALUES ('usr_1', 'a@example.com', '+1', "
                "'free', '2026-01-01T00:00:00Z')"
            )
        user = as_row(UserRow, db.query_one("SELECT * FROM users"))
        assert type(user) is dict and user["email"] == "a@example.com" and user["phone_verified"] == 0
        assert as_row_or_none(UserRow, db.query_one("SELECT * FROM users WHERE id = 'usr_2'")) is None
    finally:
        db.close()
