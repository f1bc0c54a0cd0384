"""A job's (status, settlement): the table allows exactly the moves the code makes, and the writer enforces it.

In-process, on a fresh SQLite file: no server, no scraper, no Stripe.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from telentir.services import job_states
from telentir.services.job_states import (
    ALLOWED,
    ENDED_STATUSES,
    IllegalMove,
    JobState,
    JobStatus,
    Settlement,
)
from telentir.storage.db import SqliteDatabase
from telentir.storage.rows import JobRow, as_row

from ..support import ROOT

S, F, C, INT = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED
RESERVING, RUNNING = job_states.RESERVING, job_states.RUNNING
OPEN, SETTLED = Settlement.OPEN, Settlement.SETTLED
PENDING, UNKNOWN = Settlement.REFUND_PENDING, Settlement.RESERVE_UNKNOWN

# Every move the code makes, written out by hand (where, and why).
CODE_MOVES = (
    # ingest.start_job: a job is written running, reserving (Stripe), or done when granted nothing.
    {(None, RUNNING), (None, RESERVING), (None, JobState(S, SETTLED))}
    # ingest._confirm_reservation: Stripe made the reservation.
    | {(RESERVING, RUNNING)}
    # settlement._end_reservation: refused (failed, settled), of unknown fate (failed), or cut short (interrupted).
    | {(RESERVING, JobState(F, SETTLED)), (RESERVING, JobState(F, UNKNOWN)), (RESERVING, JobState(INT, UNKNOWN))}
    # settlement._close: any ending; a Stripe refund may still be owed.
    | {(RUNNING, JobState(status, t)) for status in (S, F, C, INT) for t in (SETTLED, PENDING)}
    # settlement._resolve_reservation: it never happened (settled), or it did (its refund is owed).
    | {(JobState(status, UNKNOWN), JobState(status, t)) for status in (F, INT) for t in (SETTLED, PENDING)}
    # settlement._finish_refund: the refund sent.
    | {(JobState(status, PENDING), JobState(status, SETTLED)) for status in (S, F, C, INT)}
)


def allowed_moves() -> set[tuple[JobState | None, JobState]]:
    return {(before, after) for before, targets in ALLOWED.items() for after in targets}


def test_the_table_holds_exactly_the_moves_the_code_makes() -> None:
    assert allowed_moves() == CODE_MOVES


def test_the_stored_values_are_the_strings_of_the_wire_and_the_schema() -> None:
    assert [s.value for s in JobStatus] == ["reserving", "running", "succeeded", "failed", "cancelled", "interrupted"]
    assert [s.value for s in Settlement] == ["open", "settled", "refund_pending", "reserve_unknown"]
    # The open-jobs count repeats the partial index's condition literally, or the index is not used.
    schema = (ROOT / "schema.sql").read_text()
    assert f"WHERE status IN {job_states.sql_in(job_states.OPEN_STATUSES)};" in schema


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (JobState(S, SETTLED), RUNNING),  # a finished job cannot run again
        (JobState(INT, PENDING), RUNNING),
        (JobState(F, SETTLED), JobState(F, PENDING)),  # settled once: no second refund
        (JobState(S, SETTLED), JobState(S, SETTLED)),
        (JobState(INT, PENDING), JobState(INT, PENDING)),  # a refund is recorded once
        (JobState(S, PENDING), JobState(F, SETTLED)),  # an ended status never changes
        (RUNNING, RESERVING),
        (RUNNING, JobState(S, UNKNOWN)),  # only a reservation's fate can be unknown
        (RUNNING, RUNNING),
        (RESERVING, JobState(S, SETTLED)),  # a reservation that did not complete never succeeds
        (RESERVING, JobState(INT, SETTLED)),  # cut short, its fate is unknown until Stripe is asked
        (JobState(F, UNKNOWN), JobState(F, OPEN)),
        (None, JobState(F, SETTLED)),  # a job is written running, reserving, or done as granted nothing
        (None, JobState(JobStatus.RUNNING, SETTLED)),
    ],
)
def test_a_move_the_code_never_makes_is_refused(before: JobState | None, after: JobState) -> None:
    with pytest.raises(IllegalMove):
        job_states.check(before, after)


def test_money_is_settled_once_and_an_ended_status_stays() -> None:
    moves = allowed_moves()
    assert not [move for move in moves if move[0] is not None and move[0].settlement == SETTLED]
    assert not [(b, a) for b, a in moves if b is not None and b.status in ENDED_STATUSES and a.status != b.status]
    assert not [(b, a) for b, a in moves if a.settlement == OPEN and a.status in ENDED_STATUSES]
    assert not [(b, a) for b, a in moves if b is not None and a.settlement == OPEN and b.settlement != OPEN]


def test_every_state_the_table_names_ends_settled() -> None:
    """From every state some path leads to (…, settled): no job is left with money open for good."""
    states = {state for move in allowed_moves() for state in move if state is not None}
    for state in states:
        seen, todo = {state}, [state]
        while todo:
            for nxt in ALLOWED.get(todo.pop(), frozenset()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert any(s.settlement == SETTLED for s in seen), state


# --- the writer, on a real table -------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "jobs.db")
    database.open_schema()
    with database.atomic() as tx:
        tx.execute(
            "INSERT INTO users (id, email, phone, plan, created_at) VALUES ('usr_1', 'a@example.com', '+1', 'free', "
            "'2026-01-01T00:00:00Z')"
        )
    yield database
    database.close()


def job(state: JobState, owner: str | None = "proc-a") -> JobRow:
    return JobRow(
        id="job_1",
        user_id="usr_1",
        status=state.status.value,
        repository="leads",
        store_id="obj_1",
        path="/leads",
        params="{}",
        billing="stripe",
        customer_id="cus_1",
        created=0,
        skipped=0,
        requested=5,
        granted=5,
        allowance_part=0,
        allowance_used=0,
        price=100,
        reserved=500,
        used=0,
        charged=0,
        refunded=0,
        settlement=state.settlement.value,
        error=None,
        created_at="2026-01-01T00:00:00Z",
        started_at="2026-01-01T00:00:00Z",
        finished_at=None,
        owner=owner,
        heartbeat_at=None,
    )


def stored(db: SqliteDatabase) -> JobRow:
    return as_row(JobRow, db.query_row("SELECT * FROM jobs WHERE id = 'job_1'"))


def move(db: SqliteDatabase, before: JobState, after: JobState, **columns: object) -> bool:
    with db.atomic() as tx:
        return job_states.move(tx, "job_1", before, after, **columns)


def test_insert_writes_a_first_state_and_refuses_any_other(db: SqliteDatabase) -> None:
    with pytest.raises(IllegalMove), db.atomic() as tx:
        job_states.insert(tx, job(JobState(F, SETTLED)))
    assert db.query_one("SELECT 1 FROM jobs") is None
    with db.atomic() as tx:
        job_states.insert(tx, job(RUNNING))
    assert job_states.state_of(stored(db)) == RUNNING


def test_a_move_applies_once_and_only_while_the_lease_holder_moves_it(db: SqliteDatabase) -> None:
    with db.atomic() as tx:
        job_states.insert(tx, job(RUNNING))
    ended = JobState(INT, PENDING)
    assert not move(db, RUNNING, ended, held_by="proc-b", charged=200)  # another process's lease: nothing
    assert stored(db)["charged"] == 0 and job_states.state_of(stored(db)) == RUNNING
    assert move(db, RUNNING, ended, held_by="proc-a", charged=200)
    assert not move(db, RUNNING, ended, held_by="proc-a", charged=999)  # the row no longer holds RUNNING
    row = stored(db)
    assert (row["status"], row["settlement"], row["charged"]) == ("interrupted", "refund_pending", 200)
    settled = JobState(INT, SETTLED)
    assert move(db, ended, settled, refunded=300, owner=None)
    assert not move(db, ended, settled, refunded=300, owner=None)  # the refund is recorded once
    with pytest.raises(IllegalMove):
        move(db, settled, RUNNING)
    row = stored(db)
    assert (row["status"], row["settlement"], row["refunded"], row["owner"]) == ("interrupted", "settled", 300, None)


def test_a_move_writes_and_compares_only_what_changes(db: SqliteDatabase) -> None:
    """Resolving a reservation compares the settlement alone, as the leases expect (any owner may take the step)."""
    with db.atomic() as tx:
        job_states.insert(tx, job(RESERVING))
    assert move(db, RESERVING, JobState(F, UNKNOWN), held_by="proc-a", owner=None)
    assert move(db, JobState(F, UNKNOWN), JobState(F, PENDING))
    assert job_states.state_of(stored(db)) == JobState(F, PENDING)


def test_a_move_refuses_columns_it_does_not_own(db: SqliteDatabase) -> None:
    with db.atomic() as tx:
        job_states.insert(tx, job(RUNNING))
    with pytest.raises(ValueError, match="not updatable: user_id"):
        move(db, RUNNING, JobState(S, SETTLED), user_id="usr_2")
    assert job_states.state_of(stored(db)) == RUNNING
