"""A server killed (SIGKILL of the whole process group) during a job, then started again.

Start-up recovery must mark the job `interrupted`, charge exactly the records it committed,
refund the rest of the reservation (once, even if Stripe fails the first refund), and the
committed records must all be there and decrypt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import requests

from telentir.runtime import Runtime
from telentir.services import credits

from ..connect_support import (
    PLANS,
    TINY_ALLOWANCE,
    assert_summary,
    connect_env,
    credits_amount,
    expected_ledger,
    ledger_rows,
    money_for,
    read_records,
)
from ..fake_stripe import FakeStripe
from ..scraper_fixture import TestScraper
from ..support import Api, ServerProcess, make_user, runtime_over, wait_until

pytestmark = pytest.mark.embedded_only("a server killed and restarted over its own local data folder")

TXNS = r"/v1/customers/[^/]+/balance_transactions"
FUNDS, REQUESTED = 10_000, 200


class Deployment:
    """A server over one data folder that can be killed and started again, and a Runtime over it."""

    def __init__(self, server: ServerProcess, stripe: FakeStripe | None) -> None:
        self.server = server
        self.stripe = stripe
        overrides = {"stripe_secret_key": "sk_test_x", "stripe_api_base": stripe.url} if stripe else {}
        self.rt: Runtime = runtime_over(server.data_dir, plans=PLANS, **overrides)

    def new_user(self) -> dict[str, Any]:
        """A funded user on plan `tiny` (local balance, or a linked Stripe customer)."""
        user = make_user(self.rt)
        credits.set_plan(self.rt, user["id"], "tiny")
        if self.stripe is None:
            credits.grant_credits(self.rt, user["id"], FUNDS)
        else:
            user["stripe_customer_id"] = self.stripe.add_customer(FUNDS)
            credits.set_stripe_customer(self.rt, user["id"], user["stripe_customer_id"])
        return user

    def close(self) -> None:
        self.server.stop()
        if self.stripe is not None:
            credits.gateway(self.rt).close()  # type: ignore[union-attr]
        self.rt.close()


@pytest.fixture
def deploy(server_factory: Callable[..., ServerProcess], scraper: TestScraper, fake: FakeStripe) -> Iterator[Any]:
    """Factory: a started Deployment, local or Stripe; closed after the test."""
    made: list[Deployment] = []

    def factory(stripe: bool) -> Deployment:
        env = connect_env(scraper.url)
        if stripe:
            env.update(STRIPE_SECRET_KEY="sk_test_x", STRIPE_API_BASE=fake.url)
        made.append(Deployment(server_factory("deploy", **env), fake if stripe else None))
        return made[-1]

    yield factory
    fake.clear_failures()
    for deployment in made:
        deployment.close()


def post_in_background(api: Api, params: dict[str, Any]) -> tuple[threading.Thread, list[BaseException]]:
    """POST /api/connect on a thread; the connection error it must end with is collected."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            api.post("/connect", json={"repository": "contacts", "path": "/get-leads", "params": params})
        except requests.RequestException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def blob_files(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "blobs").rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "billing, refund_failure",
    [("local", None), ("stripe", "drop_after"), ("stripe", "500")],
    ids=["local", "stripe-refund-answer-lost", "stripe-refund-500"],
)
def test_sigkill_mid_stream_then_restart_recovers(deploy, scraper, fake, billing, refund_failure):
    deployment = deploy(billing == "stripe")
    server, rt = deployment.server, deployment.rt
    user = deployment.new_user()
    with closing(Api(server.url, user["api_key"])) as api:
        thread, errors = post_in_background(api, {"credits": REQUESTED, "mode": "slow", "delay_ms": 15})
        job = wait_until(
            lambda: rt.db.query_one("SELECT * FROM jobs WHERE user_id = ? AND created >= 30", (user["id"],)), timeout=20
        )
        server.kill()
        thread.join(timeout=30)
    assert errors, "the request should have died with the server"
    before = dict(rt.db.query_one("SELECT * FROM jobs WHERE id = ?", (job["id"],)))
    assert (before["status"], before["settlement"]) == ("running", "open")
    written = before["created"]
    assert written < REQUESTED
    if refund_failure:
        fake.fail("POST", TXNS, refund_failure, key=r"telentir:.*:refund")

    server.start()  # start-up runs recovery

    money = money_for(REQUESTED, TINY_ALLOWANCE, FUNDS, written)
    with closing(Api(server.url, user["api_key"])) as api:
        summary = api.get(f"/connect/jobs/{job['id']}").json()
        assert_summary(summary, money, "interrupted", error="server stopped")
        records = read_records(api)
        assert [r["n"] for r in records] == list(range(written))
        assert credits_amount(api) == FUNDS - money.charged
    assert ledger_rows(rt, job["id"]) == expected_ledger(money, billing)
    referenced = {r["blob"] for r in rt.db.query("SELECT blob FROM objects WHERE blob IS NOT NULL")}
    assert blob_files(server.data_dir) == referenced  # nothing missing, nothing orphaned
    if billing == "stripe":
        cus = user["stripe_customer_id"]
        assert [t["amount"] for t in fake.transactions(cus)] == [money.reserved, -money.refunded]
        assert fake.credit_of(cus) == FUNDS - money.charged
        refunds = [c for c in fake.money_calls(cus) if c.idempotency_key == f"telentir:{job['id']}:refund"]
        assert len(refunds) == 2 and refunds[0].failure == refund_failure


def test_sigkill_while_waiting_for_the_stripe_reservation(deploy, scraper, fake):
    deployment = deploy(True)
    server, rt = deployment.server, deployment.rt
    user = deployment.new_user()
    cus = user["stripe_customer_id"]
    before = scraper.request_count()
    fake.fail("POST", TXNS, "hang_after", key=r"telentir:.*:reserve")  # Stripe debits, the answer never comes
    with closing(Api(server.url, user["api_key"])) as api:
        thread, errors = post_in_background(api, {"credits": 50})
        wait_until(lambda: fake.money_calls(cus))
        server.kill()
        thread.join(timeout=30)
    fake.clear_failures()
    assert errors
    job = dict(rt.db.query_one("SELECT * FROM jobs WHERE user_id = ?", (user["id"],)))
    assert job["status"] == "reserving" and fake.credit_of(cus) == FUNDS - job["reserved"]

    server.start()

    job = dict(rt.db.query_one("SELECT * FROM jobs WHERE id = ?", (job["id"],)))
    assert (job["status"], job["settlement"], job["created"]) == ("interrupted", "settled", 0)
    assert job["refunded"] == job["reserved"] == (50 - TINY_ALLOWANCE) * 25
    assert [t["amount"] for t in fake.transactions(cus)] == [job["reserved"], -job["reserved"]]
    reserves = [c for c in fake.money_calls(cus) if c.idempotency_key == f"telentir:{job['id']}:reserve"]
    assert len(reserves) == 2 and reserves[1].replayed  # the debit was re-sent with its key, not made twice
    assert fake.credit_of(cus) == FUNDS
    assert credits.allowance_used(rt, user["id"]) == 0
    assert scraper.request_count() == before
