"""Shared by the billing tests: a server in Stripe mode over the fake, and a client that calls as the SDK does.

`SdkClient` mirrors the public TypeScript SDK's billing calls exactly (silyze/telentir-sdk,
`lib/repos/credits-repository.ts`, `billing-repository.ts`, `http-client.ts`): the method,
the path under `/api`, `returnTo` in the query only when given, the JSON body of
`createPlanCheckout` (`{plan, mode?}` with `content-type: application/json`), no body at
all for `createTopUpSession`, and `authorization`/`accept` headers on every call. Like the
SDK it raises on any non-2xx answer and returns `response.url` / the parsed document.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from .fake_stripe import FakeStripe
from .support import FIXED_MASTER_KEY, ServerProcess

WEBHOOK_SECRET = "whsec_test_0123456789abcdef"
APP_ORIGIN = "https://app.example.test"
OTHER_ORIGIN = "http://localhost:3000"
PRICE = 25  # cents per lead beyond the allowance, in every plan below
TOPUP_MIN_USD, TOPUP_MAX_USD = 5, 500
BILLING_PLAN_FIELDS = {
    "key": str,
    "name": str,
    "monthlyPriceUsd": (int, float),
    "includedMinutes": (int, float),
    "overageUsdPerMinute": (int, float),
    "includedLeads": int,
    "includedOutboundCalls": (int, float),
    "includedInboundCalls": (int, float),
    "outboundFixedUsd": (int, float),
    "inboundFixedUsd": (int, float),
    "leadOverageUsdPerLead": (int, float),
}


def billing_plans(fake: FakeStripe) -> dict[str, dict[str, Any]]:
    """A catalog with Stripe prices made in the fake: `payg` (none: free), `pro` and `agency` sold monthly."""
    return {
        "payg": {"name": "Pay as you go", "includedLeads": 0, "leadOverageUsdPerLead": 0.25},
        "pro": {
            "name": "Pro",
            "includedLeads": 10,
            "leadOverageUsdPerLead": 0.25,
            "monthlyPriceUsd": 49,
            "stripePriceId": fake.add_price(4900, recurring=True),
        },
        "agency": {
            "name": "Agency",
            "includedLeads": 100,
            "leadOverageUsdPerLead": 0.25,
            "monthlyPriceUsd": 199.5,
            "stripePriceId": fake.add_price(19950, recurring=True),
        },
        "legacy": {"name": "Legacy", "includedLeads": 5, "leadOverageUsdPerLead": 0.25, "monthlyPriceUsd": 9},
    }


def billing_env(
    fake: FakeStripe, plans: dict[str, Any], scraper_url: str | None = None, **extra: str
) -> dict[str, str]:
    """Settings of a server in Stripe mode over the fake, with a webhook secret and two return origins."""
    env = {
        "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY,
        "TELENTIR_PLANS": json.dumps(plans),
        "TELENTIR_DEFAULT_PLAN": "payg",
        "STRIPE_SECRET_KEY": "sk_test_x",
        "STRIPE_API_BASE": fake.url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "TELENTIR_RETURN_ORIGINS": f"{APP_ORIGIN},{OTHER_ORIGIN}",
        "TELENTIR_TOPUP_MIN_USD": str(TOPUP_MIN_USD),
        "TELENTIR_TOPUP_MAX_USD": str(TOPUP_MAX_USD),
        "TELENTIR_STRIPE_TIMEOUT_SECONDS": "5",
        "TELENTIR_REFUND_RETRY_SECONDS": "3600",
        "TELENTIR_CONNECT_READ_TIMEOUT": "2",
        **extra,
    }
    if scraper_url:
        env["SCRAPER_HOSTNAME"] = scraper_url
    return env


@contextmanager
def stripe_server(data_dir: Path, fake: FakeStripe, env: dict[str, str]) -> Iterator[ServerProcess]:
    """A real server whose webhook endpoint the fake delivers to."""
    server = ServerProcess(data_dir, env).start()
    fake.configure_webhook(f"{server.url}/api/stripe/webhook", WEBHOOK_SECRET)
    try:
        yield server
    finally:
        server.discard()


class SdkError(Exception):
    """A non-2xx answer, as the SDK's TelentirApiError carries it."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"{response.status_code}: {response.text[:300]}")
        self.status = response.status_code
        self.body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else None


class SdkClient:
    """The SDK's billing and credits calls, byte for byte where it matters."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base = base_url.rstrip("/") + "/api"
        self.http = requests.Session()
        self.api_key = api_key

    def close(self) -> None:
        self.http.close()

    def send(
        self,
        path: str,
        method: str = "GET",
        query: dict[str, str | None] | None = None,
        body: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """http-client.ts `request`: authorization and accept set, query values that are None left out."""
        params = {k: v for k, v in (query or {}).items() if v is not None}
        final = {"authorization": f"Bearer {self.api_key}", "accept": "application/json", **(headers or {})}
        return self.http.request(method, self.base + path, params=params, data=body, headers=final, timeout=30)

    @staticmethod
    def _json(response: requests.Response) -> Any:
        if not response.ok:
            raise SdkError(response)
        return response.json()

    # credits-repository.ts

    def get_balance(self) -> dict[str, Any]:
        return self._json(self.send("/credits"))

    def top_up_request(self, return_to: str | None = None) -> requests.Response:
        return self.send("/credits/add", "POST", {"returnTo": return_to or None})

    def create_top_up_session(self, return_to: str | None = None) -> str:
        return str(self._json(self.top_up_request(return_to))["url"])

    # billing-repository.ts

    def get_state(self) -> dict[str, Any]:
        return self._json(self.send("/billing/state"))

    def portal_request(self, return_to: str | None = None) -> requests.Response:
        return self.send("/billing/portal", "GET", {"returnTo": return_to or None})

    def open_portal(self, return_to: str | None = None) -> str:
        return str(self._json(self.portal_request(return_to))["url"])

    def plan_request(self, plan: Any, mode: str | None = None, return_to: str | None = None) -> requests.Response:
        body: dict[str, Any] = {"plan": plan}
        if mode:
            body["mode"] = mode
        return self.send(
            "/billing/plan",
            "POST",
            {"returnTo": return_to or None},
            json.dumps(body),
            {"content-type": "application/json"},
        )

    def create_plan_checkout(self, plan: str, mode: str | None = None, return_to: str | None = None) -> str:
        return str(self._json(self.plan_request(plan, mode, return_to))["url"])


def session_id_of(url: str) -> str:
    """The Checkout Session id in a fake Checkout URL."""
    return url.rstrip("/").rsplit("/", 1)[1]


def run_leads(client: SdkClient, credits: int) -> dict[str, Any]:
    """A /get-leads job through POST /api/connect; its summary once it has ended."""
    resp = client.send(
        "/connect",
        "POST",
        body=json.dumps({"repository": "contacts", "path": "/get-leads", "params": {"credits": credits}}),
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 204, (resp.status_code, resp.text[:300])
    return client._json(client.send(f"/connect/jobs/{resp.headers['X-Connect-Job']}"))


def assert_billing_plan(plan: dict[str, Any]) -> None:
    """Every field of the SDK's BillingPlan, each of its declared type (JSON numbers may be int or float)."""
    assert set(plan) == set(BILLING_PLAN_FIELDS), plan
    for name, kind in BILLING_PLAN_FIELDS.items():
        assert isinstance(plan[name], kind) and not isinstance(plan[name], bool), (name, plan[name])
    calls = ("includedMinutes", "overageUsdPerMinute", "includedOutboundCalls", "includedInboundCalls")
    assert all(plan[name] == 0 for name in (*calls, "outboundFixedUsd", "inboundFixedUsd")), plan
