"""POST /api/connect against a real server and a real scraper service (docs/protocol.md §7), local prepaid balances.

Every money test checks three views that must agree: the job summary, the ledger rows (read
through a Runtime over the server's data folder) and `GET /api/credits`. The rule: the
allowance is used first, every lead written beyond it is charged at the plan's price, and
the rest of the reservation goes back.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import pytest
import requests

from telentir.runtime import Runtime
from telentir.scraper import stream_frames
from telentir.services import credits

from ..connect_support import (
    FUNDED,
    MAX_RECORDS,
    PLANS,
    PRICE,
    SCENARIOS,
    TINY_ALLOWANCE,
    Buyer,
    assert_summary,
    connect_env,
    credits_amount,
    ledger_rows,
    money_for,
    read_records,
    run_connect,
    run_scenario,
)
from ..scraper_fixture import TestScraper
from ..support import (
    ROOT,
    Api,
    ServerProcess,
    assert_error,
    free_port,
    make_user,
    running_server,
    runtime_over,
    wait_until,
)

# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, scraper: TestScraper) -> Iterator[ServerProcess]:
    """A real server pointed at the test scraper."""
    with running_server(tmp_path_factory, "connect", **connect_env(scraper.url)) as process:
        yield process
        scraper.stopping.set()  # no stalled stream may hold the server's graceful stop


@pytest.fixture(scope="module")
def rt(server: ServerProcess) -> Iterator[Runtime]:
    """A Runtime over the server's data folder."""
    with closing(runtime_over(server.data_dir, plans=PLANS)) as runtime:
        yield runtime


@pytest.fixture
def new_buyer(rt: Runtime, server: ServerProcess) -> Iterator[Callable[..., Buyer]]:
    """Factory: a user on a plan with a local prepaid balance, and their client."""
    apis: list[Api] = []

    def factory(plan: str = "tiny", balance: int = 0) -> Buyer:
        user = make_user(rt)
        credits.set_plan(rt, user["id"], plan)
        if balance:
            credits.grant_credits(rt, user["id"], balance)
        apis.append(Api(server.url, user["api_key"]))
        return Buyer(user, apis[-1], balance)

    yield factory
    for api in apis:
        api.close()


# --- the failure scenarios: records written stay, charged = written beyond allowance × price -------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario_leaves_summary_records_and_ledger(new_buyer, scraper, rt, scenario):
    account = new_buyer("tiny", FUNDED)
    _job, money = run_scenario(account, scraper, rt, scenario, "local")
    assert credits_amount(account.api) == FUNDED - money.charged == credits.local_balance(rt, account.id)
    assert credits.allowance_used(rt, account.id) == money.allowance_used


# --- clamping ------------------------------------------------------------------------------------


def test_clamped_by_allowance(new_buyer, scraper, rt):
    account = new_buyer("tiny", 0)
    job = run_connect(account.api, {"credits": 10, "mode": "too_many"})
    assert scraper.requests[-1]["params"]["credits"] == TINY_ALLOWANCE
    money = money_for(10, TINY_ALLOWANCE, 0, TINY_ALLOWANCE)
    assert_summary(job, money, "succeeded")
    assert len(read_records(account.api)) == TINY_ALLOWANCE
    assert ledger_rows(rt, job["id"]) == {"allowance": (0, 3, 0, "local"), "charge": (0, 0, 0, "local")}
    assert credits_amount(account.api) == 0


def test_clamped_by_balance(new_buyer, scraper, rt):
    account = new_buyer("payg", 110)  # buys 4 leads at 25; 10 cents stay
    job = run_connect(account.api, {"credits": 10})
    assert scraper.requests[-1]["params"]["credits"] == 4
    money = money_for(10, 0, 110, 4)
    assert_summary(job, money, "succeeded")
    assert money.reserved == money.charged == 100
    assert len(read_records(account.api)) == 4
    assert credits_amount(account.api) == 10


def test_clamped_by_allowance_left_this_month_then_balance(new_buyer, scraper, rt):
    account = new_buyer("tiny", 60)
    first = run_connect(account.api, {"credits": 2})
    assert first["credits"]["allowance_used"] == 2
    second = run_connect(account.api, {"credits": 10})
    assert scraper.requests[-1]["params"]["credits"] == 1 + 2  # 1 left in the allowance, 60 cents buy 2
    assert_summary(second, money_for(10, 1, 60, 3), "succeeded")
    assert credits.allowance_used(rt, account.id) == TINY_ALLOWANCE
    assert credits_amount(account.api) == 10
    assert len(read_records(account.api)) == 5


@pytest.mark.parametrize(
    "plan, balance, requested",
    [("payg", 0, 5), ("payg", PRICE - 1, 5), ("tiny", 500, 0)],
    ids=["nothing", "less-than-one-lead", "zero-asked"],
)
def test_nothing_to_spend_is_204_without_calling_the_scraper(new_buyer, scraper, rt, plan, balance, requested):
    account = new_buyer(plan, balance)
    before = scraper.request_count()
    job = run_connect(account.api, {"credits": requested})
    assert scraper.request_count() == before
    assert_summary(job, money_for(requested, PLANS[plan]["includedLeads"], balance, 0), "succeeded")
    assert job["credits"]["granted"] == 0
    assert ledger_rows(rt, job["id"]) == {}
    assert read_records(account.api) == []
    assert credits_amount(account.api) == balance


def test_allowance_exhausted_and_no_balance_is_zero(new_buyer, scraper, rt):
    account = new_buyer("tiny", 0)
    run_connect(account.api, {"credits": TINY_ALLOWANCE})
    before = scraper.request_count()
    job = run_connect(account.api, {"credits": 1})
    assert scraper.request_count() == before and job["credits"]["granted"] == 0


@pytest.mark.parametrize("alias", ["/GET-LEADS", "/Get-Leads", "/get-LEADS"])
def test_spellings_of_the_leads_path_are_billed_like_it(new_buyer, scraper, rt, alias):
    # Many routers (Express by default) serve these as /get-leads: they must not be free leads.
    # (A trailing slash, `;x`, `.json` and the like are refused outright: see HOSTILE_PATHS.)
    broke, funded = new_buyer("payg", 0), new_buyer("payg", 2 * PRICE)
    before = scraper.request_count()
    assert run_connect(broke.api, {"credits": 5}, path=alias)["credits"]["granted"] == 0
    assert scraper.request_count() == before
    job = run_connect(funded.api, {"credits": 5, "mode": "too_many"}, path=alias)
    assert (job["path"], job["created"], job["credits"]["granted"]) == ("/get-leads", 2, 2)
    assert scraper.requests[-1]["path"] == "/get-leads" and scraper.requests[-1]["params"]["credits"] == 2
    assert credits_amount(funded.api) == 0


def test_other_paths_are_not_billed_and_write_every_record(new_buyer, scraper, rt):
    account = new_buyer("payg", 0)
    job = run_connect(account.api, {"count": 6, "tag": "x"}, path="/search/companies", repository="campaigns")
    assert scraper.requests[-1]["path"] == "/search/companies"
    assert scraper.requests[-1]["params"] == {"count": 6, "tag": "x"}
    assert (job["status"], job["created"], job["repository"], job["path"]) == (
        "succeeded",
        6,
        "campaigns",
        "/search/companies",
    )
    assert job["credits"]["granted"] == job["credits"]["reserved"] == job["credits"]["used"] == 0
    assert [r["n"] for r in read_records(account.api, "campaigns")] == list(range(6))
    assert read_records(account.api, "contacts") == []
    assert ledger_rows(rt, job["id"]) == {}


def test_other_paths_stop_at_the_record_cap(new_buyer, scraper, rt):
    account = new_buyer("payg", 0)
    job = run_connect(account.api, {"count": MAX_RECORDS + 20}, path="/bulk")
    assert (job["status"], job["created"]) == ("succeeded", MAX_RECORDS)
    assert (
        rt.db.query_one("SELECT count(*) FROM objects WHERE user_id = ? AND related_id IS NOT NULL", (account.id,))[0]
        == MAX_RECORDS
    )


def test_client_leaving_cancels_the_job_and_refunds_the_rest(new_buyer, scraper, rt, server):
    account = new_buyer("payg", 1000)  # 40 leads reserved
    body = json.dumps(
        {"repository": "contacts", "path": "/get-leads", "params": {"credits": 40, "mode": "slow", "delay_ms": 100}}
    ).encode()
    before = scraper.request_count()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /api/connect HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer "
            + account.user["api_key"].encode()
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        wait_until(lambda: scraper.request_count() > before and scraper.requests[-1]["sent"] >= 3)
    job_row = wait_until(
        lambda: rt.db.query_one("SELECT * FROM jobs WHERE user_id = ? AND status != 'running'", (account.id,)),
        timeout=10,
    )
    job = account.api.get(f"/connect/jobs/{job_row['id']}").json()
    written = job["created"]
    assert 0 < written < 40, job
    assert_summary(job, money_for(40, 0, 1000, written), "cancelled", error="disconnected")
    assert len(read_records(account.api)) == written
    assert credits_amount(account.api) == 1000 - written * PRICE


# --- path safety: nothing leaves the server ------------------------------------------------------------

HOSTILE_PATHS = [
    "http://evil",
    "https://evil.com/get-leads",
    "//evil.com/x",
    "/../admin",
    "/a/../../b",
    "/..",
    "/./x",
    "/a/.",
    "/%2e%2e/x",
    "/%2F%2Fevil.com",
    "/x?y=1",
    "/x#y",
    "\\evil",
    "/\\evil.com",
    "/a b",
    "/x\x00",
    "/x\n",
    "/x\r\nHost: evil.com",
    "/x\t",
    "/x\x7f",
    "/x\x85",
    "@evil.com",
    "evil.com/x",
    "/" + "a" * 600,
    # Spellings a scraper framework may serve as /get-leads: never sent, so never free leads.
    "/get-leads;x",
    "/get-leads.json",
    "/get-leads%2F",
    "/get-leads/",
    "\\get-leads",
    "//get-leads",
    "/./get-leads",
    "/get-leads//",
    "/get-leads/.",
    "/get-leads:x",
    "/get-leads~",
    "/get-l\u0435ads",  # a Cyrillic e
    "/",
    "",
    None,
    7,
    ["/get-leads"],
    {"p": "/get-leads"},
]


@pytest.fixture(scope="module")
def shared_account(rt: Runtime, server: ServerProcess) -> Iterator[Buyer]:
    """One funded user for the many refusal tests."""
    user = make_user(rt)
    credits.grant_credits(rt, user["id"], 10_000)
    with_api = Buyer(user, Api(server.url, user["api_key"]), 10_000)
    yield with_api
    with_api.api.close()


@pytest.mark.parametrize("path", HOSTILE_PATHS, ids=[repr(p)[:24] for p in HOSTILE_PATHS])
def test_hostile_path_is_refused_and_no_request_leaves(shared_account, scraper, rt, path):
    before = scraper.request_count()
    resp = shared_account.api.post("/connect", json={"repository": "contacts", "path": path, "params": {"credits": 1}})
    assert_error(resp, 400, "invalid_request")
    assert "X-Connect-Job" not in resp.headers
    assert scraper.request_count() == before
    assert rt.db.query_one("SELECT count(*) FROM jobs WHERE user_id = ?", (shared_account.id,))[0] == 0


# --- validation --------------------------------------------------------------------------------------

LEADS = {"repository": "contacts", "path": "/get-leads"}
BAD_BODIES = {
    "repository-unknown": {**LEADS, "repository": "nope", "params": {"credits": 1}},
    "repository-case": {**LEADS, "repository": "Contacts", "params": {"credits": 1}},
    "repository-missing": {"path": "/get-leads", "params": {"credits": 1}},
    "repository-not-string": {**LEADS, "repository": ["contacts"], "params": {"credits": 1}},
    "params-list": {**LEADS, "params": [1]},
    "params-string": {**LEADS, "params": "credits=1"},
    "params-null": {**LEADS, "params": None},
    "params-too-large": {**LEADS, "params": {"credits": 1, "blob": "x" * 70_000}},
    "credits-missing": {**LEADS, "params": {}},
    "credits-negative": {**LEADS, "params": {"credits": -1}},
    "credits-float": {**LEADS, "params": {"credits": 1.5}},
    "credits-whole-float": {**LEADS, "params": {"credits": 2.0}},
    "credits-string": {**LEADS, "params": {"credits": "5"}},
    "credits-bool": {**LEADS, "params": {"credits": True}},
    "credits-null": {**LEADS, "params": {"credits": None}},
    "credits-huge": {**LEADS, "params": {"credits": 10**12}},
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_invalid_body_is_400_and_nothing_happens(shared_account, scraper, rt, body):
    before = scraper.request_count()
    assert_error(shared_account.api.post("/connect", json=body), 400, "invalid_request")
    assert scraper.request_count() == before
    assert rt.db.query_one("SELECT count(*) FROM jobs WHERE user_id = ?", (shared_account.id,))[0] == 0
    assert credits_amount(shared_account.api) == 10_000


def test_non_json_body_is_refused(shared_account):
    assert_error(
        shared_account.api.post(
            "/connect", data=b"credits=1", headers={"Content-Type": "application/x-www-form-urlencoded"}
        ),
        415,
    )
    assert_error(shared_account.api.post("/connect", data=b"{", headers={"Content-Type": "application/json"}), 400)


def test_job_of_another_user_is_404(new_buyer):
    owner, other = new_buyer("tiny"), new_buyer("tiny")
    job = run_connect(owner.api, {"credits": 1})
    assert_error(other.api.get(f"/connect/jobs/{job['id']}"), 404, "not_found")
    for bogus in ("job_" + "A" * 22, "nope", "obj_" + "A" * 22, job["id"] + "x"):
        assert_error(owner.api.get(f"/connect/jobs/{bogus}"), 404, "not_found")


def test_unauthenticated_and_unverified_are_refused(server, rt):
    with closing(Api(server.url)) as anon:
        assert_error(anon.post("/connect", json={**LEADS, "params": {"credits": 1}}), 401)
    user = make_user(rt, verified=False)
    with closing(Api(server.url, user["api_key"])) as api:
        assert_error(api.post("/connect", json={**LEADS, "params": {"credits": 1}}), 403, "phone_not_verified")


def test_second_job_of_a_user_is_429_while_one_runs(new_buyer, scraper):
    account, neighbour = new_buyer("payg", 1000), new_buyer("tiny")
    before = scraper.request_count()
    results: list[dict[str, Any]] = []
    first = threading.Thread(
        target=lambda: results.append(run_connect(account.api, {"credits": 8, "mode": "slow", "delay_ms": 150}))
    )
    with closing(Api(account.api.base_url, account.user["api_key"])) as second_client:
        first.start()
        try:
            wait_until(lambda: scraper.request_count() == before + 1)
            resp = second_client.post("/connect", json={**LEADS, "params": {"credits": 1}})
            assert_error(resp, 429, "rate_limited")
            assert int(resp.headers["Retry-After"]) >= 1
            assert run_connect(neighbour.api, {"credits": 1})["created"] == 1  # the limit is per user
        finally:
            first.join(timeout=30)
        assert results and results[0]["created"] == 8
        assert scraper.request_count() == before + 2
        assert run_connect(second_client, {"credits": 1})["created"] == 1  # the slot came back


# --- credits and billing documents -------------------------------------------------------------------


def test_billing_state_shape_and_usage(new_buyer, rt):
    account = new_buyer("tiny", 75)
    resp = account.api.get("/billing/state")
    assert resp.status_code == 200, resp.text
    state = resp.json()
    assert set(state) == {"plan", "usage", "hasCard", "balance", "paymentFailure"}
    assert {k: state["plan"][k] for k in ("key", *PLANS["tiny"])} == {"key": "tiny", **PLANS["tiny"]}
    assert state["usage"] == {
        "leads": 0,
        "seconds_inbound": 0,
        "seconds_outbound": 0,
        "calls_inbound": 0,
        "calls_outbound": 0,
    }
    assert state["hasCard"] is False and state["balance"] == {"currency": "usd", "amount": 75}
    run_connect(account.api, {"credits": 4})
    state = account.api.get("/billing/state").json()
    assert state["usage"]["leads"] == 4 and state["balance"]["amount"] == 75 - PRICE


# --- the demo scraper -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_scraper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m telentir demo-scraper --port N` in a child process."""
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "telentir", "demo-scraper", "--port", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url), timeout=15, interval=0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _healthy(url: str) -> bool:
    try:
        with requests.get(url + "/healthz", timeout=1) as resp:
            return resp.status_code == 200
    except requests.RequestException:
        return False


def _demo_frames(url: str, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with requests.Session() as session:
        frames = list(
            stream_frames(
                url + path,
                params,
                connect_timeout=5,
                read_timeout=10,
                max_frame_bytes=65536,
                deadline=float("inf"),
                session=session,
            )
        )
    return [json.loads(frame.data) for frame in frames]


@pytest.mark.parametrize("credits_asked", [0, 1, 7, 250])
def test_demo_scraper_streams_exactly_credits_leads(demo_scraper, credits_asked):
    leads = _demo_frames(demo_scraper, "/get-leads", {"credits": credits_asked})
    assert len(leads) == credits_asked
    assert all({"name", "email", "phone", "company"} <= set(lead) for lead in leads)
    assert len({lead["email"] for lead in leads}) == credits_asked


def test_demo_scraper_other_paths_and_bad_credits(demo_scraper):
    assert len(_demo_frames(demo_scraper, "/search", {"count": 3})) == 3
    assert _demo_frames(demo_scraper, "/get-leads", {"credits": -4}) == []
    assert _demo_frames(demo_scraper, "/get-leads", {}) == []


def test_records_commit_on_time_while_the_scraper_is_silent(new_buyer, scraper, rt):
    """A batch commits within TELENTIR_CONNECT_BATCH_SECONDS (0.5 s) even when no further record arrives:
    the three records are stored well before the 1 s read timeout ends the stalled job."""
    account = new_buyer("payg", 1000)
    params = {"credits": 10, "mode": "stall", "after": 3}
    caller = threading.Thread(
        target=lambda: account.api.post(
            "/connect", json={"repository": "contacts", "path": "/get-leads", "params": params}
        ).close()
    )
    caller.start()
    stored_at: list[float] = []

    def job_over() -> bool:
        job = rt.db.query_one("SELECT status, created FROM jobs WHERE user_id = ?", (account.id,))
        if job is not None and job["created"] == 3 and not stored_at:
            stored_at.append(time.monotonic())
        return job is not None and job["status"] != "running"

    wait_until(job_over, timeout=10, interval=0.01)
    ended_at = time.monotonic()
    caller.join(timeout=30)
    assert stored_at, "the records were never committed"
    assert ended_at - stored_at[0] > 0.2, "the records waited for the end of the stream to be committed"
