"""Money as the server counts it: whole minor units (cents) of one currency."""

from __future__ import annotations

CURRENCY = "usd"
