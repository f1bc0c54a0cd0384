"""Stripe failing: each error class mapped to its status, and steps still pending past the idempotency horizon.

The findings: every Stripe error became 503; and Stripe idempotency keys expire after 24 h,
so a refund retried later could be paid twice. Now card and invalid-request errors are
402/400, authentication and permission errors 500 (logged for the operator, generic to the
client), connection, rate-limit and Stripe 5xx errors 503 with Retry-After; and a step
pending past the horizon is looked up among the customer's balance transactions (by its
metadata: job and step) before anything is resent.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from telentir.components.stripe_gateway import StripeGateway
from telentir.config import load_config
from telentir.ids import iso
from telentir.runtime import Runtime

from ..connect_support import PRICE
from ..fake_stripe import FakeStripe
from ..money_support import (
    TXNS,
    billing_env,
    funded_user,
    job_row,
    ledger_counts,
    post_leads,
    user_jobs,
)
from ..scraper_fixture import TestScraper
from ..support import Api, ServerProcess, assert_error, running_server, wait_until

FUNDS = 10 * PRICE
CUSTOMER = r"/v1/customers/[^/]+"
REFUND_KEY, RESERVE_KEY = r"telentir:.*:refund", r"telentir:.*:reserve"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, scraper: TestScraper, fake: FakeStripe) -> Iterator[ServerProcess]:
    """A server in Stripe mode that retries pending Stripe steps every second."""
    env = billing_env(scraper.url, fake, TELENTIR_REFUND_RETRY_SECONDS="1")
    with running_server(tmp_path_factory, "stripe-failures", **env) as process:
        yield process


@pytest.fixture
def account(server: ServerProcess, rt: Runtime, fake: FakeStripe) -> Iterator[tuple[dict[str, Any], Api]]:
    """A pay-as-you-go user whose Stripe customer holds FUNDS of credit."""
    user = funded_user(rt, "payg", FUNDS, fake)
    api = Api(server.url, user["api_key"])
    yield user, api
    api.close()


# --- each error class -----------------------------------------------------------------------------

GENERIC = "Something went wrong on our side"
MAPPING = [
    ("card_error", 402, "stripe_card_error", "Your card was declined."),
    ("invalid_request_error", 400, "stripe_invalid_request", "Stripe refused the request"),
    ("authentication_error", 500, "internal_error", GENERIC),
    ("permission_error", 500, "internal_error", GENERIC),
    ("rate_limit", 503, "stripe_unavailable", "Stripe could not be reached"),
    ("api_error", 503, "stripe_unavailable", "Stripe could not be reached"),
    ("drop", 503, "stripe_unavailable", "Stripe could not be reached"),
]


def assert_mapped(resp: requests.Response, status: int, code: str, words: str) -> None:
    body = assert_error(resp, status, code)
    assert words in body["message"], body
    assert "sk_test" not in body["message"] and "API Key" not in body["message"]  # never our credentials
    assert resp.headers.get("Retry-After") == ("5" if status == 503 else None), dict(resp.headers)


@pytest.mark.parametrize("mode, status, code, words", MAPPING, ids=[m[0] for m in MAPPING])
def test_reading_the_balance_maps_each_stripe_error(server, fake, account, mode, status, code, words):
    _, api = account
    fake.fail("GET", CUSTOMER, mode, times=None)
    assert_mapped(api.get("/credits"), status, code, words)
    assert_mapped(api.get("/billing/state"), status, code, words)
    if status == 500:
        assert "Stripe refused this server's request" in server.log()  # the operator learns why


REFUSED = [m for m in MAPPING if m[0] not in ("api_error", "drop")]  # Stripe surely did nothing


@pytest.mark.parametrize("mode, status, code, words", REFUSED, ids=[m[0] for m in REFUSED])
def test_a_refused_reservation_fails_the_job_with_nothing_reserved(
    scraper, rt, fake, account, mode, status, code, words
):
    user, api = account
    before = scraper.request_count()
    fake.fail("POST", TXNS, mode, key=RESERVE_KEY)
    assert_mapped(post_leads(api, {"credits": 4}), status, code, words)
    (job,) = user_jobs(rt, user["id"])
    assert (job["status"], job["settlement"], job["reserved"], job["owner"]) == ("failed", "settled", 0, None), job
    assert scraper.request_count() == before and fake.transactions(user["stripe_customer_id"]) == []
    assert ledger_counts(rt, job["id"]) == {}
    assert api.get("/credits").json()["amount"] == FUNDS


@pytest.mark.parametrize("mode", ["api_error", "drop"])
def test_a_reservation_of_unknown_fate_is_503_and_undone(rt, fake, account, mode):
    user, api = account
    fake.fail("POST", TXNS, mode, key=RESERVE_KEY)
    assert_mapped(post_leads(api, {"credits": 4}), 503, "stripe_unavailable", "Stripe could not be reached")
    (job,) = user_jobs(rt, user["id"])
    settled = wait_until(lambda: (row := job_row(rt, job["id"]))["settlement"] == "settled" and row, timeout=15)
    assert (settled["status"], settled["reserved"], settled["refunded"]) == ("failed", 4 * PRICE, 4 * PRICE)
    assert [t["amount"] for t in fake.transactions(user["stripe_customer_id"])] == [4 * PRICE, -4 * PRICE]


def test_a_refund_refused_for_our_credentials_stays_pending_and_is_logged(server, rt, fake, account):
    user, api = account
    fake.fail("POST", TXNS, "authentication_error", times=None, key=REFUND_KEY)
    resp = post_leads(api, {"credits": 10, "n": 4})
    assert resp.status_code == 204, resp.text
    job_id = resp.headers["X-Connect-Job"]
    assert job_row(rt, job_id)["settlement"] == "refund_pending"
    wait_until(lambda: "Stripe refused this server's request (AuthenticationError)" in server.log(), timeout=10)
    fake.clear_failures()  # the operator fixed the key
    row = wait_until(lambda: (r := job_row(rt, job_id))["settlement"] == "settled" and r, timeout=15)
    assert row["refunded"] == FUNDS - 4 * PRICE
    assert fake.credit_of(user["stripe_customer_id"]) == FUNDS - 4 * PRICE


# --- past the idempotency horizon -----------------------------------------------------------------


def backdate(rt: Runtime, job_id: str, days: int = 2, finished_now: bool = False) -> None:
    """Make a job look `days` old: its Stripe keys may have expired since.

    `finished_now`: only its start is old (a job of a restored backup, settled again at start-up).
    """
    then = iso(datetime.now(UTC) - timedelta(days=days))
    finished = iso(datetime.now(UTC)) if finished_now else then
    with rt.db.atomic() as tx:
        tx.execute(
            "UPDATE jobs SET created_at = ?, started_at = ?, finished_at = ? WHERE id = ?",
            (then, then, finished, job_id),
        )


def money_posts_since(fake: FakeStripe, customer: str, mark: int) -> list[Any]:
    """The calls that could move the customer's money, from call number `mark` on."""
    path = f"/v1/customers/{customer}/balance_transactions"
    return [c for c in fake.calls[mark:] if c.method == "POST" and c.path == path]


def lookups_since(fake: FakeStripe, customer: str, mark: int) -> list[Any]:
    """The listings of the customer's balance transactions, from call number `mark` on."""
    path = f"/v1/customers/{customer}/balance_transactions"
    return [c for c in fake.calls[mark:] if c.method == "GET" and c.path == path]


@pytest.mark.parametrize("finished_now", [False, True], ids=["settled-long-ago", "settled-again-after-a-restore"])
def test_a_refund_that_reached_stripe_is_found_not_paid_twice_once_its_key_expired(rt, fake, account, finished_now):
    user, api = account
    customer = user["stripe_customer_id"]
    fake.fail("POST", TXNS, "drop_after", key=REFUND_KEY)  # Stripe refunds; the answer is lost
    fake.fail("POST", TXNS, "500", times=None, key=REFUND_KEY)  # and every retry fails for two days
    resp = post_leads(api, {"credits": 10, "n": 4})
    job_id = resp.headers["X-Connect-Job"]
    assert job_row(rt, job_id)["settlement"] == "refund_pending"
    backdate(rt, job_id, finished_now=finished_now)
    fake.expire_idempotency_keys()
    mark = len(fake.calls)
    fake.clear_failures()

    row = wait_until(lambda: (r := job_row(rt, job_id))["settlement"] == "settled" and r, timeout=15)
    assert row["refunded"] == FUNDS - 4 * PRICE
    assert [t["amount"] for t in fake.transactions(customer)] == [FUNDS, -(FUNDS - 4 * PRICE)]  # one refund
    assert fake.credit_of(customer) == FUNDS - 4 * PRICE
    assert money_posts_since(fake, customer, mark) == [] and lookups_since(fake, customer, mark)
    refund_txn = fake.transactions(customer)[1]
    assert refund_txn["metadata"] == {"job": job_id, "step": "refund"}
    assert (
        rt.db.query_value("SELECT external_id FROM ledger WHERE job_id = ? AND kind = 'refund'", (job_id,))
        == (refund_txn["id"])
    )


@pytest.mark.parametrize("happened", [True, False], ids=["reservation-made", "reservation-never-made"])
def test_a_reservation_of_unknown_fate_is_resolved_by_lookup_once_its_key_expired(rt, fake, account, happened):
    user, api = account
    customer = user["stripe_customer_id"]
    fake.fail("POST", TXNS, "drop_after" if happened else "500", key=RESERVE_KEY)
    fake.fail("POST", TXNS, "500", times=None)  # no retry gets through for two days
    assert_error(post_leads(api, {"credits": 4}), 503, "stripe_unavailable")
    (job,) = user_jobs(rt, user["id"])
    assert job["settlement"] == "reserve_unknown"
    backdate(rt, job["id"])
    fake.expire_idempotency_keys()
    mark = len(fake.calls)
    fake.clear_failures()

    row = wait_until(lambda: (r := job_row(rt, job["id"]))["settlement"] == "settled" and r, timeout=15)
    assert lookups_since(fake, customer, mark)
    reserve_posts = [c for c in money_posts_since(fake, customer, mark) if c.idempotency_key.endswith(":reserve")]
    assert reserve_posts == []  # never re-debited: an expired key would have made a second debit
    if happened:
        assert (row["reserved"], row["refunded"]) == (4 * PRICE, 4 * PRICE)
        assert [t["amount"] for t in fake.transactions(customer)] == [4 * PRICE, -4 * PRICE]
        assert ledger_counts(rt, job["id"]) == {"reserve": 1, "refund": 1}
    else:
        assert (row["reserved"], row["refunded"]) == (0, 0)
        assert fake.transactions(customer) == [] and money_posts_since(fake, customer, mark) == []
        assert ledger_counts(rt, job["id"]) == {}
    assert fake.credit_of(customer) == FUNDS == api.get("/credits").json()["amount"]


# --- finding a step among many transactions; the fake's listing is Stripe's -----------------------------


def test_a_step_is_found_past_the_first_page(fake):
    gateway = StripeGateway(load_config({"stripe_secret_key": "sk_test_x", "stripe_api_base": fake.url}, environ={}))
    try:
        customer = fake.add_customer(10_000)
        gateway.debit(customer, 1, "the one we look for", "job_" + "F" * 22)
        for n in range(150):
            gateway.debit(customer, 1, "noise", f"job_{n:022d}")
        mark = len(fake.calls)
        found = gateway.find_transaction(customer, "job_" + "F" * 22, "reserve", since=0)
        assert found == fake.transactions(customer)[0]["id"]
        pages = fake.calls[mark:]
        assert [c.params.get("starting_after") is not None for c in pages] == [False, True]
        assert gateway.find_transaction(customer, "job_" + "F" * 22, "refund", since=0) is None
    finally:
        gateway.close()


def test_the_fake_lists_balance_transactions_as_stripe_does(fake):
    customer = fake.add_customer(100)
    auth = {"Authorization": "Bearer sk_test_x"}
    url = f"{fake.url}/v1/customers/{customer}/balance_transactions"
    with requests.Session() as http:
        for n in range(5):
            created = http.post(
                url, data={"amount": "1", "currency": "usd"}, headers={**auth, "Idempotency-Key": f"l{n}"}
            )
            assert created.status_code == 200, created.text
        ids = [t["id"] for t in reversed(fake.transactions(customer))]  # newest first

        def page(**params: Any) -> requests.Response:
            return http.get(url, params=params, headers=auth)

        first = page(limit=2).json()
        assert (first["object"], [t["id"] for t in first["data"]], first["has_more"]) == ("list", ids[:2], True)
        last = page(limit=2, starting_after=ids[3]).json()
        assert ([t["id"] for t in last["data"]], last["has_more"]) == (ids[4:], False)
        assert [t["id"] for t in page(limit=2, ending_before=ids[4]).json()["data"]] == ids[2:4]
        assert page(**{"created[gte]": "9999999999"}).json()["data"] == []
        for bad in ({"limit": "101"}, {"limit": "0"}, {"colour": "red"}, {"starting_after": "cbtxn_nope"}):
            assert page(**bad).status_code == 400, bad
        assert page(starting_after=ids[0], ending_before=ids[1]).status_code == 400
        assert http.get(url, params={"limit": "1"}).status_code == 401
    fake.expire_idempotency_keys()
    with requests.Session() as http:  # the same key after expiry makes a new transaction
        again = http.post(url, data={"amount": "1", "currency": "usd"}, headers={**auth, "Idempotency-Key": "l0"})
        assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers
    assert len(fake.transactions(customer)) == 6
