"""Money is exact across processes: concurrent lead jobs of one user on several gunicorn workers.

The finding: with Stripe and several workers, the reservation lock covered one process and
the allowance was read outside the write transaction, so two workers could grant the same
allowance and both debit Stripe. Now every grant is computed and recorded in one write
transaction that serialises with every other grant for the user, and a Stripe reservation
is recorded locally before Stripe is called.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from telentir.services import credits

from ..connect_support import PRICE
from ..connect_support import TINY_ALLOWANCE as ALLOWANCE
from ..fake_stripe import FakeStripe
from ..money_support import (
    billing_env,
    funded_user,
    post_leads,
    stored_records,
    user_jobs,
)
from ..private_services import redis_url
from ..scraper_fixture import TestScraper
from ..support import Api, ServerProcess, running_server

FUNDS = 10 * PRICE  # ten paid leads, on top of the plan's allowance of three
CLIENTS, ASKED = 12, 4  # 48 leads asked for, 13 affordable


@pytest.fixture(scope="module", params=[2, 4], ids=["2-workers", "4-workers"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, scraper: TestScraper, fake: FakeStripe
) -> Iterator[ServerProcess]:
    """N gunicorn workers on Redis, Stripe configured (users are in Stripe mode when linked)."""
    env = billing_env(scraper.url, fake, TELENTIR_BROKER_URL=redis_url(), TELENTIR_CONNECT_PER_USER="16")
    with running_server(tmp_path_factory, f"money{request.param}", workers=request.param, **env) as process:
        yield process


def clients_on_several_workers(server: ServerProcess, key: str) -> list[Api]:
    """CLIENTS keep-alive clients whose connections are held by at least two different workers."""
    clients: list[Api] = []
    try:
        for _ in range(50):
            clients = [Api(server.url, key) for _ in range(CLIENTS)]
            pids = {api.get("//healthz").json()["pid"] for api in clients}  # each connection stays with its worker
            if len(pids) >= 2:
                return clients
            for api in clients:
                api.close()
    except BaseException:
        for api in clients:
            api.close()
        raise
    raise AssertionError("the workers never shared the connections")


def fire_together(clients: list[Api]) -> list[requests.Response]:
    """Every client asks for ASKED leads at the same instant."""
    barrier, answers = threading.Barrier(len(clients)), [None] * len(clients)

    def ask(i: int, api: Api) -> None:
        barrier.wait()
        answers[i] = post_leads(api, {"credits": ASKED, "mode": "slow", "delay_ms": 10}, timeout=60)

    threads = [threading.Thread(target=ask, args=(i, api)) for i, api in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    return [answer for answer in answers if answer is not None]


def totals(jobs: list[dict[str, Any]]) -> dict[str, int]:
    return {key: sum(job[key] for job in jobs) for key in ("allowance_part", "granted", "used", "charged", "reserved")}


@pytest.mark.parametrize("billing", ["local", "stripe"])
def test_concurrent_lead_jobs_never_spend_more_than_the_user_has(server, rt, fake, billing):
    user = funded_user(rt, "tiny", FUNDS, fake if billing == "stripe" else None)
    clients = clients_on_several_workers(server, user["api_key"])
    try:
        answers = fire_together(clients)
    finally:
        for api in clients:
            api.close()
    assert [a.status_code for a in answers] == [204] * CLIENTS, [a.text for a in answers]

    jobs = user_jobs(rt, user["id"])
    assert len(jobs) == CLIENTS and all(job["settlement"] == "settled" for job in jobs), jobs
    sums = totals(jobs)
    paid = sum(job["granted"] - job["allowance_part"] for job in jobs)
    assert sums["allowance_part"] <= ALLOWANCE and credits.allowance_used(rt, user["id"]) <= ALLOWANCE
    assert paid * PRICE <= FUNDS and sums["reserved"] <= FUNDS
    assert stored_records(rt, user["id"]) == sums["used"] <= ALLOWANCE + FUNDS // PRICE  # no lead unpaid for
    assert sums["charged"] == (sums["used"] - credits.allowance_used(rt, user["id"])) * PRICE
    if billing == "local":
        # Grants are serialised exactly: every affordable lead is granted, none more.
        assert sums["granted"] == ALLOWANCE + FUNDS // PRICE == sums["used"]
        assert credits.local_balance(rt, user["id"]) == FUNDS - sums["charged"] == 0
    else:
        customer = user["stripe_customer_id"]
        assert all(t["ending_balance"] <= 0 for t in fake.transactions(customer)), fake.transactions(customer)
        assert fake.credit_of(customer) == FUNDS - sums["charged"] >= 0
    api = Api(server.url, user["api_key"])
    try:
        assert api.get("/credits").json()["amount"] == FUNDS - sums["charged"]
    finally:
        api.close()
