"""`telentir billing sync EMAIL` repairs what missed webhooks left out; `telentir billing events [--failed]`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from telentir.cli import main

from ..billing_support import (
    session_id_of,
)
from ..conftest import make_user
from ..support import ServerProcess, server_env

TXNS = r"/v1/customers/[^/]+/balance_transactions"


@pytest.fixture
def cli(server: ServerProcess, env: dict[str, str]) -> Callable[..., Result]:
    """Run `telentir ARGS…` over the server's data folder, with its settings."""

    def run(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=server_env(server.data_dir, env))

    return run


def test_sync_credits_a_top_up_whose_webhook_never_came_once(new_client, rt, fake, cli):
    user, client = new_client()
    url = client.create_top_up_session()
    (lost,) = fake.pay(session_id_of(url), quantity=15)
    fake.take_outbox()  # the webhook never arrives
    assert client.get_balance()["amount"] == 0

    result = cli("billing", "sync", user["email"])
    assert result.exit_code == 0, result.output
    assert f"credited missed top-up {session_id_of(url)}: $15.00" in result.output
    assert "balance: $15.00" in result.output
    assert client.get_balance()["amount"] == 1500

    again = cli("billing", "sync", user["email"])
    assert again.exit_code == 0 and "credited" not in again.output, again.output
    assert fake.deliver(lost).json()["status"] == "ignored"  # the late webhook finds it credited
    customer = rt.db.query_value("SELECT stripe_customer_id FROM users WHERE id = ?", (user["id"],))
    assert client.get_balance()["amount"] == 1500 == fake.credit_of(customer)
    assert len(fake.transactions(customer)) == 1
    assert rt.db.query_value("SELECT count(*) FROM ledger WHERE user_id = ? AND kind = 'topup'", (user["id"],)) == 1


def test_a_top_up_credited_long_ago_and_lost_here_is_found_not_credited_again(new_client, rt, fake, cli):
    """Past Stripe's 24 h idempotency window (a restored backup lost the local record): look the credit up first."""
    user, client = new_client()
    url = client.create_top_up_session()
    (paid,) = fake.pay(session_id_of(url), quantity=15)
    assert fake.deliver(paid).json()["status"] == "applied"
    customer = rt.db.query_value("SELECT stripe_customer_id FROM users WHERE id = ?", (user["id"],))
    with rt.db.atomic() as tx:  # what a backup from before the top-up holds
        tx.execute("DELETE FROM stripe_topups WHERE user_id = ?", (user["id"],))
        tx.execute("DELETE FROM ledger WHERE user_id = ? AND kind = 'topup'", (user["id"],))
    with fake._lock:  # the session, and so its credit, is older than the keys Stripe keeps
        fake.billing.sessions[session_id_of(url)]["created"] -= 25 * 3600
    fake.expire_idempotency_keys()

    result = cli("billing", "sync", user["email"])
    assert result.exit_code == 0, result.output
    assert fake.credit_of(customer) == 1500 and len(fake.transactions(customer)) == 1  # not credited twice
    assert rt.db.query_value("SELECT count(*) FROM ledger WHERE user_id = ? AND kind = 'topup'", (user["id"],)) == 1
    assert client.get_balance()["amount"] == 1500


def test_sync_sets_the_plan_and_the_card_of_a_subscription_whose_webhooks_never_came(new_client, fake, cli):
    user, client = new_client()
    fake.pay(session_id_of(client.create_plan_checkout("pro")))
    fake.take_outbox()
    assert client.get_state()["plan"]["key"] == "payg" and client.get_state()["hasCard"] is False

    result = cli("billing", "sync", user["email"])
    assert result.exit_code == 0, result.output
    assert "plan: payg -> pro" in result.output and " active" in result.output
    assert "card on file: yes" in result.output
    state = client.get_state()
    assert (state["plan"]["key"], state["hasCard"]) == ("pro", True)


def test_sync_of_an_unlinked_user_says_so(rt, cli):
    user = make_user(rt)
    result = cli("billing", "sync", user["email"])
    assert result.exit_code == 1 and "not linked to a Stripe customer" in result.output


def test_events_lists_processed_events_and_failed_ones(new_client, fake, cli):
    _, client = new_client()
    (good,) = fake.pay(session_id_of(client.create_top_up_session()), quantity=5)
    (bad,) = fake.pay(session_id_of(client.create_top_up_session()), quantity=6)
    fake.take_outbox()
    assert fake.deliver(good).status_code == 200
    fake.fail("POST", TXNS, "500")
    assert fake.deliver(bad).status_code == 503

    listed = cli("billing", "events")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split("\t")[1:5] == [bad["id"], "checkout.session.completed", "failed", lines[0].split("\t")[4]]
    assert any(line.split("\t")[1:4] == [good["id"], "checkout.session.completed", "applied"] for line in lines)

    failed = cli("billing", "events", "--failed")
    assert [line.split("\t")[1] for line in failed.output.splitlines()] == [bad["id"]]
    assert "Stripe could not be reached" in failed.output

    assert fake.deliver(bad).status_code == 200  # Stripe's next delivery
    assert cli("billing", "events", "--failed").output == ""
    assert cli("billing", "events", "--limit", "1").output.splitlines()[0].split("\t")[1] == bad["id"]
