"""Bounded amounts: every money and count input has a maximum; past it, a clear error and nothing written.

The finding: `credits grant EMAIL 9223372036854770000` was accepted, the next grant
overflowed SQLite after its ledger row was saved, and from then on `credits show` crashed
and `GET /api/credits` and `/api/billing/state` answered 500; `credits grant EMAIL
99999999999999999999` printed a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
from click.testing import CliRunner, Result

from telentir.cli import main
from telentir.config import ConfigError, load_config
from telentir.errors import BadRequest
from telentir.money import MAX_BALANCE, MAX_GRANT, MAX_INCLUDED_LEADS, MAX_LEADS_PER_JOB, format_amount
from telentir.runtime import Runtime
from telentir.services import credits

from ..backends import env_for
from ..connect_support import PRICE
from ..money_support import billing_env, billing_runtime, funded_user, post_leads
from ..scraper_fixture import TestScraper
from ..support import Api, ServerProcess, assert_error, make_user, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, scraper: TestScraper) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory, "bounds", **billing_env(scraper.url)) as process:
        yield process


@pytest.fixture(scope="module")
def rt(server: ServerProcess) -> Iterator[Runtime]:
    with closing(billing_runtime(server.data_dir)) as runtime:
        yield runtime


@pytest.fixture
def account(server: ServerProcess, rt: Runtime) -> Iterator[tuple[dict[str, Any], Api]]:
    user = funded_user(rt, "payg", 0)
    api = Api(server.url, user["api_key"])
    yield user, api
    api.close()


def cli(server: ServerProcess, scraper: TestScraper, *args: str) -> Result:
    """An admin command over the live server's folder (click's runner: an escaping exception fails the test)."""
    env = {
        **billing_env(scraper.url),
        "TELENTIR_DATA_DIR": str(server.data_dir),
        "TELENTIR_LOG_LEVEL": "WARNING",
        **env_for(server.data_dir),  # the session's storage backend
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def ledger_size(rt: Runtime, user_id: str) -> int:
    return int(rt.db.query_value("SELECT count(*) FROM ledger WHERE user_id = ?", (user_id,)))


def assert_documents_answer(api: Api, amount: int) -> None:
    assert api.get("/credits").json() == {"amount": amount, "currency": "usd"}
    state = api.get("/billing/state")
    assert state.status_code == 200 and state.json()["balance"]["amount"] == amount, state.text


# --- the CLI, against a live server's folder ---------------------------------------------------------


@pytest.mark.parametrize("amount", ["9223372036854770000", "99999999999999999999", str(MAX_GRANT + 1)])
def test_a_grant_past_the_maximum_is_refused_and_writes_nothing(server, scraper, rt, account, amount):
    user, api = account
    done = cli(server, scraper, "credits", "grant", user["email"], amount)
    assert done.exit_code == 2 and "1<=x<=1000000000" in done.output, done.output
    assert ledger_size(rt, user["id"]) == 0
    # Everything keeps working: the next grant, `credits show`, the API documents.
    assert cli(server, scraper, "credits", "grant", user["email"], "500").exit_code == 0
    shown = cli(server, scraper, "credits", "show", user["email"])
    assert shown.exit_code == 0 and "balance: $5.00" in shown.output, shown.output
    assert_documents_answer(api, 500)


def test_the_largest_grant_is_accepted(server, scraper, account):
    user, api = account
    done = cli(server, scraper, "credits", "grant", user["email"], str(MAX_GRANT))
    assert done.exit_code == 0 and f"local balance is now {format_amount(MAX_GRANT)}" in done.output, done.output
    assert_documents_answer(api, MAX_GRANT)


def test_no_grant_takes_a_balance_past_the_ceiling(server, scraper, rt, account):
    user, api = account
    with rt.db.atomic() as tx:  # a balance at the ceiling: nine million of the largest grants, in one row
        credits.ledger_row(tx, user["id"], None, "grant", amount=MAX_BALANCE - 10, note="test: near the ceiling")
    refused = cli(server, scraper, "credits", "grant", user["email"], "11")
    assert refused.exit_code == 1 and "Nothing was granted" in refused.output, refused.output
    assert ledger_size(rt, user["id"]) == 1
    assert cli(server, scraper, "credits", "grant", user["email"], "10").exit_code == 0
    assert_documents_answer(api, MAX_BALANCE)  # exact as a JSON number
    # A lead job at the ceiling: reserve and refund stay exact.
    resp = post_leads(api, {"credits": 3})
    assert resp.status_code == 204, resp.text
    assert_documents_answer(api, MAX_BALANCE - 3 * PRICE)


# --- the service and the API ------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [0, -1, True, MAX_GRANT + 1, 2**63, 2**64])
def test_the_grant_service_refuses_out_of_range_amounts(rt, amount):
    user = make_user(rt)
    with pytest.raises(BadRequest) as refused:
        credits.grant_credits(rt, user["id"], amount)
    assert refused.value.code == "amount_out_of_range" and "1 to 1,000,000,000" in refused.value.message
    assert ledger_size(rt, user["id"]) == 0


@pytest.mark.parametrize("asked", [-1, MAX_LEADS_PER_JOB + 1, 2**63, 2**64, 1.5, "3", True, None])
def test_lead_counts_past_the_maximum_are_refused_before_any_job(rt, account, asked):
    user, api = account
    assert_error(post_leads(api, {"credits": asked}), 400, "invalid_request")
    assert rt.db.query_value("SELECT count(*) FROM jobs WHERE user_id = ?", (user["id"],)) == 0


# --- plan catalogs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plan, words",
    [
        ({"includedLeads": MAX_INCLUDED_LEADS + 1, "leadOverageUsdPerLead": 1}, "includedLeads from 0 to"),
        ({"includedLeads": 2**63, "leadOverageUsdPerLead": 1}, "includedLeads from 0 to"),
        ({"includedLeads": 1, "leadOverageUsdPerLead": 10_000.01}, "at most 10,000"),
        ({"includedLeads": 1, "leadOverageUsdPerLead": 1e300}, "at most 10,000"),
        ({"includedLeads": 1, "leadOverageUsdPerLead": True}, "leadOverageUsdPerLead"),
    ],
)
def test_plan_prices_and_allowances_are_bounded(plan, words):
    catalog = json.dumps({"x": {"name": "X", **plan}})
    with pytest.raises(ConfigError, match=words):
        load_config(environ={"TELENTIR_PLANS": catalog, "TELENTIR_DEFAULT_PLAN": "x"})


def test_the_largest_plan_cannot_overflow_a_job() -> None:
    catalog = {"x": {"name": "X", "includedLeads": MAX_INCLUDED_LEADS, "leadOverageUsdPerLead": 10_000}}
    config = load_config(environ={"TELENTIR_PLANS": json.dumps(catalog), "TELENTIR_DEFAULT_PLAN": "x"})
    price = credits.price_cents({"key": "x", **config.plans["x"]})
    assert price * MAX_LEADS_PER_JOB <= MAX_BALANCE  # the largest possible reservation
