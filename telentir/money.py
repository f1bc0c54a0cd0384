"""Money as the server counts it: whole minor units (cents) of one currency."""

from __future__ import annotations

CURRENCY = "usd"
_SYMBOLS = {"usd": "$"}


def format_amount(minor_units: int, currency: str = CURRENCY) -> str:
    """Minor units as a person reads them: 4500 -> `$45.00`, -5 -> `-$0.05`."""
    sign = "-" if minor_units < 0 else ""
    whole, cents = divmod(abs(minor_units), 100)
    symbol = _SYMBOLS.get(currency)
    number = f"{whole:,}.{cents:02d}"
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {currency.upper()}"
