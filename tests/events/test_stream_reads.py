"""RecentReads: the table reads streams of one process share, checked against a table held in a list."""

from __future__ import annotations

from telentir.streaming.reads import REPLAY_CHUNK, RecentReads


class Table:
    """Events of one (user, type) as rows; counts the reads made."""

    def __init__(self, ids: list[int]) -> None:
        self.ids, self.reads = ids, []

    def read(self, after: int) -> list[tuple[int, str, dict, str]]:
        self.reads.append(after)
        return [(i, "c", {}, "{}") for i in self.ids if i > after][:REPLAY_CHUNK]


def ids(rows: list) -> list[int]:
    return [row[0] for row in rows]


def test_streams_on_one_cursor_share_one_read() -> None:
    table, reads = Table([1, 2, 3]), RecentReads()
    assert ids(reads.rows_after("u", "t", 0, 3, table.read)) == [1, 2, 3]
    assert ids(reads.rows_after("u", "t", 0, 3, table.read)) == [1, 2, 3]
    assert table.reads == [0]


def test_a_stream_further_along_the_window_takes_only_its_rows() -> None:
    table, reads = Table([1, 2, 3]), RecentReads()
    reads.rows_after("u", "t", 0, 3, table.read)
    assert ids(reads.rows_after("u", "t", 2, 3, table.read)) == [3]
    assert table.reads == [0]


def test_a_new_doorbell_extends_the_window_from_its_newest_row_for_everyone() -> None:
    table, reads = Table([1, 2, 3]), RecentReads()
    reads.rows_after("u", "t", 0, 3, table.read)
    table.ids += [5, 8]
    assert ids(reads.rows_after("u", "t", 3, 8, table.read)) == [5, 8]
    assert ids(reads.rows_after("u", "t", 1, 8, table.read)) == [2, 3, 5, 8]  # a slower stream: no read
    assert table.reads == [0, 3]


def test_a_doorbell_the_window_does_not_reach_reads_again() -> None:
    table, reads = Table([1, 2]), RecentReads()
    reads.rows_after("u", "t", 0, 2, table.read)
    table.ids.append(4)
    assert ids(reads.rows_after("u", "t", 0, 4, table.read)) == [1, 2, 4]
    assert table.reads == [0, 2]


def test_a_stream_behind_a_trimmed_window_reads_its_own_rows() -> None:
    table, reads = Table([1, 2, 3, 4]), RecentReads(keep=2)
    reads.rows_after("u", "t", 0, 2, table.read)  # the window holds 1..4 until an extension trims it to 2 rows
    table.ids += [5, 6]
    assert ids(reads.rows_after("u", "t", 4, 6, table.read)) == [5, 6]  # window: start 4, rows 5, 6
    assert ids(reads.rows_after("u", "t", 1, 6, table.read)) == [2, 3, 4, 5, 6]
    assert table.reads == [0, 4, 1]


def test_users_and_types_never_share_rows() -> None:
    mine, theirs, reads = Table([1, 2]), Table([3]), RecentReads()
    assert ids(reads.rows_after("u", "t", 0, 2, mine.read)) == [1, 2]
    assert ids(reads.rows_after("v", "t", 0, 3, theirs.read)) == [3]
    assert ids(reads.rows_after("u", "other", 0, 3, theirs.read)) == [3]
    assert (mine.reads, theirs.reads) == ([0], [0, 0])


def test_without_a_doorbell_every_call_reads() -> None:
    table, reads = Table([1]), RecentReads()
    reads.rows_after("u", "t", 0, None, table.read)
    reads.rows_after("u", "t", 0, None, table.read)
    assert table.reads == [0, 0]
