"""POST /api/stripe/webhook against a real server: signatures, replays, order, failures (docs/protocol.md §7).

Every event here is made by the Stripe fake and delivered signed exactly as Stripe signs
(`Stripe-Signature: t=<time>,v1=<HMAC-SHA256 of "t.body">`, pretty-printed JSON body).
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from telentir.runtime import Runtime

from ..billing_support import (
    SdkClient,
    session_id_of,
)
from ..fake_stripe import FakeStripe
from ..support import assert_error

TXNS = r"/v1/customers/[^/]+/balance_transactions"


def customer_of(rt: Runtime, user: dict[str, Any]) -> str:
    return str(rt.db.query_value("SELECT stripe_customer_id FROM users WHERE id = ?", (user["id"],)))


def plan_of(rt: Runtime, user: dict[str, Any]) -> str:
    return str(rt.db.query_value("SELECT plan FROM users WHERE id = ?", (user["id"],)))


def paid_top_up(client: SdkClient, fake: FakeStripe, dollars: int = 20) -> dict[str, Any]:
    """A top-up paid on the fake's page; returns its checkout.session.completed event (not delivered)."""
    (event,) = fake.pay(session_id_of(client.create_top_up_session()), quantity=dollars)
    fake.take_outbox()
    return event


def status_of(response: requests.Response) -> str:
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"received", "id", "status"}, response.json()
    return str(response.json()["status"])


def event_rows(rt: Runtime, event_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in rt.db.query("SELECT * FROM stripe_events WHERE id = ?", (event_id,))]


# --- signatures ---------------------------------------------------------------------------------


def _bad_deliveries(fake: FakeStripe, event: dict[str, Any]) -> dict[str, Callable[[], requests.Response]]:
    body = json.dumps(event, indent=2).encode()
    now = int(time.time())
    forged = copy.deepcopy(event)
    forged["data"]["object"]["amount_total"] *= 100
    return {
        "wrong-secret": lambda: fake.deliver(event, secret="whsec_someone_else"),
        "no-header": lambda: fake.deliver(event, signature=""),
        "garbage-header": lambda: fake.deliver(event, signature="garbage"),
        "no-v1": lambda: fake.deliver(event, signature=fake.sign(body).replace("v1=", "v0=")),
        "stale": lambda: fake.deliver(event, timestamp=now - 301),
        "tampered-body": lambda: fake.deliver(forged, signature=fake.sign(body)),
        "re-serialized": lambda: fake.deliver(event, signature=fake.sign(json.dumps(event).encode())),
        "signed-not-utf8": lambda: fake.deliver(event, body=b"\xff\xfe{}"),
        "signed-not-json": lambda: fake.deliver(event, body=b"not json"),
        "signed-not-object": lambda: fake.deliver(event, body=b"[1, 2]"),
        "signed-no-id": lambda: fake.deliver(event, body=json.dumps({"type": "x", "data": {}}).encode()),
        "deeply-nested": lambda: fake.deliver(event, body=b"[" * 200_000),
        "deeply-nested-object": lambda: fake.deliver(event, body=b'{"a":' * 100_000),
    }


def test_bad_signatures_change_nothing(new_client, rt, fake):
    user, client = new_client()
    event = paid_top_up(client, fake)
    for case, send in _bad_deliveries(fake, event).items():
        response = send()
        assert response.status_code == 400, (case, response.text)
        assert_error(response, 400, "invalid_event" if case == "signed-no-id" else "invalid_signature")
    assert client.get_balance()["amount"] == 0 and fake.transactions(customer_of(rt, user)) == []
    assert event_rows(rt, event["id"]) == []

    assert status_of(fake.deliver(event, timestamp=int(time.time()) - 290)) == "applied"  # within the 300 s
    assert client.get_balance()["amount"] == 2000


def test_the_webhook_needs_no_credential_and_ignores_one(server, fake):
    response = requests.post(
        f"{server.url}/api/stripe/webhook", data=b"{}", headers={"Authorization": "Bearer nonsense"}, timeout=10
    )
    assert_error(response, 400, "invalid_signature")


# --- exactly once -----------------------------------------------------------------------------------


def test_a_replayed_event_is_a_200_that_changes_nothing(new_client, rt, fake):
    user, client = new_client()
    event = paid_top_up(client, fake, 15)
    assert status_of(fake.deliver(event)) == "applied"
    assert status_of(fake.deliver(event)) == "replayed"
    assert status_of(fake.deliver(event, timestamp=int(time.time()) + 1)) == "replayed"  # a new signature, same id
    customer = customer_of(rt, user)
    assert client.get_balance()["amount"] == 1500 == fake.credit_of(customer)
    assert len(fake.transactions(customer)) == 1
    assert rt.db.query_value("SELECT count(*) FROM ledger WHERE user_id = ? AND kind = 'topup'", (user["id"],)) == 1
    (row,) = event_rows(rt, event["id"])
    assert (row["status"], row["attempts"], row["user_id"], row["object_id"]) == (
        "applied",
        1,
        user["id"],
        event["data"]["object"]["id"],
    )


def test_concurrent_deliveries_of_one_event_credit_once(new_client, rt, fake):
    user, client = new_client()
    event = paid_top_up(client, fake, 7)
    answers: list[requests.Response] = []
    threads = [threading.Thread(target=lambda: answers.append(fake.deliver(event))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # A delivery that met another still talking to Stripe with the same key gets a 503: Stripe retries it.
    statuses = sorted(a.json().get("status") or a.json()["error"] for a in answers)
    assert statuses.count("applied") == 1 and set(statuses) <= {"applied", "replayed", "stripe_unavailable"}
    assert status_of(fake.deliver(event)) == "replayed"
    assert client.get_balance()["amount"] == 700 == fake.credit_of(customer_of(rt, user))
    assert len(fake.transactions(customer_of(rt, user))) == 1


def test_another_event_for_a_credited_session_credits_nothing(new_client, rt, fake):
    user, client = new_client()
    event = paid_top_up(client, fake, 9)
    assert status_of(fake.deliver(event)) == "applied"
    again = {
        **copy.deepcopy(event),
        "id": "evt_another_delivery_path",
        "type": "checkout.session.async_payment_succeeded",
    }
    assert status_of(fake.deliver(again)) == "ignored"
    assert client.get_balance()["amount"] == 900 and len(fake.transactions(customer_of(rt, user))) == 1


def test_an_async_payment_is_credited_when_it_succeeds(new_client, rt, fake):
    user, client = new_client()
    url = client.create_top_up_session()
    (completed,) = fake.pay(session_id_of(url), quantity=30, delayed=True)
    assert completed["data"]["object"]["payment_status"] == "unpaid"
    assert status_of(fake.deliver(completed)) == "ignored"
    assert client.get_balance()["amount"] == 0
    succeeded = fake.settle(session_id_of(url))
    assert status_of(fake.deliver(succeeded)) == "applied"
    assert client.get_balance()["amount"] == 3000 == fake.credit_of(customer_of(rt, user))


@pytest.mark.parametrize("mode", ["500", "drop", "drop_after"])
def test_stripe_failing_during_a_credit_is_503_and_the_redelivery_credits_once(new_client, rt, fake, mode):
    user, client = new_client()
    event = paid_top_up(client, fake, 11)
    customer = customer_of(rt, user)
    fake.fail("POST", TXNS, mode)
    assert_error(fake.deliver(event), 503, "stripe_unavailable")
    (row,) = event_rows(rt, event["id"])
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert client.get_balance()["amount"] == (1100 if mode == "drop_after" else 0)  # Stripe's own balance
    assert rt.db.query_value("SELECT count(*) FROM ledger WHERE user_id = ? AND kind = 'topup'", (user["id"],)) == 0

    assert status_of(fake.deliver(event)) == "applied"  # Stripe delivers it again
    (row,) = event_rows(rt, event["id"])
    assert (row["status"], row["attempts"]) == ("applied", 2)
    assert client.get_balance()["amount"] == 1100 == fake.credit_of(customer)
    assert len(fake.transactions(customer)) == 1
    keys = {c.idempotency_key for c in fake.money_calls(customer)}
    assert keys == {f"telentir:topup:{event['data']['object']['id']}"}


# --- subscriptions: order does not matter -------------------------------------------------------------


def subscribed(client: SdkClient, fake: FakeStripe, plan: str = "pro") -> tuple[str, list[dict[str, Any]]]:
    """A paid plan Checkout; returns the subscription id and the events it made (not delivered)."""
    events = fake.pay(session_id_of(client.create_plan_checkout(plan)))
    fake.take_outbox()
    return events[-1]["data"]["object"]["subscription"], events


def at(event: dict[str, Any], created: int) -> dict[str, Any]:
    """The event as if Stripe had made it at `created` (events of one second are otherwise unordered)."""
    return {**copy.deepcopy(event), "created": created}


def _lifecycle(rt: Runtime, client: SdkClient, fake: FakeStripe, plans: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Subscribe to pro, upgrade to agency, cancel: the events by name, one second apart."""
    subscription, events = subscribed(client, fake)
    t0 = events[0]["created"]
    upgraded = fake.subscription(subscription)
    item = upgraded["items"]["data"][0]
    rt.stripe.update_subscription(  # type: ignore[union-attr]
        subscription, {"items": [{"id": item["id"], "price": plans["agency"]["stripePriceId"]}]}, f"k{subscription}"
    )
    (updated,) = fake.take_outbox()
    deleted = fake.cancel_subscription(subscription)
    fake.take_outbox()
    created, invoice, completed = (at(e, t0) for e in events)
    return {
        "created": created,
        "invoice": invoice,
        "completed": completed,
        "updated": at(updated, t0 + 1),
        "deleted": at(deleted, t0 + 2),
    }


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=lambda o: "".join(map(str, o)))
def test_out_of_order_subscription_events_leave_the_latest_plan(new_client, rt, fake, plans, order):
    user, client = new_client()
    events = _lifecycle(rt, client, fake, plans)
    steps = [events["created"], events["updated"], events["deleted"]]
    for index in order:
        status_of(fake.deliver(steps[index]))
    status_of(fake.deliver(events["completed"]))  # checkout.session.completed, late: says nothing newer
    assert plan_of(rt, user) == "payg" and client.get_state()["plan"]["key"] == "payg"

    # Without the cancellation, whatever the order: the upgrade is the latest word.
    user, client = new_client()
    events = _lifecycle(rt, client, fake, plans)
    steps = [[events["created"], events["invoice"], events["completed"]][index] for index in order]
    steps.insert(order[0], events["updated"])  # the upgrade first, second or third
    for event in steps:
        status_of(fake.deliver(event))
    assert plan_of(rt, user) == "agency"


def test_events_of_one_second_that_disagree_are_settled_by_stripe(new_client, rt, fake, plans):
    user, client = new_client()
    events = _lifecycle(rt, client, fake, plans)
    created, updated = events["created"], events["updated"]
    t0, subscription = created["created"], created["data"]["object"]["id"]

    def reads() -> list[Any]:
        return [c for c in fake.calls if (c.method, c.path) == ("GET", f"/v1/subscriptions/{subscription}")]

    status_of(fake.deliver(at(updated, t0)))  # the upgrade, stamped in the same second as the creation
    assert plan_of(rt, user) == "agency" and reads() == []
    assert status_of(fake.deliver(created)) == "applied"  # disagrees at that second: Stripe is asked, says canceled
    assert plan_of(rt, user) == "payg" and len(reads()) == 1
    assert status_of(fake.deliver({**at(updated, t0), "id": "evt_same_second_again"})) == "applied"
    assert plan_of(rt, user) == "payg"  # Stripe's answer again, whatever arrives at that second


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0), (2, 0, 1)], ids=lambda o: "".join(map(str, o)))
def test_a_deleted_subscription_that_was_replaced_does_not_downgrade(new_client, rt, fake, plans, order):
    user, client = new_client()
    old, old_events = subscribed(client, fake, "pro")
    # The customer also subscribes to agency (say, from the Dashboard), then the old subscription ends.
    params = {
        "mode": "subscription",
        "customer": customer_of(rt, user),
        "success_url": "https://app.example.test/",
        "line_items": [{"price": plans["agency"]["stripePriceId"], "quantity": 1}],
        "subscription_data": {"metadata": {"telentir_user": user["id"]}},
    }
    session = rt.stripe.create_checkout_session(params, f"k-{old}")  # type: ignore[union-attr]
    new_events = fake.pay(session["id"])
    deleted = fake.cancel_subscription(old)
    fake.take_outbox()
    t0 = old_events[0]["created"]
    steps = [at(old_events[0], t0), at(new_events[0], t0 + 1), at(deleted, t0 + 2)]
    for index in order:
        status_of(fake.deliver(steps[index]))
    assert plan_of(rt, user) == "agency"


# --- invoices and the rest --------------------------------------------------------------------------


def test_a_failed_payment_is_visible_until_an_invoice_is_paid(new_client, rt, fake):
    _, client = new_client()
    subscription, events = subscribed(client, fake, "pro")
    for event in events:
        status_of(fake.deliver(event))
    failed, past_due = fake.fail_invoice(subscription)
    fake.take_outbox()
    t0 = events[0]["created"]
    assert status_of(fake.deliver(at(failed, t0 + 1))) == "applied"
    assert status_of(fake.deliver(at(past_due, t0 + 1))) == "applied"
    state = client.get_state()
    invoice = failed["data"]["object"]
    assert state["paymentFailure"] == {
        "invoice": invoice["id"],
        "amountDue": 4900,
        "currency": "usd",
        "at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t0 + 1)),
    }
    assert state["plan"]["key"] == "pro"  # past due is still the plan

    paid, _ = fake.pay_invoice(invoice["id"])
    fake.take_outbox()
    assert status_of(fake.deliver(at(paid, t0 + 2))) == "applied"
    assert status_of(fake.deliver(at(failed, t0 + 1))) == "replayed"
    assert status_of(fake.deliver({**at(failed, t0 + 1), "id": "evt_failed_again_late"})) == "ignored"
    assert client.get_state()["paymentFailure"] is None


@pytest.mark.parametrize("kind", ["customer.created", "payment_intent.succeeded", "invoice.finalized"])
def test_unknown_event_types_are_acknowledged_and_ignored(rt, fake, kind):
    event = {
        "id": f"evt_unknown_{kind.replace('.', '_')}",
        "object": "event",
        "type": kind,
        "created": int(time.time()),
        "data": {"object": {"id": "obj_1", "object": kind.split(".")[0]}},
    }
    assert status_of(fake.deliver(event)) == "ignored"
    assert event_rows(rt, event["id"])[0]["status"] == "ignored"


@pytest.mark.parametrize(
    "odd",
    [
        {"metadata": ["not", "an", "object"]},
        {"metadata": {"purpose": "topup", "telentir_user": 5}, "amount_total": "1200"},
        {"metadata": {"purpose": "plan", "plan": ["pro"]}, "mode": "subscription", "subscription": {"id": 7}},
        {"total_details": "none", "amount_total": None, "customer": {"id": None}},
    ],
)
def test_signed_events_with_odd_objects_are_ignored_not_500(new_client, rt, fake, odd):
    user, client = new_client()
    event = paid_top_up(client, fake)
    session = {**event["data"]["object"], **odd}  # the user is still found through the customer
    response = fake.deliver({**event, "data": {"object": session}})
    assert status_of(response) == "ignored"
    assert client.get_balance()["amount"] == 0 and fake.transactions(customer_of(rt, user)) == []


def test_events_for_no_user_of_this_server_are_ignored(rt, fake):
    session = {"id": "cs_foreign", "object": "checkout.session", "mode": "payment", "customer": "cus_foreign"}
    event = {"id": "evt_foreign", "type": "checkout.session.completed", "created": int(time.time())}
    assert status_of(fake.deliver({**event, "data": {"object": session}})) == "ignored"
