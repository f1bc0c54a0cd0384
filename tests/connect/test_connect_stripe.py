"""The same ingestion scenarios in Stripe mode, against a strict local fake of Stripe.

The prepaid balance is the Stripe customer's credit. Each lead job that buys leads makes
one reservation (`telentir:<job>:reserve`) and, if anything is unused, one refund
(`telentir:<job>:refund`); a refund that failed is retried with the same key and lands once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from telentir.components.stripe_gateway import StripeMisconfigured
from telentir.runtime import Runtime
from telentir.services import credits, settlement

from ..connect_support import (
    FUNDED,
    PLANS,
    PRICE,
    SCENARIOS,
    TINY_ALLOWANCE,
    Buyer,
    Money,
    assert_summary,
    connect_env,
    credits_amount,
    ledger_rows,
    money_for,
    read_records,
    run_connect,
    run_scenario,
)
from ..fake_stripe import FakeStripe
from ..scraper_fixture import TestScraper
from ..support import Api, ServerProcess, assert_error, make_user, running_server, runtime_over

TXNS = r"/v1/customers/[^/]+/balance_transactions"


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, scraper: TestScraper, fake: FakeStripe) -> Iterator[ServerProcess]:
    """A real server in Stripe mode."""
    env = connect_env(
        scraper.url, STRIPE_SECRET_KEY="sk_test_x", STRIPE_API_BASE=fake.url, TELENTIR_STRIPE_TIMEOUT_SECONDS="5"
    )
    with running_server(tmp_path_factory, "stripe", **env) as process:
        yield process
        scraper.stopping.set()  # no stalled stream may hold the server's graceful stop


@pytest.fixture(scope="module")
def rt(server: ServerProcess, fake: FakeStripe) -> Iterator[Runtime]:
    """A Runtime over the server's data folder, configured for the same Stripe (to run retries)."""
    runtime = runtime_over(server.data_dir, plans=PLANS, stripe_secret_key="sk_test_x", stripe_api_base=fake.url)
    yield runtime
    credits.gateway(runtime).close()  # type: ignore[union-attr]
    runtime.close()


@pytest.fixture
def new_buyer(rt: Runtime, server: ServerProcess, fake: FakeStripe) -> Iterator[Callable[..., Buyer]]:
    """Factory: a user on a plan, linked to a fake Stripe customer holding `credit`."""
    apis: list[Api] = []

    def factory(plan: str = "tiny", credit: int = 0, card: bool = False) -> Buyer:
        user = make_user(rt)
        credits.set_plan(rt, user["id"], plan)
        user["stripe_customer_id"] = fake.add_customer(credit, card=card)
        credits.set_stripe_customer(rt, user["id"], user["stripe_customer_id"])
        apis.append(Api(server.url, user["api_key"]))
        return Buyer(user, apis[-1], credit)

    yield factory
    for api in apis:
        api.close()


def customer(account: Buyer) -> str:
    return str(account.user["stripe_customer_id"])


def assert_stripe_money(fake: FakeStripe, rt: Runtime, account: Buyer, job_id: str, money: Money) -> None:
    """Stripe moved exactly the reservation and the refund, once each, with keys from job + step."""
    cus = customer(account)
    expected = ([(money.reserved, f"telentir:{job_id}:reserve")] if money.reserved else []) + (
        [(-money.refunded, f"telentir:{job_id}:refund")] if money.refunded else []
    )
    calls = fake.money_calls(cus)
    assert all(c.idempotency_key and c.idempotency_key.startswith(f"telentir:{job_id}:") for c in calls), calls
    key_of = {c.result_id: c.idempotency_key for c in calls if c.result_id}
    effects = fake.transactions(cus)
    assert [(t["amount"], key_of[t["id"]]) for t in effects] == expected
    assert fake.credit_of(cus) == account.balance - money.charged
    rows = rt.db.query(
        "SELECT kind, external_id FROM ledger WHERE job_id = ? AND kind IN ('reserve', 'refund')", (job_id,)
    )
    assert {r["kind"]: r["external_id"] for r in rows} == {key_of[t["id"]].rsplit(":", 1)[1]: t["id"] for t in effects}


# --- the scenarios ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario_moves_the_same_money_in_stripe(new_buyer, scraper, rt, fake, scenario):
    account = new_buyer("tiny", FUNDED)
    job, money = run_scenario(account, scraper, rt, scenario, "stripe")
    assert_stripe_money(fake, rt, account, job["id"], money)
    assert credits_amount(account.api) == FUNDED - money.charged


def test_clamped_by_allowance_moves_no_money(new_buyer, scraper, rt, fake):
    account = new_buyer("tiny", 0)
    job = run_connect(account.api, {"credits": 10, "mode": "too_many"})
    assert scraper.requests[-1]["params"]["credits"] == TINY_ALLOWANCE
    assert_summary(job, money_for(10, TINY_ALLOWANCE, 0, TINY_ALLOWANCE), "succeeded")
    assert fake.money_calls(customer(account)) == []
    assert ledger_rows(rt, job["id"]) == {"allowance": (0, 3, 0, "local"), "charge": (0, 0, 0, "stripe")}


def test_clamped_by_stripe_credit(new_buyer, scraper, rt, fake):
    account = new_buyer("payg", 110)
    job = run_connect(account.api, {"credits": 10})
    assert scraper.requests[-1]["params"]["credits"] == 4
    money = money_for(10, 0, 110, 4)
    assert_summary(job, money, "succeeded")
    assert_stripe_money(fake, rt, account, job["id"], money)
    assert credits_amount(account.api) == 10


@pytest.mark.parametrize(
    "plan, credit, requested",
    [("payg", 0, 5), ("payg", PRICE - 1, 5), ("tiny", 500, 0)],
    ids=["nothing", "less-than-one-lead", "zero-asked"],
)
def test_nothing_to_spend_calls_neither_stripe_nor_the_scraper(new_buyer, scraper, rt, fake, plan, credit, requested):
    account = new_buyer(plan, credit)
    before = scraper.request_count()
    job = run_connect(account.api, {"credits": requested})
    assert scraper.request_count() == before and job["credits"]["granted"] == 0
    assert fake.money_calls(customer(account)) == [] and fake.credit_of(customer(account)) == credit


# --- Stripe failing -------------------------------------------------------------------------------


def _pending_job(rt: Runtime, job_id: str) -> dict[str, Any]:
    return dict(rt.db.query_one("SELECT * FROM jobs WHERE id = ?", (job_id,)))


@pytest.mark.parametrize("mode", ["500", "drop", "drop_after"])
def test_failed_refund_is_retried_once_with_the_same_key(new_buyer, scraper, rt, fake, mode):
    account = new_buyer("payg", 500)
    cus = customer(account)
    fake.fail("POST", TXNS, mode, key=r"telentir:.*:refund")
    job = run_connect(account.api, {"credits": 10, "n": 4})  # 250 reserved, 100 used
    assert job["credits"]["settlement"] == "refund_pending" and job["credits"]["refunded"] == 0
    assert "refund" not in ledger_rows(rt, job["id"])
    applied = 1 if mode == "drop_after" else 0  # the response was lost, the refund was not
    assert len(fake.transactions(cus)) == 1 + applied

    assert settlement.retry_pending(rt) >= 1
    money = money_for(10, 0, 500, 4)
    summary = account.api.get(f"/connect/jobs/{job['id']}").json()
    assert_summary(summary, money, "succeeded")
    assert_stripe_money(fake, rt, account, job["id"], money)
    refund_calls = [c for c in fake.money_calls(cus) if c.idempotency_key == f"telentir:{job['id']}:refund"]
    assert len(refund_calls) == 2 and refund_calls[1].replayed == bool(applied)

    before = len(fake.calls)
    assert settlement.retry_pending(rt) == 0  # nothing pending any more: no call at all
    assert len(fake.calls) == before and fake.credit_of(cus) == 500 - 100
    assert credits_amount(account.api) == 400


def test_replaying_a_refund_key_never_refunds_twice(new_buyer, rt, fake):
    account = new_buyer("payg", 300)
    job = run_connect(account.api, {"credits": 10, "n": 2})
    refund = ledger_rows(rt, job["id"])["refund"]
    gateway = credits.gateway(rt)
    assert gateway is not None
    original = rt.db.query_one("SELECT external_id FROM ledger WHERE job_id = ? AND kind = 'refund'", (job["id"],))[0]
    description = f"Unused lead credits of {job['id']}"
    assert gateway.credit(customer(account), refund[0], description, job["id"]) == original
    assert fake.calls[-1].replayed and fake.calls[-1].idempotency_key == f"telentir:{job['id']}:refund"
    # Same key, other amount: Stripe's idempotency_error, a fault of ours for the operator (500).
    with pytest.raises(StripeMisconfigured):
        gateway.credit(customer(account), refund[0] + 1, description, job["id"])
    assert fake.calls[-1].status == 400
    assert fake.credit_of(customer(account)) == 300 - 2 * PRICE
    assert len(fake.transactions(customer(account))) == 2


@pytest.mark.parametrize("mode", ["drop", "500", "drop_after"])
def test_stripe_failing_the_reservation_is_503_and_settles_to_zero(new_buyer, scraper, rt, fake, mode):
    account = new_buyer("payg", 500)
    cus = customer(account)
    before = scraper.request_count()
    fake.fail("POST", TXNS, mode, key=r"telentir:.*:reserve")
    resp = account.api.post("/connect", json={"repository": "contacts", "path": "/get-leads", "params": {"credits": 4}})
    assert_error(resp, 503, "stripe_unavailable")
    assert scraper.request_count() == before
    job = dict(rt.db.query_one("SELECT * FROM jobs WHERE user_id = ?", (account.id,)))
    assert (job["status"], job["settlement"], job["created"]) == ("failed", "reserve_unknown", 0)

    assert settlement.retry_pending(rt) >= 1  # re-sends the reservation with its key, then refunds it all
    job = _pending_job(rt, job["id"])
    assert (job["settlement"], job["refunded"], job["charged"]) == ("settled", 100, 0)
    effects = fake.transactions(cus)
    assert [t["amount"] for t in effects] == [100, -100]
    assert fake.credit_of(cus) == 500 and credits_amount(account.api) == 500
    reserve_calls = [c for c in fake.money_calls(cus) if c.idempotency_key == f"telentir:{job['id']}:reserve"]
    assert len(reserve_calls) == 2 and reserve_calls[1].replayed == (mode == "drop_after")
    assert read_records(account.api) == []


def test_stripe_down_when_reading_the_balance_is_503_and_nothing_starts(new_buyer, scraper, rt, fake):
    account = new_buyer("payg", 500)
    before = scraper.request_count()
    fake.fail("GET", r"/v1/customers/.*", "drop", times=None)
    assert_error(
        account.api.post("/connect", json={"repository": "contacts", "path": "/get-leads", "params": {"credits": 4}}),
        503,
        "stripe_unavailable",
    )
    assert_error(account.api.get("/credits"), 503, "stripe_unavailable")
    assert scraper.request_count() == before
    assert fake.money_calls(customer(account)) == []
    assert rt.db.query_one("SELECT count(*) FROM jobs WHERE user_id = ?", (account.id,))[0] == 0


def test_unknown_stripe_customer_is_400_and_nothing_starts(new_buyer, scraper, rt, fake):
    account = new_buyer("payg", 500)
    credits.set_stripe_customer(rt, account.id, "cus_doesnotexist")
    before = scraper.request_count()
    assert_error(
        account.api.post("/connect", json={"repository": "contacts", "path": "/get-leads", "params": {"credits": 4}}),
        400,
        "stripe_invalid_request",
    )
    assert scraper.request_count() == before


def test_every_money_call_carried_a_derived_idempotency_key(fake):
    posts = fake.money_calls()
    assert posts, "the module moved no money at all"
    for call in posts:
        assert call.idempotency_key and re.fullmatch(
            r"telentir:job_[A-Za-z0-9]{22}:(reserve|refund)", call.idempotency_key
        ), call
        assert call.authorization == "Bearer sk_test_x" and call.params["currency"] == "usd"
        assert re.fullmatch(r"-?[1-9][0-9]*", call.params["amount"]), call  # never a zero move


# --- documents ------------------------------------------------------------------------------------


@pytest.mark.parametrize("card", [True, False])
def test_billing_state_reads_stripe(new_buyer, fake, card):
    account = new_buyer("tiny", 321, card=card)
    state = account.api.get("/billing/state")
    assert state.status_code == 200, state.text
    plan = state.json()["plan"]
    assert {k: plan[k] for k in ("key", *PLANS["tiny"])} == {"key": "tiny", **PLANS["tiny"]}
    assert {k: v for k, v in state.json().items() if k != "plan"} == {
        "usage": {"leads": 0, "seconds_inbound": 0, "seconds_outbound": 0, "calls_inbound": 0, "calls_outbound": 0},
        "hasCard": card,
        "balance": {"currency": "usd", "amount": 321},
        "paymentFailure": None,
    }
    assert credits_amount(account.api) == 321


def test_local_grants_do_not_count_in_stripe_mode(new_buyer, rt):
    account = new_buyer("payg", 50)
    credits.grant_credits(rt, account.id, 10_000)
    assert credits_amount(account.api) == 50
    job = run_connect(account.api, {"credits": 10})
    assert job["credits"]["granted"] == 2


# --- the fake itself is as strict as Stripe ----------------------------------------------------------


def test_the_fake_checks_what_stripe_checks():
    with FakeStripe() as fake:  # its own instance: the module's records only the server's calls
        _check_fake(fake)


def _check_fake(fake: FakeStripe) -> None:
    cus = fake.add_customer(100)
    url = f"{fake.url}/v1/customers/{cus}/balance_transactions"
    auth = {"Authorization": "Bearer sk_test_x"}
    form = {"amount": "30", "currency": "usd", "description": "d"}
    with requests.Session() as http:

        def post(data: dict[str, str], **headers: str) -> requests.Response:
            return http.post(url, data=data, headers=headers)

        assert post(form, **{"Idempotency-Key": "a"}).status_code == 401  # no key
        assert post(form, Authorization="Bearer pk_test_x", **{"Idempotency-Key": "a"}).status_code == 401
        assert post(form, **auth).status_code == 400  # no Idempotency-Key
        for bad in ({"amount": "1.5"}, {"amount": "x"}, {"currency": "eur"}, {"colour": "red"}):
            assert post({**form, **bad}, **auth, **{"Idempotency-Key": f"bad-{bad}"}).status_code == 400
        first = post(form, **auth, **{"Idempotency-Key": "k"})
        again = post(form, **auth, **{"Idempotency-Key": "k"})
        assert first.status_code == again.status_code == 200 and first.json() == again.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        other = post({**form, "amount": "31"}, **auth, **{"Idempotency-Key": "k"})
        assert other.status_code == 400 and other.json()["error"]["type"] == "idempotency_error"
        missing = http.get(f"{fake.url}/v1/customers/cus_missing", headers=auth)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "resource_missing"
        assert http.get(f"{fake.url}/v1/customers/{cus}", headers=auth).json()["balance"] == -100 + 30
    assert fake.credit_of(cus) == 70 and len(fake.transactions(cus)) == 1
