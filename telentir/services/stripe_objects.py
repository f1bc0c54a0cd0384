"""Stripe's payloads as this server reads them: whose they are, their fields, and what applying one did."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..runtime import Runtime
from ..storage.db import Transaction
from ..storage.rows import UserRow, as_row, as_row_or_none


@dataclass(frozen=True)
class Outcome:
    """What applying an event did (`applied`, `ignored`; `replayed` when another delivery did it), in a sentence."""

    status: str
    note: str
    user_id: str | None = None


Effect = Callable[[Transaction], Outcome]


def ignored(note: str, user_id: str | None = None) -> Effect:
    """An effect that writes nothing: the event is recorded as `ignored`, with why."""
    return lambda tx: Outcome("ignored", note, user_id)


def user_for(rt: Runtime, user_id: object, customer: object) -> UserRow | None:
    """The user named in metadata (`telentir_user`), else the one linked to the customer."""
    if isinstance(user_id, str):
        row = rt.db.query_one("SELECT * FROM users WHERE id = ?", (user_id,))
        if row is not None:
            return as_row(UserRow, row)
    customer_id = customer.get("id") if isinstance(customer, dict) else customer
    if isinstance(customer_id, str):
        return as_row_or_none(
            UserRow, rt.db.query_one("SELECT * FROM users WHERE stripe_customer_id = ?", (customer_id,))
        )
    return None


def nested(value: object) -> dict[str, Any]:
    """A nested object of a Stripe payload, or {} when it is absent (or, in a malformed event, not an object)."""
    return value if isinstance(value, dict) else {}


def whole_number(value: object) -> int:
    """A whole number of a Stripe payload (0 when absent or not one)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def id_of(value: object) -> str | None:
    """An id that Stripe sends either bare or as an expanded object."""
    value = value.get("id") if isinstance(value, dict) else value
    return value if isinstance(value, str) else None
