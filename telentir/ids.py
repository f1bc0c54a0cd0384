"""Server-made identifiers and timestamps.

Ids are opaque, URL-safe and carry a type prefix (`usr_`, `key_`, `obj_`, `job_`, `ak_`, `inv_`).
Any id from a client is checked against the strict pattern before it reaches SQL or disk.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

PREFIXES = ("usr", "key", "obj", "job", "ak", "inv")
_ID_RE = re.compile(r"(usr|key|obj|job|ak|inv)_[A-Za-z0-9]{22}")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


_ID_LENGTH = 22
_ID_SPACE = len(_ALPHABET) ** _ID_LENGTH


def new_id(prefix: str) -> str:
    """A fresh id such as `obj_3x9…` (22 random alphanumerics, ~131 bits)."""
    assert prefix in PREFIXES, prefix
    # One draw below 62**22, written in base 62: the same uniform ids as 22 separate
    # choices, for one read of the system's randomness instead of 22.
    number, digits = secrets.randbelow(_ID_SPACE), []
    for _ in range(_ID_LENGTH):
        number, digit = divmod(number, len(_ALPHABET))
        digits.append(_ALPHABET[digit])
    return prefix + "_" + "".join(digits)


def is_id(value: object, prefix: str) -> bool:
    """True when `value` is a well-formed id of the given type."""
    return isinstance(value, str) and value.startswith(prefix + "_") and _ID_RE.fullmatch(value) is not None


def now_iso() -> str:
    """The current UTC time as `2026-11-29T07:31:56.123Z`."""
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    """Format an aware datetime the wire way (UTC, milliseconds, Z)."""
    # isoformat ends "+00:00" for UTC; it costs a fifth of strftime, and every write stamps a time.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
