"""The credits CLI: `users set-plan`, `users set-stripe-customer`, `credits grant`, `credits show`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from telentir.cli import main
from telentir.runtime import Runtime
from telentir.services import credits

from ..backends import env_for
from ..fake_stripe import FakeStripe
from ..support import FIXED_MASTER_KEY, runtime_over


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def rt(data_dir: Path) -> Iterator[Runtime]:
    """A Runtime over the folder the CLI works on (default plan catalog)."""
    with closing(runtime_over(data_dir)) as runtime:
        yield runtime


@pytest.fixture
def cli(data_dir: Path) -> Any:
    """Run a CLI command over the data folder (no Stripe, no scraper) and return click's Result."""
    runner = CliRunner()
    env: dict[str, str | None] = {
        "TELENTIR_DATA_DIR": str(data_dir),
        "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY,
        "TELENTIR_LOG_LEVEL": "WARNING",
        "TELENTIR_PLANS": None,
        "STRIPE_SECRET_KEY": None,
        "STRIPE_API_BASE": None,
        "SCRAPER_HOSTNAME": None,
        **env_for(data_dir),  # the session's storage backend
    }

    def run(*args: str, **extra_env: str) -> Result:
        return runner.invoke(main, list(args), env={**env, **extra_env}, catch_exceptions=False)

    return run


def plan_of(rt: Runtime, user_id: str) -> str:
    return rt.db.query_one("SELECT plan FROM users WHERE id = ?", (user_id,))[0]


def customer_of(rt: Runtime, user_id: str) -> str | None:
    return rt.db.query_one("SELECT stripe_customer_id FROM users WHERE id = ?", (user_id,))[0]


def test_set_plan(cli, rt, user):
    result = cli("users", "set-plan", user["email"], "pro")
    assert result.exit_code == 0, result.output
    assert f"{user['email']} is now on plan pro" in result.output
    assert plan_of(rt, user["id"]) == "pro"


@pytest.mark.parametrize("args, message", [(["platinum"], "No plan 'platinum'"), (["PRO"], "No plan 'PRO'")])
def test_set_plan_refuses_plans_outside_the_catalog(cli, rt, user, args, message):
    result = cli("users", "set-plan", user["email"], *args)
    assert result.exit_code == 1, result.output
    assert message in result.output and "starter" in result.output  # it lists the catalog
    assert plan_of(rt, user["id"]) == "starter"


def test_commands_refuse_an_unknown_email(cli):
    for args in (
        ["users", "set-plan", "nobody@example.com", "pro"],
        ["credits", "grant", "nobody@example.com", "5"],
        ["credits", "show", "nobody@example.com"],
        ["users", "set-stripe-customer", "nobody@example.com", "cus_1"],
    ):
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "Error:" in result.output and "Traceback" not in result.output


def test_grant_adds_to_the_local_balance(cli, rt, user):
    first = cli("credits", "grant", user["email"], "500")
    assert first.exit_code == 0, first.output
    assert "Granted $5.00" in first.output and "local balance is now $5.00" in first.output
    second = cli("credits", "grant", user["email"], "250")
    assert "local balance is now $7.50" in second.output
    rows = rt.db.query("SELECT kind, amount, source, job_id FROM ledger WHERE user_id = ? ORDER BY id", (user["id"],))
    assert [tuple(r) for r in rows] == [("grant", 500, "local", None), ("grant", 250, "local", None)]
    assert credits.local_balance(rt, user["id"]) == 750


@pytest.mark.parametrize("amount", ["0", "-5", "abc", "1.5", ""])
def test_grant_refuses_amounts_that_are_not_positive_integers(cli, rt, user, amount):
    result = cli("credits", "grant", user["email"], "--", amount)
    assert result.exit_code == 2, result.output
    assert rt.db.query_one("SELECT count(*) FROM ledger WHERE user_id = ?", (user["id"],))[0] == 0


def test_show_reports_plan_allowance_and_balance(cli, rt, user):
    assert cli("users", "set-plan", user["email"], "pro").exit_code == 0
    assert cli("credits", "grant", user["email"], "1234").exit_code == 0
    with rt.db.atomic() as tx:  # what a lead job that took 7 leads from the allowance leaves
        credits.ledger_row(tx, user["id"], None, "allowance", leads=7)
    result = cli("credits", "show", user["email"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "plan: pro (1000 leads/month included)",
        "allowance used this month: 7",
        "balance: $12.34",
    ]


def test_set_and_clear_the_stripe_customer(cli, rt, user):
    result = cli("users", "set-stripe-customer", user["email"], "cus_P5aBcD")
    assert result.exit_code == 0, result.output
    assert f"{user['email']} linked to cus_P5aBcD" in result.output
    assert customer_of(rt, user["id"]) == "cus_P5aBcD"
    result = cli("users", "set-stripe-customer", user["email"])
    assert result.exit_code == 0 and f"{user['email']} unlinked" in result.output
    assert customer_of(rt, user["id"]) is None


@pytest.mark.parametrize("customer_id", ["acct_123", "P5aBcD", "CUS_1"])
def test_stripe_customer_ids_must_look_like_one(cli, rt, user, customer_id):
    result = cli("users", "set-stripe-customer", user["email"], customer_id)
    assert result.exit_code == 1 and "cus_" in result.output, result.output
    assert customer_of(rt, user["id"]) is None


def test_show_reads_the_stripe_balance_in_stripe_mode(cli, rt, user):
    with FakeStripe() as fake:
        customer_id = fake.add_customer(4321)
        assert cli("credits", "grant", user["email"], "100").exit_code == 0
        assert cli("users", "set-stripe-customer", user["email"], customer_id).exit_code == 0
        result = cli("credits", "show", user["email"], STRIPE_SECRET_KEY="sk_test_x", STRIPE_API_BASE=fake.url)
        assert result.exit_code == 0, result.output
        assert "balance: $43.21" in result.output
        assert [c.path for c in fake.calls] == [f"/v1/customers/{customer_id}"]
        assert "balance: $1.00" in cli("credits", "show", user["email"]).output  # Stripe not configured


@pytest.mark.parametrize(
    "command",
    [
        ["users", "set-plan"],
        ["users", "set-stripe-customer"],
        ["credits", "grant"],
        ["credits", "show"],
        ["demo-scraper"],
    ],
)
def test_every_command_documents_an_example(cli, command):
    result = cli(*command, "--help")
    assert result.exit_code == 0 and "Example: python -m telentir " + " ".join(command) in result.output
