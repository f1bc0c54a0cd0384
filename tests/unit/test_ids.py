"""Server-made ids: the documented shape, and every position uniform over the whole alphabet."""

from __future__ import annotations

from collections import Counter

from telentir.ids import PREFIXES, is_id, new_id

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def test_ids_have_the_documented_shape_and_never_repeat() -> None:
    for prefix in PREFIXES:
        ids = {new_id(prefix) for _ in range(2000)}
        assert len(ids) == 2000
        assert all(is_id(i, prefix) and len(i) == len(prefix) + 23 for i in ids)


def test_every_position_draws_from_the_whole_alphabet_evenly() -> None:
    n = 62 * 400
    ids = [new_id("obj")[4:] for _ in range(n)]
    for position in (0, 10, 21):  # the first, a middle and the last digit of the base-62 number
        counts = Counter(i[position] for i in ids)
        assert set(counts) == set(ALPHABET), position
        # 400 expected per character; 5 standard deviations (~100) is far outside chance.
        assert max(counts.values()) < 520 and min(counts.values()) > 280, (position, counts.most_common(3))
