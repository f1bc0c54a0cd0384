"""Parsers of the billing settings: the plan catalog, Stripe price ids and the origins a checkout returns to."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..money import MAX_INCLUDED_LEADS, MAX_LEAD_PRICE
from .parsers import text

DEFAULT_PLANS: dict[str, dict[str, Any]] = {
    "starter": {"name": "Starter", "includedLeads": 100, "leadOverageUsdPerLead": 0.25},
    "pro": {"name": "Pro", "includedLeads": 1000, "leadOverageUsdPerLead": 0.20},
    "growth": {"name": "Growth", "includedLeads": 5000, "leadOverageUsdPerLead": 0.15},
    "agency": {"name": "Agency", "includedLeads": 20000, "leadOverageUsdPerLead": 0.10},
}
TOPUP_MAX_USD = 999_999  # Stripe's largest adjustable quantity, one dollar per unit

_PRICE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,255}")


def plans(value: object) -> dict[str, dict[str, Any]]:
    """JSON object: plan key → plan"""
    return check_plans(json.loads(value) if isinstance(value, str) else value)


def check_plans(catalog: object) -> dict[str, dict[str, Any]]:
    """Check a plan catalog: key -> {name, includedLeads, leadOverageUsdPerLead, stripePriceId?, monthlyPriceUsd?}."""
    if not isinstance(catalog, dict) or not catalog:
        raise ValueError("must be a non-empty JSON object of plan key -> plan")
    for key, plan in catalog.items():
        _check_plan(key, plan)
    prices = [plan["stripePriceId"] for plan in catalog.values() if plan.get("stripePriceId") is not None]
    if len(prices) != len(set(prices)):
        raise ValueError("two plans share a stripePriceId (a subscription's price must name one plan)")
    return catalog


def _usd(value: object, *, positive: bool) -> bool:
    """A finite JSON number of dollars in whole cents (> 0 when `positive`, else >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return (value > 0 if positive else value >= 0) and not round(value * 100, 6) % 1


def _check_plan(key: str, plan: object) -> None:
    if not isinstance(plan, dict) or not isinstance(plan.get("name"), str):
        raise ValueError(f"plan {key!r} needs a name")
    included = plan.get("includedLeads")
    if isinstance(included, bool) or not isinstance(included, int) or not 0 <= included <= MAX_INCLUDED_LEADS:
        raise ValueError(f"plan {key!r} needs includedLeads from 0 to {MAX_INCLUDED_LEADS:,}")
    overage = plan.get("leadOverageUsdPerLead")
    if not _usd(overage, positive=True) or not isinstance(overage, (int, float)) or overage > MAX_LEAD_PRICE / 100:
        raise ValueError(
            f"plan {key!r} needs leadOverageUsdPerLead above 0 and at most {MAX_LEAD_PRICE // 100:,}, in whole cents"
        )
    price_id = plan.get("stripePriceId")
    if price_id is not None and not (isinstance(price_id, str) and _PRICE_ID_RE.fullmatch(price_id)):
        raise ValueError(f"plan {key!r}: stripePriceId must be a Stripe price id such as price_1PxYz")
    if plan.get("monthlyPriceUsd") is not None and not _usd(plan["monthlyPriceUsd"], positive=False):
        raise ValueError(f"plan {key!r}: monthlyPriceUsd must be >= 0 in whole cents")


def price_id(value: object) -> str:
    """Stripe price id such as `price_1PxYz`"""
    price = text(value).strip()
    if not _PRICE_ID_RE.fullmatch(price):
        raise ValueError("must be a Stripe price id such as price_1PxYz")
    return price


_ORIGIN_RE = re.compile(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?/?", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(scheme: str, host: str, port: int | None) -> str:
    """The canonical spelling of an origin: lowercase, the default port left out."""
    scheme, host = scheme.lower(), host.lower()
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


def return_origins(value: object) -> tuple[str, ...]:
    """comma-separated origins such as `https://app.example.com`"""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        items = list(value)
    else:
        raise TypeError("must be comma-separated origins or a list of them")
    return tuple(dict.fromkeys(_origin(item.strip()) for item in items))


def _origin(item: str) -> str:
    match = _ORIGIN_RE.fullmatch(item)
    port = int(match.group(3)) if match and match.group(3) else None
    if match is None or (port is not None and not 0 < port < 65536):
        raise ValueError(f"{item!r} is not an origin such as https://app.example.com or http://localhost:3000")
    return origin_of(match.group(1), match.group(2), port)
