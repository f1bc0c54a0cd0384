"""Buying through the SDK's calls against a real server and the Stripe fake (docs/protocol.md §7).

Top-ups: the SDK's URL → the fake's Checkout page pays → Stripe's signed webhook → the
balance → a /get-leads job spends it; the ledger, GET /api/credits and the fake's customer
balance agree to the cent. Plans: subscription Checkout, prorated upgrade, cancellation.
The portal. Where Stripe may send the customer back (`returnTo`).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests
import stripe

from telentir import close_app, create_app
from telentir.config import load_config
from telentir.runtime import Runtime
from telentir.services import billing, credits

from ..backends import overrides_for
from ..billing_support import (
    APP_ORIGIN,
    OTHER_ORIGIN,
    PRICE,
    TOPUP_MAX_USD,
    TOPUP_MIN_USD,
    WEBHOOK_SECRET,
    SdkClient,
    SdkError,
    assert_billing_plan,
    billing_env,
    run_leads,
    session_id_of,
)
from ..conftest import make_user
from ..fake_stripe import FakeStripe
from ..support import assert_error

SESSIONS = r"/v1/checkout/sessions"
_PLAN = {"name": "P", "includedLeads": 0, "leadOverageUsdPerLead": 0.25}


def customer_of(rt: Runtime, user: dict[str, Any]) -> str | None:
    return rt.db.query_value("SELECT stripe_customer_id FROM users WHERE id = ?", (user["id"],))


def stripe_ledger(rt: Runtime, user: dict[str, Any]) -> int:
    return int(
        rt.db.query_value(
            "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE user_id = ? AND source = 'stripe'", (user["id"],)
        )
    )


# --- top-ups --------------------------------------------------------------------------------------


def test_top_up_session_is_a_checkout_page_of_the_fake(new_client, rt, fake):
    user, client = new_client()
    back = f"{APP_ORIGIN}/billing?tab=credits#top"
    url = client.create_top_up_session(back)
    assert url.startswith(f"{fake.url}/pay/cs_test_")
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and page.json()["status"] == "open"

    customer = customer_of(rt, user)
    assert customer is not None and customer.startswith("cus_")
    record = fake.customer(customer)
    assert (record.email, record.metadata) == (user["email"], {"telentir_user": user["id"]})
    session = fake.session(session_id_of(url))
    assert (session["mode"], session["customer"], session["client_reference_id"]) == ("payment", customer, user["id"])
    assert session["metadata"] == {"telentir_user": user["id"], "purpose": "topup"}
    assert session["success_url"] == f"{APP_ORIGIN}/billing?tab=credits&checkout=success#top"
    assert session["cancel_url"] == f"{APP_ORIGIN}/billing?tab=credits&checkout=cancel#top"
    (item,) = session["_line_items"]
    assert (item["price"]["unit_amount"], item["price"]["currency"]) == (100, "usd")
    assert (item["quantity"], item["bounds"]) == (TOPUP_MIN_USD, (TOPUP_MIN_USD, TOPUP_MAX_USD))

    second = client.create_top_up_session(back)
    assert second != url and customer_of(rt, user) == customer  # the customer is remembered
    creates = [c for c in fake.calls if c.path == SESSIONS and c.params.get("customer") == customer]
    keys = [c.idempotency_key for c in creates]
    assert len(keys) == 2 and len(set(keys)) == 2 and all(k and k.startswith("telentir:checkout:") for k in keys)
    customer_creates = [
        c for c in fake.calls if c.path == "/v1/customers" and c.status == 200 and c.result_id == customer
    ]
    assert len(customer_creates) == 1


def test_without_return_to_the_first_origin_is_used(new_client, fake):
    _, client = new_client()
    session = fake.session(session_id_of(client.create_top_up_session()))
    assert session["success_url"] == f"{APP_ORIGIN}/?checkout=success"


def test_top_up_then_spend_agree_to_the_cent(new_client, rt, fake, scraper):
    user, client = new_client("payg")
    url = client.create_top_up_session(f"{OTHER_ORIGIN}/credits")
    paid = requests.post(url, data={"quantity": "12"}, timeout=10)  # the customer picks $12 on Stripe's page
    assert paid.status_code == 200 and paid.json()["amount_total"] == 1200
    assert client.get_balance() == {"amount": 0, "currency": "usd"}  # nothing until Stripe says so

    (answer,) = fake.deliver_outbox()
    assert answer.json()["status"] == "applied"
    customer = customer_of(rt, user)
    assert client.get_balance() == {"amount": 1200, "currency": "usd"}
    assert fake.credit_of(customer) == 1200 == stripe_ledger(rt, user)
    (txn,) = fake.transactions(customer)
    row = rt.db.query_one("SELECT * FROM ledger WHERE user_id = ? AND kind = 'topup'", (user["id"],))
    assert (row["amount"], row["source"], row["external_id"], row["note"]) == (
        1200,
        "stripe",
        txn["id"],
        session_id_of(url),
    )
    assert txn["amount"] == -1200

    before = scraper.request_count()
    job = run_leads(client, 10)
    assert scraper.request_count() == before + 1 and scraper.requests[-1]["params"]["credits"] == 10
    assert (job["status"], job["created"], job["credits"]["charged"]) == ("succeeded", 10, 10 * PRICE)
    left = 1200 - 10 * PRICE
    assert client.get_balance()["amount"] == left == fake.credit_of(customer) == stripe_ledger(rt, user)
    assert client.get_state()["balance"] == {"currency": "usd", "amount": left}


@pytest.mark.parametrize(
    "return_to",
    [
        "https://evil.example/billing",
        "https://app.example.test.evil.example/",
        "http://app.example.test/",  # another scheme is another origin
        "https://app.example.test:8443/",
        "//app.example.test/billing",
        "/billing",
        "javascript:alert(1)",
        "https://app.example.test@evil.example/",
        "https://evil.example\\@app.example.test/",
        "https://app.example.test\\@evil.example/",
        "https://app.example.test /billing",
        "https://app.example.test:99999/",
        "https://app.example.test\u2024evil.example/",
        "https://" + "a" * 2100 + ".example/",
    ],
)
def test_a_disallowed_return_to_is_400_and_nothing_reaches_stripe(new_client, rt, fake, return_to):
    user, client = new_client()
    before = len(fake.calls)
    for response in (
        client.top_up_request(return_to),
        client.plan_request("pro", return_to=return_to),
        client.portal_request(return_to),
    ):
        assert_error(response, 400, "invalid_return_to")
    assert len(fake.calls) == before and customer_of(rt, user) is None


@pytest.mark.parametrize("return_to", ["HTTPS://APP.Example.Test/Billing", "https://app.example.test:443/x?y=1"])
def test_origins_compare_as_browsers_do(new_client, fake, return_to):
    _, client = new_client()
    session = fake.session(session_id_of(client.create_top_up_session(return_to)))
    assert session["success_url"].lower().startswith(return_to.split("?")[0].lower())


def test_checkout_creation_retried_with_the_same_key_makes_one_session(new_client, rt, fake):
    user, client = new_client()
    client.open_portal()  # the customer exists first
    customer = customer_of(rt, user)
    fake.fail("POST", SESSIONS, "drop_after")  # made at Stripe, the answer lost on the way
    url = client.create_top_up_session()
    attempts = [c for c in fake.calls if c.path == SESSIONS and c.params.get("customer") == customer]
    assert [c.failure for c in attempts] == ["drop_after", None]
    assert attempts[0].idempotency_key == attempts[1].idempotency_key and attempts[1].replayed
    assert [s["id"] for s in fake.sessions_of(customer)] == [session_id_of(url)]


def test_stripe_failing_is_503_and_stripe_refusing_is_400(new_client, rt, fake):
    user, client = new_client()
    client.open_portal()
    fake.fail("POST", SESSIONS, "500", times=2)
    assert_error(client.top_up_request(), 503, "stripe_unavailable")
    credits.set_stripe_customer(rt, user["id"], "cus_gone")  # Stripe answers 404 for it
    body = assert_error(client.top_up_request(), 400, "stripe_invalid_request")
    assert "cus_gone" not in body["message"]  # Stripe's details stay in the log


# --- plans ----------------------------------------------------------------------------------------


def deliver(fake: FakeStripe) -> list[str]:
    return [answer.json()["status"] for answer in fake.deliver_outbox()]


def test_plan_checkout_upgrade_and_cancellation(new_client, rt, fake, plans):
    user, client = new_client("payg")
    back = f"{APP_ORIGIN}/plans"
    url = client.create_plan_checkout("pro", return_to=back)
    session = fake.session(session_id_of(url))
    assert (session["mode"], session["_line_items"][0]["price"]["id"]) == (
        "subscription",
        plans["pro"]["stripePriceId"],
    )
    assert session["metadata"] == {"telentir_user": user["id"], "purpose": "plan", "plan": "pro"}
    assert session["_subscription_data"]["metadata"] == session["metadata"]
    assert client.get_state()["plan"]["key"] == "payg"

    assert requests.post(url, timeout=10).status_code == 200
    # subscription.created, invoice.paid, then checkout.session.completed (saying nothing newer)
    assert deliver(fake) == ["applied", "applied", "ignored"]
    state = client.get_state()
    assert_billing_plan(state["plan"])
    assert state["plan"]["key"] == "pro" and state["plan"]["monthlyPriceUsd"] == 49
    customer = customer_of(rt, user)
    (subscription,) = fake.subscriptions_of(customer)
    assert state["hasCard"] is True  # Checkout's card became the customer's default
    assert fake.customer(customer).default_payment_method == subscription["default_payment_method"]

    assert_error(client.plan_request("agency", return_to=back), 409, "subscription_exists")
    sessions_before = len(fake.sessions_of(customer))
    assert client.create_plan_checkout("agency", mode="upgrade", return_to=back) == f"{back}?checkout=success"
    assert len(fake.sessions_of(customer)) == sessions_before  # changed in place, no new Checkout
    changed = fake.subscription(subscription["id"])
    assert changed["items"]["data"][0]["price"]["id"] == plans["agency"]["stripePriceId"]
    update = next(c for c in reversed(fake.calls) if c.path == f"/v1/subscriptions/{subscription['id']}")
    assert update.params["proration_behavior"] == "create_prorations" and update.method == "POST"
    assert deliver(fake) == ["applied"]
    assert client.get_state()["plan"]["key"] == "agency"
    assert credits.plan_of(rt, dict(rt.db.query_one("SELECT * FROM users WHERE id = ?", (user["id"],))))["key"] == (
        "agency"
    )

    fake.cancel_subscription(subscription["id"])
    assert deliver(fake) == ["applied"]
    assert client.get_state()["plan"]["key"] == "payg"  # the default plan


def test_upgrade_without_a_subscription_is_a_checkout(new_client, fake):
    _, client = new_client()
    url = client.create_plan_checkout("agency", mode="upgrade")
    assert fake.session(session_id_of(url))["mode"] == "subscription"


@pytest.mark.parametrize(
    "body, code, named",
    [
        ({"plan": "platinum"}, "unknown_plan", "payg, pro, agency, legacy"),
        ({"plan": 5}, "unknown_plan", "payg, pro, agency, legacy"),
        ({}, "unknown_plan", "payg"),
        ({"plan": "legacy"}, "plan_not_purchasable", "'legacy'"),
        ({"plan": "pro", "mode": "downgrade"}, "invalid_request", "upgrade"),
    ],
)
def test_plan_requests_are_checked_before_stripe_is_called(new_client, rt, fake, body, code, named):
    user, client = new_client()
    before = len(fake.calls)
    response = client.send("/billing/plan", "POST", body=json.dumps(body), headers={"content-type": "application/json"})
    assert named in assert_error(response, 400, code)["message"]
    assert len(fake.calls) == before and customer_of(rt, user) is None


def test_plan_body_must_be_json(new_client):
    _, client = new_client()
    assert_error(client.send("/billing/plan", "POST"), 400)
    assert_error(client.send("/billing/plan", "POST", body="plan=pro", headers={"content-type": "text/plain"}), 415)


# --- the portal and the state ---------------------------------------------------------------------


def test_portal_url_from_the_fake(new_client, rt, fake):
    user, client = new_client()
    url = client.open_portal(f"{OTHER_ORIGIN}/account")
    assert url.startswith(f"{fake.url}/portal/bps_")
    portal = requests.get(url, timeout=10).json()
    assert (portal["customer"], portal["return_url"]) == (customer_of(rt, user), f"{OTHER_ORIGIN}/account")


def test_a_cross_site_navigation_to_the_portal_changes_nothing(rt, server):
    """The portal GET may create the Stripe customer, so a cookie session needs X-Requested-With there too."""
    user = make_user(rt, password="correct horse battery")
    browser = requests.Session()
    login = browser.post(
        f"{server.url}/api/auth/login", json={"email": user["email"], "password": "correct horse battery"}, timeout=10
    )
    assert login.status_code == 200 and browser.cookies.get("token")
    navigated = browser.get(f"{server.url}/api/billing/portal?returnTo={OTHER_ORIGIN}/", timeout=10)
    assert_error(navigated, 403, "csrf_header_missing")
    assert customer_of(rt, user) is None  # not linked to Stripe behind the user's back
    own_page = browser.get(
        f"{server.url}/api/billing/portal?returnTo={OTHER_ORIGIN}/", headers={"X-Requested-With": "app"}, timeout=10
    )
    assert own_page.status_code == 200 and customer_of(rt, user) is not None
    browser.close()


@pytest.mark.parametrize("plan, monthly", [("payg", 0), ("pro", 49), ("agency", 199.5), ("legacy", 9)])
def test_state_carries_every_billing_plan_field(new_client, plans, plan, monthly):
    _, client = new_client(plan)
    state = client.get_state()
    assert set(state) == {"plan", "usage", "hasCard", "balance", "paymentFailure"}
    assert_billing_plan(state["plan"])
    assert state["plan"]["key"] == plan and state["plan"]["monthlyPriceUsd"] == monthly
    assert state["plan"]["includedLeads"] == plans[plan]["includedLeads"]
    assert state["plan"]["leadOverageUsdPerLead"] == 0.25
    assert "stripePriceId" not in state["plan"]
    assert (state["hasCard"], state["paymentFailure"]) == (False, None)


def test_the_sdk_raises_on_errors_like_the_sdk(server):
    client = SdkClient(server.url, "ak_not_a_key")
    try:
        with pytest.raises(SdkError) as caught:
            client.create_top_up_session()
        assert caught.value.status == 401 and caught.value.body["error"] == "unauthorized"
    finally:
        client.close()


# --- a configured top-up price, in process ----------------------------------------------------------


def test_a_configured_top_up_price_is_sold_once_and_credits_what_was_chosen(tmp_path, fake):
    price = fake.add_price(custom=(500, 50_000))  # "customer chooses what to pay"
    env = {"TELENTIR_TOPUP_PRICE_ID": price, "TELENTIR_TOPUP_MIN_USD": "5", "TELENTIR_TOPUP_MAX_USD": "5"}
    data_dir = tmp_path / "data"
    config = load_config(
        {"data_dir": data_dir, **overrides_for(data_dir)}, environ=billing_env(fake, {"payg": _PLAN}, **env)
    )
    app = create_app(config)
    try:
        rt, client = app.extensions["telentir"], app.test_client()
        auth = {"Authorization": f"Bearer {make_user(rt)['api_key']}"}
        url = client.post("/api/credits/add", headers=auth).get_json()["url"]
        session = fake.session(session_id_of(url))
        (item,) = session["_line_items"]
        assert (item["price"]["id"], item["quantity"], item["bounds"]) == (price, 1, None)
        (event,) = fake.pay(session["id"], amount=2345)
        fake.take_outbox()
        payload = json.dumps(event, indent=2).encode()
        answer = client.post(
            "/api/stripe/webhook", data=payload, headers={"Stripe-Signature": fake.sign(payload, secret=WEBHOOK_SECRET)}
        )
        assert answer.status_code == 200 and answer.get_json()["status"] == "applied"
        assert client.get("/api/credits", headers=auth).get_json() == {"amount": 2345, "currency": "usd"}
    finally:
        close_app(app)


def test_equal_top_up_bounds_sell_a_fixed_amount():
    config = load_config({"topup_min_usd": 20, "topup_max_usd": 20}, environ={})
    assert billing.topup_line(config) == {
        "price_data": {"currency": "usd", "unit_amount": 100, "product_data": {"name": "Lead credits (USD)"}},
        "quantity": 20,
    }


# --- the fake is as strict as Stripe ---------------------------------------------------------------


def test_the_fakes_signature_is_the_one_stripes_library_verifies(fake):
    payload = json.dumps({"id": "evt_1", "object": "event"}, indent=2).encode()
    header = fake.sign(payload, secret=WEBHOOK_SECRET)
    assert re.fullmatch(r"t=[0-9]+,v1=[0-9a-f]{64}", header)
    assert stripe.WebhookSignature.verify_header(payload.decode(), header, WEBHOOK_SECRET, 300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(payload.decode() + " ", header, WEBHOOK_SECRET, 300)


@pytest.mark.parametrize(
    "change, param",
    [
        ({"mode": "setup"}, "mode"),
        ({"success_url": "not a url"}, "success_url"),
        ({"success_url": None}, "success_url"),
        ({"colour": "red"}, "colour"),
        ({"customer": "cus_missing"}, "customer"),
        ({"line_items[0][quantity]": "1.5"}, "line_items[0][quantity]"),
        ({"line_items[0][price_data][currency]": "eur"}, "line_items[0][price_data][currency]"),
        ({"line_items[0][adjustable_quantity][maximum]": "1000000"}, "line_items[0]"),
        ({"line_items[0][adjustable_quantity][minimum]": "9"}, "line_items[0]"),  # above the quantity
        ({"line_items[0][price_data][sparkle]": "yes"}, "line_items[0][price_data][sparkle]"),
        ({"subscription_data[metadata][a]": "b"}, "subscription_data"),
        ({"metadata[" + "k" * 41 + "]": "v"}, "metadata"),
    ],
)
def test_the_fake_refuses_checkout_sessions_stripe_would_refuse(change, param):
    with FakeStripe() as own:  # its own instance: the module's records only the server's calls
        customer = own.add_customer()
        form = {
            "mode": "payment",
            "customer": customer,
            "success_url": "https://app.example.test/ok",
            "line_items[0][price_data][currency]": "usd",
            "line_items[0][price_data][unit_amount]": "100",
            "line_items[0][price_data][product_data][name]": "Credits",
            "line_items[0][quantity]": "5",
            "line_items[0][adjustable_quantity][enabled]": "true",
            "line_items[0][adjustable_quantity][minimum]": "5",
            "line_items[0][adjustable_quantity][maximum]": "500",
        }
        auth = {"Authorization": "Bearer sk_test_x"}
        with requests.Session() as http:
            ok = http.post(f"{own.url}/v1/checkout/sessions", data=form, headers={**auth, "Idempotency-Key": "ok"})
            assert ok.status_code == 200, ok.text
            bad = {k: v for k, v in {**form, **change}.items() if v is not None}
            refused = http.post(f"{own.url}/v1/checkout/sessions", data=bad, headers={**auth, "Idempotency-Key": "bad"})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param, error


def test_the_fake_refuses_recurring_prices_in_payment_mode_and_one_time_in_subscription_mode():
    with FakeStripe() as own, requests.Session() as http:
        customer, monthly, once = own.add_customer(), own.add_price(900, recurring=True), own.add_price(900)
        auth = {"Authorization": "Bearer sk_test_x"}
        base = {"customer": customer, "success_url": "https://a.example/", "line_items[0][quantity]": "1"}
        for n, (mode, price) in enumerate([("payment", monthly), ("subscription", once)]):
            data = {**base, "mode": mode, "line_items[0][price]": price}
            answer = http.post(
                f"{own.url}/v1/checkout/sessions", data=data, headers={**auth, "Idempotency-Key": str(n)}
            )
            assert answer.status_code == 400 and answer.json()["error"]["param"].startswith("line_items"), answer.text
        pm = http.post(
            f"{own.url}/v1/customers/{customer}",
            data={"invoice_settings[default_payment_method]": "pm_not_attached"},
            headers={**auth, "Idempotency-Key": "pm"},
        )
        assert pm.status_code == 400 and pm.json()["error"]["code"] == "resource_missing"
