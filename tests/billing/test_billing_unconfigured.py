"""Billing settings, and a server without Stripe (or without its optional billing settings).

Without STRIPE_SECRET_KEY the three SDK routes are a 409 `stripe_not_configured` right after
authentication, before anything else is looked at, and the CLI still grants credits. With
Stripe but without a webhook secret or return origins, the routes that need them say so.
Nothing calls Stripe at start-up.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from telentir import close_app, create_app
from telentir.cli import main
from telentir.config import ConfigError, load_config
from telentir.runtime import Runtime
from telentir.wiring import build_runtime

from ..billing_support import SdkClient, assert_billing_plan
from ..conftest import make_user
from ..fake_stripe import FakeStripe
from ..support import FIXED_MASTER_KEY, ServerProcess, assert_error, server_env

pytestmark = pytest.mark.embedded_only("settings and start-up without Stripe: nothing here depends on the storage")

PLAN = {"name": "P", "includedLeads": 1, "leadOverageUsdPerLead": 0.25}


# --- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, accepted",
    [
        ({}, True),
        ({"stripePriceId": "price_1PxYzAbC", "monthlyPriceUsd": 49}, True),
        ({"monthlyPriceUsd": 0}, True),
        ({"monthlyPriceUsd": 19.99}, True),
        ({"stripePriceId": None, "monthlyPriceUsd": None}, True),
        ({"monthlyPriceUsd": -1}, False),
        ({"monthlyPriceUsd": 1.005}, False),
        ({"monthlyPriceUsd": "49"}, False),
        ({"monthlyPriceUsd": True}, False),
        ({"stripePriceId": ""}, False),
        ({"stripePriceId": "price with spaces"}, False),
        ({"stripePriceId": 42}, False),
    ],
)
def test_plan_catalog_prices_are_optional_and_checked(extra, accepted):
    environ = {"TELENTIR_PLANS": json.dumps({"p": {**PLAN, **extra}}), "TELENTIR_DEFAULT_PLAN": "p"}
    if accepted:
        assert load_config(environ=environ).plans["p"] == {**PLAN, **extra}
    else:
        with pytest.raises(ConfigError, match="TELENTIR_PLANS"):
            load_config(environ=environ)


def test_two_plans_cannot_share_a_price():
    plans = {"a": {**PLAN, "stripePriceId": "price_x"}, "b": {**PLAN, "stripePriceId": "price_x"}}
    with pytest.raises(ConfigError, match="share a stripePriceId"):
        load_config(environ={"TELENTIR_PLANS": json.dumps(plans), "TELENTIR_DEFAULT_PLAN": "a"})
    with pytest.raises(ConfigError, match="share a stripePriceId"):
        load_config({"plans": plans, "default_plan": "a"}, environ={})


@pytest.mark.parametrize(
    "text, origins",
    [
        ("https://app.example.com", ("https://app.example.com",)),
        ("HTTPS://App.Example.com/, http://localhost:3000", ("https://app.example.com", "http://localhost:3000")),
        (
            "https://a.example:443,http://b.example:80,http://[::1]:8080",
            ("https://a.example", "http://b.example", "http://[::1]:8080"),
        ),
        ("https://a.example,https://a.example", ("https://a.example",)),
    ],
)
def test_return_origins_are_read_canonical(text, origins):
    assert load_config(environ={"TELENTIR_RETURN_ORIGINS": text}).return_origins == origins


@pytest.mark.parametrize(
    "text",
    ["app.example.com", "https://app.example.com/billing", "ftp://x.example", "https://", "https://a.example,", "*"],
)
def test_return_origins_refuse_what_is_not_an_origin(text):
    with pytest.raises(ConfigError, match="TELENTIR_RETURN_ORIGINS"):
        load_config(environ={"TELENTIR_RETURN_ORIGINS": text})


@pytest.mark.parametrize(
    "environ",
    [
        {"TELENTIR_TOPUP_MIN_USD": "0"},
        {"TELENTIR_TOPUP_MIN_USD": "50", "TELENTIR_TOPUP_MAX_USD": "10"},
        {"TELENTIR_TOPUP_MAX_USD": "1000000"},
        {"TELENTIR_TOPUP_PRICE_ID": "not a price"},
    ],
)
def test_top_up_settings_are_checked(environ):
    with pytest.raises(ConfigError, match="TELENTIR_TOPUP"):
        load_config(environ=environ)


def test_the_webhook_secret_is_never_echoed():
    config = load_config(environ={"STRIPE_WEBHOOK_SECRET": "whsec_topsecret"})
    assert config.stripe_webhook_secret == "whsec_topsecret" and "whsec_topsecret" not in repr(config)


# --- a server without Stripe ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The default catalog, no Stripe, no billing settings at all."""
    process = ServerProcess(tmp_path_factory.mktemp("local") / "data", {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY})
    yield process.start()
    process.discard()


@pytest.fixture(scope="module")
def runtime(server: ServerProcess) -> Iterator[Runtime]:
    rt = build_runtime(load_config({"data_dir": server.data_dir, "master_key": FIXED_MASTER_KEY}, environ={}))
    yield rt
    rt.close()


SDK_CALLS = {
    "top-up": lambda c: c.top_up_request("https://evil.example/"),
    "plan": lambda c: c.send(
        "/billing/plan", "POST", {"returnTo": "javascript:x"}, "junk", {"content-type": "text/plain"}
    ),
    "portal": lambda c: c.portal_request("nonsense"),
}


@pytest.mark.parametrize("call", list(SDK_CALLS), ids=list(SDK_CALLS))
def test_without_stripe_each_route_is_409_right_after_authentication(server, runtime, call):
    anonymous = SdkClient(server.url, "")
    anonymous.api_key = ""
    user = make_user(runtime)
    unverified = make_user(runtime, verified=False)
    clients = [SdkClient(server.url, user["api_key"]), SdkClient(server.url, unverified["api_key"]), anonymous]
    try:
        # No credential: 401 (the guard); unverified phone: 403 (the guard); then 409, whatever the input.
        assert_error(SDK_CALLS[call](clients[2]), 401, "unauthorized")
        assert_error(SDK_CALLS[call](clients[1]), 403, "phone_not_verified")
        body = assert_error(SDK_CALLS[call](clients[0]), 409, "stripe_not_configured")
        assert "STRIPE_SECRET_KEY" in body["message"]
    finally:
        for client in clients:
            client.close()


def test_without_stripe_the_webhook_is_409_and_the_cli_still_grants_credits(server, runtime):
    webhook = requests.post(
        f"{server.url}/api/stripe/webhook", data=b"{}", headers={"Stripe-Signature": "t=1,v1=00"}, timeout=10
    )
    assert_error(webhook, 409, "stripe_not_configured")
    user = make_user(runtime)
    env = server_env(server.data_dir, {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY})
    result = CliRunner().invoke(main, ["credits", "grant", user["email"], "750"], env=env)
    assert result.exit_code == 0, result.output
    client = SdkClient(server.url, user["api_key"])
    try:
        assert client.get_balance() == {"amount": 750, "currency": "usd"}
    finally:
        client.close()


def test_without_stripe_the_state_reads_the_default_catalog(server, runtime):
    user = make_user(runtime)
    client = SdkClient(server.url, user["api_key"])
    try:
        state = client.get_state()
    finally:
        client.close()
    assert_billing_plan(state["plan"])
    assert (state["plan"]["key"], state["plan"]["monthlyPriceUsd"], state["plan"]["includedLeads"]) == (
        "starter",
        0,
        100,
    )
    assert (state["hasCard"], state["paymentFailure"]) == (False, None)


# --- Stripe without its optional settings; nothing at start-up -------------------------------------


def test_stripe_without_origins_or_webhook_secret_says_what_is_missing(tmp_path: Path, fake: FakeStripe):
    app = create_app(
        {
            "data_dir": tmp_path / "data",
            "master_key": FIXED_MASTER_KEY,
            "log_level": "WARNING",
            "stripe_secret_key": "sk_test_x",
            "stripe_api_base": fake.url,
        }
    )
    try:
        assert fake.calls == []  # nothing calls Stripe at start-up
        rt = app.extensions["telentir"]
        client = app.test_client()
        auth = {"Authorization": f"Bearer {make_user(rt)['api_key']}"}
        for response in (
            client.post("/api/credits/add", headers=auth),
            client.post("/api/billing/plan", headers=auth, json={"plan": "pro"}),
            client.get("/api/billing/portal?returnTo=https://app.example.com/", headers=auth),
        ):
            assert response.status_code == 409 and response.get_json()["error"] == "return_origins_not_configured"
            assert "TELENTIR_RETURN_ORIGINS" in response.get_json()["message"]
        webhook = client.post("/api/stripe/webhook", data=b"{}", headers={"Stripe-Signature": "t=1,v1=00"})
        assert webhook.status_code == 409 and webhook.get_json()["error"] == "webhook_not_configured"
        assert fake.calls == []
    finally:
        close_app(app)


def test_a_stripe_mode_server_starts_without_calling_stripe(tmp_path: Path, fake: FakeStripe):
    env = {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, "STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_API_BASE": fake.url}
    process = ServerProcess(tmp_path / "data", env).start()
    try:
        assert fake.calls == []
    finally:
        process.stop()


def test_the_cli_lists_no_events_and_refuses_sync_without_stripe(server, runtime):
    user = make_user(runtime)
    env = server_env(server.data_dir, {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY})
    runner = CliRunner()
    events = runner.invoke(main, ["billing", "events"], env=env)
    assert events.exit_code == 0 and events.output == "", events.output
    sync = runner.invoke(main, ["billing", "sync", user["email"]], env=env)
    assert sync.exit_code != 0 and "STRIPE_SECRET_KEY" in sync.output
