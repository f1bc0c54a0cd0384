"""Money as the server counts it: whole minor units (cents) of one currency, within fixed bounds.

Every amount that enters the server (a grant, a plan's price, a lead count) has a ceiling,
so no balance or sum can leave the range where a JSON number is an exact integer (2^53 - 1,
what JavaScript clients can hold) and far from SQLite's 64-bit overflow.
"""

from __future__ import annotations

CURRENCY = "usd"

MAX_GRANT = 10**9
"""The largest single grant of prepaid credit, in minor units ($10 million)."""

MAX_BALANCE = 2**53 - 1
"""No balance or sum of amounts may pass this (the largest integer a JSON number holds exactly)."""

MAX_LEADS_PER_JOB = 1_000_000
"""The largest `params.credits` of one lead job."""

MAX_LEAD_PRICE = 10**6
"""The largest overage price of one lead in a plan, in minor units ($10,000)."""

MAX_INCLUDED_LEADS = 10**9
"""The largest monthly lead allowance of a plan."""


class AmountOutOfRange(ValueError):
    """An amount past its documented bound (the message says which bound)."""


def check_grant(amount: int) -> int:
    """A grant from 1 to MAX_GRANT minor units, or AmountOutOfRange."""
    if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= MAX_GRANT:
        raise AmountOutOfRange(f"a grant must be a whole number of minor units from 1 to {MAX_GRANT:,}")
    return amount


def check_balance(balance: int) -> int:
    """A balance that stays within MAX_BALANCE, or AmountOutOfRange."""
    if balance > MAX_BALANCE:
        raise AmountOutOfRange(f"the balance would pass the largest balance the server keeps ({MAX_BALANCE:,})")
    return balance


_SYMBOLS = {"usd": "$"}


def format_amount(minor_units: int, currency: str = CURRENCY) -> str:
    """Minor units as a person reads them: 4500 -> `$45.00`, -5 -> `-$0.05`."""
    sign = "-" if minor_units < 0 else ""
    whole, cents = divmod(abs(minor_units), 100)
    symbol = _SYMBOLS.get(currency)
    number = f"{whole:,}.{cents:02d}"
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {currency.upper()}"
