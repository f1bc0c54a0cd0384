"""Shared by the connect tests (local balances, Stripe, crashes): plans, money, checks of jobs and ledgers."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from telentir.runtime import Runtime

from .dataplane_support import TIMESTAMP, decrypt, load_private, unwrap
from .scraper_fixture import TestScraper
from .support import Api

PRICE = 25  # cents per lead beyond the allowance, in every plan below
TINY_ALLOWANCE = 3
PLANS = {
    "starter": {"name": "Starter", "includedLeads": 100, "leadOverageUsdPerLead": 0.25},
    "tiny": {"name": "Tiny", "includedLeads": TINY_ALLOWANCE, "leadOverageUsdPerLead": 0.25},
    "payg": {"name": "Pay as you go", "includedLeads": 0, "leadOverageUsdPerLead": 0.25},
}
MAX_RECORDS = 300  # the cap of a job that no credits limit
JOB_ID = re.compile(r"job_[A-Za-z0-9]{22}")


def connect_env(scraper_url: str, **extra: str) -> dict[str, str]:
    """Settings of a connect test server: the test scraper, a 1 s read timeout, one job per user."""
    return {
        "SCRAPER_HOSTNAME": scraper_url,
        "TELENTIR_PLANS": json.dumps(PLANS),
        "TELENTIR_CONNECT_READ_TIMEOUT": "1",
        "TELENTIR_CONNECT_PER_USER": "1",
        "TELENTIR_CONNECT_MAX_FRAME_BYTES": "16384",
        "TELENTIR_CONNECT_MAX_RECORDS": str(MAX_RECORDS),
        "TELENTIR_REFUND_RETRY_SECONDS": "3600",
        **extra,
    }


@dataclass
class Buyer:
    """A user who buys leads on the server: their record, their client, and the balance they started with."""

    user: dict[str, Any]
    api: Api
    balance: int = 0

    @property
    def id(self) -> str:
        return str(self.user["id"])


@dataclass(frozen=True)
class Money:
    """What a lead job must reserve, charge and refund, from the plan and what it wrote."""

    requested: int
    allowance_part: int
    reserved: int
    written: int

    @property
    def granted(self) -> int:
        return self.allowance_part + self.reserved // PRICE

    @property
    def allowance_used(self) -> int:
        return min(self.written, self.allowance_part)

    @property
    def charged(self) -> int:
        return (self.written - self.allowance_used) * PRICE

    @property
    def refunded(self) -> int:
        return self.reserved - self.charged


def money_for(requested: int, allowance_left: int, balance: int, written: int) -> Money:
    """Clamp like the spec: allowance first, then what the balance buys."""
    allowance_part = min(requested, allowance_left)
    paid = min(requested - allowance_part, balance // PRICE)
    return Money(requested, allowance_part, paid * PRICE, written)


def run_connect(api: Api, params: Any, path: str = "/get-leads", repository: str = "contacts") -> dict[str, Any]:
    """POST /api/connect, expect 204 with X-Connect-Job, return the job summary."""
    resp = api.post("/connect", json={"repository": repository, "path": path, "params": params})
    assert resp.status_code == 204, (resp.status_code, resp.text[:500])
    assert resp.content == b""
    job_id = resp.headers["X-Connect-Job"]
    assert JOB_ID.fullmatch(job_id), job_id
    summary = api.get(f"/connect/jobs/{job_id}")
    assert summary.status_code == 200, summary.text
    return summary.json()


def assert_summary(job: dict[str, Any], money: Money, status: str, skipped: int = 0, error: str | None = None) -> None:
    """The job summary has the spec's shape and the expected numbers."""
    assert set(job) == {
        "id",
        "status",
        "repository",
        "path",
        "created",
        "skipped",
        "credits",
        "error",
        "started_at",
        "finished_at",
    }, job
    assert (job["status"], job["created"], job["skipped"]) == (status, money.written, skipped), job
    assert {
        k: job["credits"][k]
        for k in ("requested", "granted", "allowance_used", "reserved", "used", "refunded", "charged", "settlement")
    } == {
        "requested": money.requested,
        "granted": money.granted,
        "allowance_used": money.allowance_used,
        "reserved": money.reserved,
        "used": money.written,
        "refunded": money.refunded,
        "charged": money.charged,
        "settlement": "settled",
    }, job
    if error is None:
        assert job["error"] is None, job
    else:
        assert error in (job["error"] or ""), job
    assert TIMESTAMP.fullmatch(job["started_at"]) and TIMESTAMP.fullmatch(job["finished_at"]), job
    assert job["finished_at"] >= job["started_at"]


def ledger_rows(rt: Runtime, job_id: str) -> dict[str, tuple[int, int, int, str]]:
    """The job's ledger rows: kind → (amount, leads, charged, source); each kind at most once."""
    rows = rt.db.query("SELECT kind, amount, leads, charged, source FROM ledger WHERE job_id = ?", (job_id,))
    found = {r["kind"]: (r["amount"], r["leads"], r["charged"], r["source"]) for r in rows}
    assert len(found) == len(rows), rows
    return found


def expected_ledger(money: Money, source: str) -> dict[str, tuple[int, int, int, str]]:
    """The ledger rows a settled lead job must leave (none when nothing was granted)."""
    if money.granted == 0:
        return {}
    rows = {"charge": (0, 0, money.charged, source)}
    if money.allowance_part:
        rows["allowance"] = (0, money.allowance_part, 0, "local")
    if money.reserved:
        rows["reserve"] = (-money.reserved, 0, 0, source)
    if money.refunded:
        rows["refund"] = (money.refunded, 0, 0, source)
    if money.allowance_part - money.allowance_used:
        rows["allowance_release"] = (0, money.allowance_used - money.allowance_part, 0, "local")
    return rows


def read_records(api: Api, store: str = "contacts") -> list[dict[str, Any]]:
    """The store's items, oldest first, decrypted as a client would: each with its own key and IV."""
    root = api.get("/root").json()
    private_key = load_private(root["servers"]["default"]["privateKey"])
    store_id = root["stores"][store]["id"]
    resp = api.get(f"/objects/{store_id}/related")
    assert resp.status_code == 200, resp.text
    listing = resp.json()
    keys = []
    for item in listing:
        assert item["related_object_id"] == store_id and item["key_id"] != root["stores"][store]["defaultKey"]
        key = api.get(f"/keys/{item['key_id']}")
        assert key.status_code == 200, key.text
        keys.append(
            (
                key.json()["server"],
                unwrap(private_key, bytes.fromhex(key.json()["key"])),
                bytes.fromhex(key.json()["iv"]),
            )
        )
    assert {server for server, _, _ in keys} <= {"default"}
    assert len({item["key_id"] for item in listing}) == len(listing), "a key shared between records"
    assert len({aes for _, aes, _ in keys}) == len(keys), "an AES key used twice"
    assert len({iv for _, _, iv in keys}) == len(keys), "an IV used twice"
    return [
        json.loads(decrypt(aes, iv, bytes.fromhex(item["content"]), bytes.fromhex(item["auth_tag"])))
        for item, (_, aes, iv) in zip(listing, keys, strict=True)
    ]


def object_created_count(rt: Runtime, user_id: str, store_id: str) -> int:
    """object_created events for items of a store (the outbox rows)."""
    return rt.db.query_one(
        "SELECT count(*) FROM events WHERE user_id = ? AND type = 'object_created' "
        "AND json_extract(payload, '$.related_object_id') = ?",
        (user_id, store_id),
    )[0]


@dataclass(frozen=True)
class Scenario:
    """A scraper behaviour and how the job must end."""

    id: str
    params: dict[str, Any]
    written: int
    status: str = "succeeded"
    skipped: int = 0
    error: str | None = None


# Plan `tiny` (3 leads included), 250 cents of balance, 8 leads asked: 3 from the allowance, 5 bought.
REQUESTED, FUNDED = 8, 250
SCENARIOS = [
    Scenario("all", {"mode": "normal"}, 8),
    Scenario("fewer", {"mode": "normal", "n": 5}, 5),
    Scenario("within-allowance", {"mode": "normal", "n": 2}, 2),
    Scenario("too-many", {"mode": "too_many", "extra": 5}, 8),
    Scenario("garbage", {"mode": "garbage", "n": 6}, 6, skipped=8),
    Scenario("error-event", {"mode": "error", "after": 4}, 4, "failed", error="scraper exploded"),
    Scenario("stall", {"mode": "stall", "after": 5}, 5, "failed", error="timed out"),
    Scenario("drop", {"mode": "drop", "after": 5}, 5, "failed", error="The scraper failed"),
    Scenario("huge-frame", {"mode": "huge", "after": 4, "size": 20_000}, 4, "failed", error="frame limit"),
    Scenario("http-500", {"mode": "http_error"}, 0, "failed", error="HTTP 500"),
    Scenario("redirect-not-followed", {"mode": "redirect"}, 0, "failed", error="HTTP 307"),
]


def run_scenario(
    account: Buyer, scraper: TestScraper, rt: Runtime, scenario: Scenario, source: str
) -> tuple[dict[str, Any], Money]:
    """Run one scenario and check the summary, the records, the events and the ledger."""
    tag = secrets.token_hex(4)
    before = scraper.request_count()
    job = run_connect(account.api, {"credits": REQUESTED, "tag": tag, **scenario.params})
    money = money_for(REQUESTED, TINY_ALLOWANCE, account.balance, scenario.written)
    assert scraper.request_count() == before + 1
    sent = scraper.requests[-1]
    assert sent["path"] == "/get-leads" and sent["params"]["credits"] == money.granted == REQUESTED
    assert sent["params"]["tag"] == tag and sent["accept"] == "text/event-stream"
    assert_summary(job, money, scenario.status, scenario.skipped, scenario.error)
    records = read_records(account.api)
    assert [r["n"] for r in records] == list(range(scenario.written)) and {r["tag"] for r in records} <= {tag}
    store_id = account.api.get("/root").json()["stores"]["contacts"]["id"]
    assert object_created_count(rt, account.id, store_id) == scenario.written
    assert ledger_rows(rt, job["id"]) == expected_ledger(money, source)
    return job, money


def credits_amount(api: Api) -> int:
    """GET /api/credits, shape checked."""
    resp = api.get("/credits")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"amount", "currency"} and body["currency"] == "usd", body
    return int(body["amount"])
