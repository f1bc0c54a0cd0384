"""Helpers for the money tests that run real servers: settings, funded users, jobs, worker processes.

Used by the folder-lock, job-lease, money-concurrency, amount-bound and Stripe-failure tests;
plans and prices are the connect tests' (`connect_support`).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import requests

from telentir.runtime import Runtime
from telentir.services import credits

from .connect_support import PLANS, connect_env
from .fake_stripe import FakeStripe
from .support import FIXED_MASTER_KEY, Api, make_user, runtime_over

TXNS = r"/v1/customers/[^/]+/balance_transactions"


def billing_env(scraper_url: str, stripe: FakeStripe | None = None, **extra: str) -> dict[str, str]:
    """Settings of a test server (or CLI): the connect tests' plans, a scraper that may stay silent a minute, Stripe."""
    env = {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, **connect_env(scraper_url, TELENTIR_CONNECT_READ_TIMEOUT="60")}
    if stripe is not None:
        env.update(STRIPE_SECRET_KEY="sk_test_x", STRIPE_API_BASE=stripe.url, TELENTIR_STRIPE_TIMEOUT_SECONDS="5")
    env.update(extra)
    return env


def billing_runtime(data_dir: Path, stripe: FakeStripe | None = None) -> Runtime:
    """A Runtime over a server's data folder with its plans (and Stripe), for users and rows; it recovers nothing."""
    overrides: dict[str, Any] = {"plans": PLANS, "log_level": "WARNING"}
    if stripe is not None:
        overrides.update(stripe_secret_key="sk_test_x", stripe_api_base=stripe.url)
    return runtime_over(data_dir, **overrides)


def funded_user(rt: Runtime, plan: str, funds: int, stripe: FakeStripe | None = None) -> dict[str, Any]:
    """A user on `plan` with `funds` cents of prepaid credit: local, or on a new Stripe customer."""
    user = make_user(rt)
    credits.set_plan(rt, user["id"], plan)
    user["plan"] = plan
    if stripe is None:
        if funds:
            credits.grant_credits(rt, user["id"], funds)
    else:
        user["stripe_customer_id"] = stripe.add_customer(funds)
        credits.set_stripe_customer(rt, user["id"], user["stripe_customer_id"])
    return user


def post_leads(api: Api, params: dict[str, Any], **kwargs: Any) -> requests.Response:
    """POST /api/connect for /get-leads into the contacts store."""
    return api.post("/connect", json={"repository": "contacts", "path": "/get-leads", "params": params}, **kwargs)


def job_row(rt: Runtime, job_id: str) -> dict[str, Any]:
    """The job's row as the database holds it now."""
    return dict(rt.db.query_row("SELECT * FROM jobs WHERE id = ?", (job_id,)))


def user_jobs(rt: Runtime, user_id: str) -> list[dict[str, Any]]:
    """Every job of the user, oldest first."""
    return [dict(r) for r in rt.db.query("SELECT * FROM jobs WHERE user_id = ? ORDER BY created_at", (user_id,))]


def stored_records(rt: Runtime, user_id: str, store: str = "contacts") -> int:
    """How many items the user's store holds."""
    store_id = rt.db.query_value("SELECT object_id FROM stores WHERE user_id = ? AND name = ?", (user_id, store))
    return int(rt.db.query_value("SELECT count(*) FROM objects WHERE related_id = ?", (store_id,)))


def ledger_counts(rt: Runtime, job_id: str) -> dict[str, int]:
    """How many ledger rows of each kind the job has."""
    rows = rt.db.query("SELECT kind, count(*) AS n FROM ledger WHERE job_id = ? GROUP BY kind", (job_id,))
    return {row["kind"]: row["n"] for row in rows}


def owner_pid(job: dict[str, Any]) -> int:
    """The pid in a job's `owner` (host:pid:nonce)."""
    return int(str(job["owner"]).split(":")[1])


def worker_pids(master_pid: int) -> set[int]:
    """The live child processes of a gunicorn master (its workers)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == master_pid and fields[0] != "Z":
            children.add(int(entry.name))
    return children


def sigkill(pid: int) -> None:
    """Kill one process at once (a crash)."""
    os.kill(pid, signal.SIGKILL)
