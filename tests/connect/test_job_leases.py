"""Job leases: a job whose process died is settled exactly once, by a live process, within the lease time.

The finding: a job cut short by one worker's death was settled only when the whole server
restarted. Now every running job names its owner and the owner's heartbeat; a live worker
claims a job whose heartbeat is older than TELENTIR_JOB_LEASE_SECONDS and settles it, and
the claim is a conditional UPDATE that exactly one process wins.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from telentir.errors import EngineUnavailable
from telentir.runtime import Runtime
from telentir.services import credits, ingest, leases, settlement
from telentir.services.record_writer import RecordWriter

from ..connect_support import PLANS, PRICE
from ..fake_stripe import FakeStripe
from ..money_support import (
    TXNS,
    billing_env,
    billing_runtime,
    funded_user,
    job_row,
    ledger_counts,
    owner_pid,
    post_leads,
    sigkill,
    stored_records,
    worker_pids,
)
from ..private_services import redis_url
from ..scraper_fixture import TestScraper
from ..support import Api, ServerProcess, running_server, runtime_over, wait_until

LEASE = 3.0
FUNDS, ASKED, WRITTEN = 10 * PRICE, 10, 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, scraper: TestScraper, fake: FakeStripe) -> Iterator[ServerProcess]:
    """Two gunicorn workers on Redis, a short lease; users are local or Stripe as they are linked."""
    env = billing_env(scraper.url, fake, TELENTIR_BROKER_URL=redis_url(), TELENTIR_JOB_LEASE_SECONDS=str(LEASE))
    with running_server(tmp_path_factory, "leases", workers=2, **env) as process:
        yield process
        scraper.stopping.set()  # the stalled streams of killed workers end


@pytest.fixture
def start_stalled(server: ServerProcess, rt: Runtime) -> Iterator[Callable[..., tuple[dict[str, Any], Api]]]:
    """Factory: a funded user whose lead job wrote WRITTEN records and then waits on a silent scraper."""
    threads: list[threading.Thread] = []
    apis: list[Api] = []

    def factory(stripe: FakeStripe | None = None) -> tuple[dict[str, Any], Api]:
        user = funded_user(rt, "payg", FUNDS, stripe)
        api = Api(server.url, user["api_key"])
        apis.append(api)
        threads.append(threading.Thread(target=_post_quietly, args=(api,)))
        threads[-1].start()
        return user, api

    yield factory
    for thread in threads:
        thread.join(timeout=5)  # the request died with its worker
    for api in apis:
        api.close()


def _post_quietly(api: Api) -> None:
    try:
        post_leads(api, {"credits": ASKED, "mode": "stall", "after": WRITTEN}, timeout=120)
    except Exception:  # its worker is killed under it: the connection drops
        pass


def wait_for_records(rt: Runtime, user_id: str) -> dict[str, Any]:
    return wait_until(
        lambda: rt.db.query_one("SELECT * FROM jobs WHERE user_id = ? AND created >= ?", (user_id, WRITTEN)),
        timeout=20,
    )


def wait_settled(rt: Runtime, job_id: str, since: float) -> tuple[dict[str, Any], float]:
    """The job once settled by someone, and how long after `since` that took."""
    row = wait_until(
        lambda: (r := job_row(rt, job_id))["settlement"] == "settled" and r["status"] != "running" and r,
        timeout=4 * LEASE + 10,
    )
    return row, time.monotonic() - since


def assert_settled_once(rt: Runtime, row: dict[str, Any], user_id: str) -> None:
    assert (row["status"], row["used"], row["charged"], row["refunded"]) == (
        "interrupted",
        WRITTEN,
        WRITTEN * PRICE,
        FUNDS - WRITTEN * PRICE,
    ), row
    assert row["owner"] is None and row["error"] == settlement.INTERRUPTED
    assert ledger_counts(rt, row["id"]) == {"reserve": 1, "charge": 1, "refund": 1}
    assert stored_records(rt, user_id) == WRITTEN  # nothing was written after the settlement


def assert_server_serves_on(server: ServerProcess, rt: Runtime) -> None:
    user = funded_user(rt, "payg", 2 * PRICE)
    api = Api(server.url, user["api_key"])
    try:
        resp = post_leads(api, {"credits": 2})
        assert resp.status_code == 204, resp.text
        assert api.get(f"/connect/jobs/{resp.headers['X-Connect-Job']}").json()["status"] == "succeeded"
    finally:
        api.close()


# --- one worker of two killed mid-job --------------------------------------------------------------


@pytest.mark.parametrize("billing", ["local", "stripe"])
def test_a_job_of_a_killed_worker_is_settled_once_by_the_other_within_the_lease(
    server, rt, fake, start_stalled, billing
):
    user, api = start_stalled(fake if billing == "stripe" else None)
    job = wait_for_records(rt, user["id"])
    victim = owner_pid(job)
    assert victim in worker_pids(server.proc.pid)
    killed_at = time.monotonic()
    sigkill(victim)

    row, took = wait_settled(rt, job["id"], killed_at)
    # The lease runs out LEASE after the last heartbeat, then the next sweep (every LEASE/3) claims it.
    assert took < 2 * LEASE + 2, took
    assert_settled_once(rt, row, user["id"])
    summary = api.get(f"/connect/jobs/{job['id']}").json()
    assert (summary["status"], summary["credits"]["charged"]) == ("interrupted", WRITTEN * PRICE)
    assert api.get("/credits").json()["amount"] == FUNDS - WRITTEN * PRICE
    if billing == "stripe":
        customer = user["stripe_customer_id"]
        assert [t["amount"] for t in fake.transactions(customer)] == [FUNDS, -(FUNDS - WRITTEN * PRICE)]
        assert fake.credit_of(customer) == FUNDS - WRITTEN * PRICE
    assert server.proc.poll() is None
    assert_server_serves_on(server, rt)


def test_every_worker_killed_and_replaced_settles_the_job_once(server, rt, start_stalled):
    user, _ = start_stalled()
    job = wait_for_records(rt, user["id"])
    master = server.proc.pid
    killed = worker_pids(master)
    killed_at = time.monotonic()
    for pid in killed:
        sigkill(pid)

    row, took = wait_settled(rt, job["id"], killed_at)
    assert took < 2 * LEASE + 10, took  # gunicorn first boots the replacements
    assert_settled_once(rt, row, user["id"])
    assert server.proc.poll() is None and not (worker_pids(master) & killed)
    assert_server_serves_on(server, rt)


def test_a_worker_killed_while_stripe_reserves_leaves_a_reservation_that_is_undone_once(
    server, rt, fake, start_stalled
):
    fake.fail("POST", TXNS, "hang_after", key=r"telentir:.*:reserve")  # Stripe did it; the answer never comes
    user, _ = start_stalled(fake)
    customer = user["stripe_customer_id"]
    job = wait_until(
        lambda: (
            fake.transactions(customer)
            and rt.db.query_one("SELECT * FROM jobs WHERE user_id = ? AND status = 'reserving'", (user["id"],))
        ),
        timeout=20,
    )
    killed_at = time.monotonic()
    sigkill(owner_pid(job))

    row, _ = wait_settled(rt, job["id"], killed_at)
    assert (row["status"], row["reserved"], row["refunded"], row["charged"]) == ("interrupted", FUNDS, FUNDS, 0)
    assert [t["amount"] for t in fake.transactions(customer)] == [FUNDS, -FUNDS]
    assert fake.credit_of(customer) == FUNDS
    reserves = [c for c in fake.money_calls(customer) if c.idempotency_key == f"telentir:{job['id']}:reserve"]
    assert len(reserves) == 2 and reserves[1].replayed  # resolved with the same key: no second debit
    assert ledger_counts(rt, job["id"]) == {"reserve": 1, "refund": 1}
    assert stored_records(rt, user["id"]) == 0


# --- in one process: a late owner, and racing claimants ---------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "data"


def local_runtime(folder: Path, scraper: TestScraper, **overrides: Any) -> Runtime:
    """A runtime with no background threads: its heartbeats happen only when the test calls them."""
    settings = {
        "plans": PLANS,
        "log_level": "WARNING",
        "scraper_hostname": scraper.url,
        "job_lease_seconds": 0.5,
        "connect_batch_size": 5,
        "connect_batch_seconds": 0.05,
        **overrides,
    }
    return runtime_over(folder, **settings)


def test_a_late_owner_loses_its_job_and_writes_nothing_more(folder, scraper):
    owner, taker = local_runtime(folder, scraper), local_runtime(folder, scraper)
    try:
        user = funded_user(owner, "payg", 200 * PRICE)
        request = ingest.parse_request(
            owner, {"repository": "contacts", "path": "/get-leads", "params": {"credits": 200, "mode": "slow"}}
        )
        done: list[str] = []
        thread = threading.Thread(target=lambda: done.append(ingest.connect(owner, user, request, lambda: False)))
        thread.start()
        # The owner never heartbeats (no lease thread): once it has written, its lease runs out.
        row = wait_until(lambda: owner.db.query_one("SELECT * FROM jobs WHERE created >= 10"), timeout=20)
        wait_until(lambda: time.time() - job_row(taker, row["id"])["heartbeat_at"] > 0.5, timeout=5)
        assert settlement.sweep_expired(taker) == 1
        thread.join(timeout=30)
        assert done == [row["id"]]

        final = job_row(taker, row["id"])
        assert final["status"] == "interrupted" and final["used"] < 200
        assert stored_records(taker, user["id"]) == final["used"] == final["created"]  # no unpaid record
        assert final["charged"] == final["used"] * PRICE
        assert ledger_counts(taker, row["id"]) == {"reserve": 1, "charge": 1, "refund": 1}
        assert credits.local_balance(taker, user["id"]) == 200 * PRICE - final["charged"]
    finally:
        owner.close()
        taker.close()


def test_racing_claimants_settle_an_expired_job_exactly_once(folder, scraper):
    starter = local_runtime(folder, scraper)
    claimants = [local_runtime(folder, scraper) for _ in range(4)]
    try:
        user = funded_user(starter, "payg", FUNDS)
        request = ingest.parse_request(
            starter, {"repository": "contacts", "path": "/get-leads", "params": {"credits": ASKED}}
        )
        job = ingest.start_job(starter, user, request, "job_" + "R" * 22)  # its process "dies" right here
        assert job["status"] == "running"
        wait_until(lambda: leases.expired_runs(claimants[0]), timeout=5)
        barrier, settled = threading.Barrier(len(claimants)), []

        def claim(rt: Runtime) -> None:
            barrier.wait()
            settled.append(settlement.sweep_expired(rt))

        threads = [threading.Thread(target=claim, args=(rt,)) for rt in claimants]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(settled) == [0, 0, 0, 1]
        row = job_row(starter, job["id"])
        assert (row["status"], row["charged"], row["refunded"]) == ("interrupted", 0, FUNDS)
        assert ledger_counts(starter, job["id"]) == {"reserve": 1, "charge": 1, "refund": 1}
        assert credits.local_balance(starter, user["id"]) == FUNDS
    finally:
        for rt in [starter, *claimants]:
            rt.close()


def test_a_heartbeaten_job_is_not_claimed_by_another_process(folder, scraper):
    owner, other = (local_runtime(folder, scraper, job_lease_seconds=30) for _ in range(2))
    try:
        user = funded_user(owner, "payg", FUNDS)
        body = {"repository": "contacts", "path": "/get-leads", "params": {"credits": 2}}
        request = ingest.parse_request(owner, body)
        job_id = "job_" + "H" * 22
        owner.job_runner.hold(job_id)
        ingest.start_job(owner, user, request, job_id)
        assert leases.heartbeat(owner) == 1
        assert leases.expired_runs(other) == [] and not leases.claim_run(other, job_id)
        assert settlement.sweep_expired(other) == 0
        row = job_row(other, job_id)
        assert row["status"] == "running" and row["owner"] == owner.job_runner.owner
    finally:
        owner.close()
        other.close()


def test_a_graceful_stop_settles_a_running_job_before_the_process_ends(
    tmp_path_factory: pytest.TempPathFactory, scraper: TestScraper
) -> None:
    """SIGTERM: the job stops at its next record, charges what it wrote and refunds the rest, then the server exits."""
    env = billing_env(scraper.url)
    with running_server(tmp_path_factory, "graceful", workers=1, **env) as server:
        with closing(billing_runtime(server.data_dir)) as rt:
            user = funded_user(rt, "payg", 10 * PRICE)
            api = Api(server.url, user["api_key"])
            answers: list[Any] = []
            slow = {"credits": 10, "mode": "slow", "delay_ms": 300}
            client = threading.Thread(target=lambda: answers.append(post_leads(api, slow, timeout=60)), daemon=True)
            client.start()
            job_id = wait_until(lambda: rt.db.query_value("SELECT max(id) FROM jobs WHERE user_id = ?", (user["id"],)))
            wait_until(lambda: job_row(rt, job_id)["created"] >= 1, timeout=15)
            server.stop()  # SIGTERM to gunicorn: workers finish gracefully
            client.join(timeout=30)
            row = job_row(rt, job_id)  # settled by the stopping process: nothing has run since
    assert (row["status"], row["settlement"]) == ("interrupted", "settled"), row
    assert 1 <= row["used"] < 10 and row["charged"] == row["used"] * PRICE
    assert row["refunded"] == 10 * PRICE - row["charged"]


def test_a_timed_batch_refused_by_an_engine_away_fails_the_job_and_charges_what_was_stored(
    folder, scraper, monkeypatch: pytest.MonkeyPatch
):
    """The flusher's batch refused (503-kind): the job ends failed, naming the engine, not succeeded with leads lost."""
    from contextlib import contextmanager

    from telentir.errors import EngineUnavailable

    rt = local_runtime(folder, scraper, connect_batch_size=1000, connect_batch_seconds=0.1)
    try:
        asked = 60
        user = funded_user(rt, "payg", asked * PRICE)
        real_atomic, away = rt.db.atomic, threading.Event()

        @contextmanager
        def atomic(*args: Any, **kwargs: Any) -> Iterator[Any]:
            if away.is_set() and threading.current_thread().name.startswith("flush-"):
                raise EngineUnavailable("postgresql", "connection refused")
            with real_atomic(*args, **kwargs) as tx:
                yield tx

        monkeypatch.setattr(rt.db, "atomic", atomic)
        request = ingest.parse_request(
            rt, {"repository": "contacts", "path": "/get-leads", "params": {"credits": asked, "mode": "slow"}}
        )
        done: list[str] = []
        thread = threading.Thread(target=lambda: done.append(ingest.connect(rt, user, request, lambda: False)))
        thread.start()
        wait_until(lambda: rt.db.query_one("SELECT * FROM jobs WHERE created >= 3"), timeout=20)
        away.set()
        time.sleep(0.5)  # a timed batch or more is refused meanwhile
        away.clear()
        thread.join(timeout=60)
        final = job_row(rt, done[0])
        assert final["status"] == "failed" and "PostgreSQL" in (final["error"] or ""), final
        assert final["settlement"] == "settled" and final["created"] < asked
        assert stored_records(rt, user["id"]) == final["created"] == final["used"]
        assert final["charged"] == final["used"] * PRICE
        assert credits.local_balance(rt, user["id"]) == asked * PRICE - final["charged"]
    finally:
        rt.close()


# --- the storage away while a job settles -----------------------------------------------------------


@contextmanager
def engine_away(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, when_the_job_ends: bool = True
) -> Iterator[dict[str, Any]]:
    """While `state["away"]` is set, the job's own transactions (any thread but the test's) are refused.

    `when_the_job_ends`: it is set as the job's writer closes (its last batch stored), so the
    first refused transaction is the settlement; else the test sets it. The test clears it to
    bring the engine back; `state["refused"]` counts the refusals.
    """
    real_atomic, real_close, test_thread = rt.db.atomic, RecordWriter.close, threading.current_thread()
    state: dict[str, Any] = {"away": threading.Event(), "refused": 0}

    def close(writer: RecordWriter) -> None:
        real_close(writer)
        if when_the_job_ends:
            state["away"].set()

    @contextmanager
    def atomic(*args: Any, **kwargs: Any) -> Iterator[Any]:
        if state["away"].is_set() and threading.current_thread() is not test_thread:
            state["refused"] += 1
            raise EngineUnavailable("postgresql", "connection refused")
        with real_atomic(*args, **kwargs) as tx:
            yield tx

    monkeypatch.setattr(RecordWriter, "close", close)
    monkeypatch.setattr(rt.db, "atomic", atomic)
    yield state


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({"mode": "normal"}, "succeeded", None),
        ({"mode": "error", "after": 3}, "failed", "The scraper reported an error"),
        # The engine went away mid-job: a batch refused fails the job, and its settlement waits too.
        ({"mode": "slow", "credits": 60}, "failed", "PostgreSQL is unavailable"),
    ],
)
def test_a_settlement_refused_by_an_engine_away_is_retried_by_the_living_owner_with_the_jobs_own_ending(
    folder, scraper, monkeypatch: pytest.MonkeyPatch, params, status, error
):
    """The job ended, then PostgreSQL went away for a moment: the job's own process settles it once it is back.

    It was left to the lease sweep, which settled it `interrupted`, "The server stopped…": the
    money was right, the label wrong (the server never stopped).
    """
    rt = local_runtime(folder, scraper, job_lease_seconds=30)
    try:
        asked = params.get("credits", 5)
        user = funded_user(rt, "payg", asked * PRICE)
        mid_job = params["mode"] == "slow"
        with engine_away(rt, monkeypatch, when_the_job_ends=not mid_job) as engine:
            request = ingest.parse_request(
                rt, {"repository": "contacts", "path": "/get-leads", "params": {"credits": asked, **params}}
            )
            done: list[str] = []
            thread = threading.Thread(target=lambda: done.append(ingest.connect(rt, user, request, lambda: False)))
            thread.start()
            if mid_job:
                wait_until(lambda: rt.db.query_one("SELECT * FROM jobs WHERE created >= 3"), timeout=20)
                engine["away"].set()
            wait_until(lambda: engine["refused"] >= 1, timeout=20)
            time.sleep(0.6)  # a retry or two is refused meanwhile
            engine["away"].clear()
            thread.join(timeout=30)
        job_id = rt.db.query_value("SELECT id FROM jobs WHERE user_id = ?", (user["id"],))
        swept = settlement.sweep_expired(rt, force=True)
        final = job_row(rt, job_id)
        assert (final["status"], final["settlement"], final["owner"]) == (status, "settled", None), final
        assert swept == 0 and done == [job_id]  # settled by its own process, nothing left for the sweep
        assert final["error"] == error or (error is not None and (final["error"] or "").startswith(error)), final
        assert stored_records(rt, user["id"]) == final["created"] == final["used"]
        assert final["charged"] == final["used"] * PRICE and final["charged"] + final["refunded"] == asked * PRICE
        assert ledger_counts(rt, job_id) == {"reserve": 1, "charge": 1, **({"refund": 1} if final["refunded"] else {})}
        assert credits.local_balance(rt, user["id"]) == asked * PRICE - final["charged"]
    finally:
        rt.close()


def test_a_stopping_process_does_not_wait_for_the_engine_to_settle_and_the_sweep_then_interrupts_the_job(
    folder, scraper, monkeypatch: pytest.MonkeyPatch
):
    """Shutdown is unchanged: a stopping process gives its refused settlement up at once; the sweep settles it."""
    rt = local_runtime(folder, scraper, job_lease_seconds=30)
    try:
        user = funded_user(rt, "payg", 5 * PRICE)
        with engine_away(rt, monkeypatch) as engine:
            request = ingest.parse_request(
                rt, {"repository": "contacts", "path": "/get-leads", "params": {"credits": 5}}
            )
            raised: list[BaseException] = []

            def run() -> None:
                try:
                    ingest.connect(rt, user, request, lambda: False)
                except EngineUnavailable as exc:  # the request's answer: 503
                    raised.append(exc)

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            wait_until(lambda: engine["refused"] >= 1, timeout=20)
            rt.job_runner.stopping.set()
            thread.join(timeout=5)
            assert not thread.is_alive() and len(raised) == 1  # it did not wait for the engine
            engine["away"].clear()
        job_id = rt.db.query_value("SELECT id FROM jobs WHERE user_id = ?", (user["id"],))
        assert job_row(rt, job_id)["status"] == "running"
        assert settlement.sweep_expired(rt, force=True) == 1
        final = job_row(rt, job_id)
        assert (final["status"], final["error"], final["charged"]) == ("interrupted", settlement.INTERRUPTED, 5 * PRICE)
        assert ledger_counts(rt, job_id) == {"reserve": 1, "charge": 1}  # every lead stored: nothing to refund
    finally:
        rt.close()


def _job_refunding_two_leads(rt: Runtime, user: dict[str, Any]) -> str:
    """Run a lead job of 5 credits whose scraper fails after 3 leads (2 to refund); its id."""
    params = {"credits": 5, "mode": "error", "after": 3}
    request = ingest.parse_request(rt, {"repository": "contacts", "path": "/get-leads", "params": params})
    return ingest.connect(rt, user, request, lambda: False)


def _refund_calls(fake: FakeStripe, job_id: str) -> list[Any]:
    """The job's refund calls to Stripe (by their idempotency key), in order."""
    return [c for c in fake.calls if c.method == "POST" and c.idempotency_key == f"telentir:{job_id}:refund"]


def test_a_settlement_whose_commit_answer_was_lost_sends_its_stripe_refund_at_once(
    folder, scraper, fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
):
    """PostgreSQL committed the settlement but the answer never came: the retry finds it done, and finishes it.

    The retry's conditional transaction finds the job no longer running. It is this process's
    own settlement (its status and error, its lease kept for the refund), so the Stripe refund
    is sent now, once, not left pending until the lease lapses and another process's refund
    thread sends it.
    """
    rt = local_runtime(folder, scraper, job_lease_seconds=30, stripe_secret_key="sk_test_x", stripe_api_base=fake.url)
    try:
        user = funded_user(rt, "payg", 5 * PRICE, fake)
        real_atomic, real_close, test_thread = rt.db.atomic, RecordWriter.close, threading.current_thread()
        lose = threading.Event()

        def close(writer: RecordWriter) -> None:
            real_close(writer)
            lose.set()  # the job's next transaction is its settlement

        @contextmanager
        def atomic(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with real_atomic(*args, **kwargs) as tx:
                yield tx
            if lose.is_set() and threading.current_thread() is not test_thread:
                lose.clear()  # committed; only the answer is lost
                raise EngineUnavailable("postgresql", "server closed the connection unexpectedly")

        monkeypatch.setattr(RecordWriter, "close", close)
        monkeypatch.setattr(rt.db, "atomic", atomic)
        job_id = _job_refunding_two_leads(rt, user)
        final = job_row(rt, job_id)
        assert (final["status"], final["settlement"], final["owner"]) == ("failed", "settled", None), final
        assert (final["used"], final["charged"], final["refunded"]) == (3, 3 * PRICE, 2 * PRICE), final
        refunds = _refund_calls(fake, job_id)
        assert len(refunds) == 1 and not refunds[0].replayed, refunds
        assert fake.credit_of(user["stripe_customer_id"]) == 5 * PRICE - 3 * PRICE
        assert ledger_counts(rt, job_id) == {"reserve": 1, "charge": 1, "refund": 1}
    finally:
        rt.close()


def test_a_refund_whose_record_is_refused_leaves_the_job_settled_and_the_refund_pending_not_a_503(
    folder, scraper, fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
):
    """The settlement committed and Stripe refunded; recording the refund met the engine away.

    The job keeps its ending and its request its answer (the job's id, not a 503); the refund
    stays pending and is finished later with the same idempotency key, so it is refunded once.
    """
    rt = local_runtime(folder, scraper, job_lease_seconds=30, stripe_secret_key="sk_test_x", stripe_api_base=fake.url)
    try:
        user = funded_user(rt, "payg", 5 * PRICE, fake)
        real_atomic, real_close, test_thread = rt.db.atomic, RecordWriter.close, threading.current_thread()
        after_close: list[int] = []

        def close(writer: RecordWriter) -> None:
            real_close(writer)
            after_close.append(0)

        @contextmanager
        def atomic(*args: Any, **kwargs: Any) -> Iterator[Any]:
            if after_close and threading.current_thread() is not test_thread:
                after_close[0] += 1
                if after_close[0] == 2:  # the settlement is the first; the refund's record the second
                    raise EngineUnavailable("postgresql", "connection refused")
            with real_atomic(*args, **kwargs) as tx:
                yield tx

        monkeypatch.setattr(RecordWriter, "close", close)
        monkeypatch.setattr(rt.db, "atomic", atomic)
        job_id = _job_refunding_two_leads(rt, user)
        pending = job_row(rt, job_id)
        assert (pending["status"], pending["settlement"]) == ("failed", "refund_pending"), pending
        assert fake.credit_of(user["stripe_customer_id"]) == 2 * PRICE  # Stripe refunded already
        monkeypatch.undo()
        assert settlement.retry_pending(rt, force=True) == 1
        final = job_row(rt, job_id)
        assert (final["settlement"], final["owner"], final["refunded"]) == ("settled", None, 2 * PRICE), final
        refunds = _refund_calls(fake, job_id)
        assert [c.replayed for c in refunds] == [False, True]  # sent again with its key: one refund
        assert fake.credit_of(user["stripe_customer_id"]) == 2 * PRICE
        assert ledger_counts(rt, job_id) == {"reserve": 1, "charge": 1, "refund": 1}
    finally:
        rt.close()
