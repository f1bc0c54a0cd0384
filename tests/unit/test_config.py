"""Settings: defaults, environment parsing, validation, overrides (tests/test_readme.py checks their reference page)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from telentir.config import DEFAULT_PLANS, SETTINGS, Config, ConfigError, load_config, parsers

MASTER_HEX = "ab" * 32


def test_defaults_without_environment():
    config = load_config(environ={})
    assert config == Config()
    assert config.data_dir == Path("data")
    assert config.database_path == Path("data/telentir.db")
    assert config.blob_path == Path("data/blobs")
    assert config.master_key_path == Path("data/master.key")
    assert config.master_key is None
    assert config.server_name == "telentir"
    assert config.broker_url == "memory://"
    assert config.max_body_bytes == 16 * 1024 * 1024
    assert config.sse_heartbeat_seconds == 15.0
    assert config.synchronous == "NORMAL"
    assert config.sms_backend == "log"
    assert config.auth_max_attempts == 5
    assert config.plans == DEFAULT_PLANS and config.default_plan == "starter"
    assert config.log_level == "INFO"


def test_every_setting_maps_to_a_config_field_once():
    attrs = [s.attr for s in SETTINGS]
    envs = [s.env for s in SETTINGS]
    assert len(set(attrs)) == len(attrs) and len(set(envs)) == len(envs)
    assert set(attrs) == {f.name for f in fields(Config)}
    assert all(s.doc.strip() for s in SETTINGS)


def test_paths_derive_from_the_data_dir(tmp_path):
    config = load_config(environ={"TELENTIR_DATA_DIR": str(tmp_path)})
    assert config.database_path == tmp_path / "telentir.db"
    assert config.blob_path == tmp_path / "blobs"
    assert config.master_key_path == tmp_path / "master.key"


def test_explicit_paths_win_over_the_data_dir(tmp_path):
    config = load_config(
        environ={
            "TELENTIR_DATA_DIR": str(tmp_path / "d"),
            "TELENTIR_DATABASE": str(tmp_path / "x.db"),
            "TELENTIR_BLOB_DIR": str(tmp_path / "b"),
            "TELENTIR_MASTER_KEY_FILE": str(tmp_path / "k"),
        }
    )
    assert config.database_path == tmp_path / "x.db"
    assert config.blob_path == tmp_path / "b"
    assert config.master_key_path == tmp_path / "k"


# (variable, its text, attribute, the typed value read)
GOOD_VALUES = [
    ("TELENTIR_DATA_DIR", "/srv/telentir", "data_dir", Path("/srv/telentir")),
    ("TELENTIR_MASTER_KEY", MASTER_HEX, "master_key", MASTER_HEX),
    ("TELENTIR_SERVER_NAME", "acme-eu_1", "server_name", "acme-eu_1"),
    ("TELENTIR_BROKER_URL", "redis://127.0.0.1:6379/0", "broker_url", "redis://127.0.0.1:6379/0"),
    ("TELENTIR_MAX_BODY_BYTES", "1024", "max_body_bytes", 1024),
    ("TELENTIR_MAX_METADATA_BYTES", "2048", "max_metadata_bytes", 2048),
    ("TELENTIR_SSE_HEARTBEAT_SECONDS", "0.5", "sse_heartbeat_seconds", 0.5),
    ("TELENTIR_SSE_RETRY_MS", "1500", "sse_retry_ms", 1500),
    (
        "TELENTIR_PLANS",
        '{"solo": {"name": "Solo", "includedLeads": 0, "leadOverageUsdPerLead": 1}}',
        "plans",
        {"solo": {"name": "Solo", "includedLeads": 0, "leadOverageUsdPerLead": 1}},
    ),
    ("TELENTIR_DEFAULT_PLAN", "pro", "default_plan", "pro"),
    ("TELENTIR_SIGNUP", " Invite ", "signup", "invite"),
    ("TELENTIR_SIGNUP", "open", "signup", "open"),
    ("SCRAPER_HOSTNAME", "http://scraper:8080", "scraper_hostname", "http://scraper:8080"),
    ("STRIPE_SECRET_KEY", "sk_test_123", "stripe_secret_key", "sk_test_123"),
    ("STRIPE_API_BASE", "http://127.0.0.1:12111", "stripe_api_base", "http://127.0.0.1:12111"),
    ("TELENTIR_SYNCHRONOUS", "full", "synchronous", "FULL"),
    ("TELENTIR_JWT_TTL_SECONDS", "60", "jwt_ttl_seconds", 60),
    ("TELENTIR_JWT_REMEMBER_TTL_SECONDS", "120", "jwt_remember_ttl_seconds", 120),
    ("TELENTIR_COOKIE_SECURE", "yes", "cookie_secure", True),
    ("TELENTIR_COOKIE_SECURE", "off", "cookie_secure", False),
    ("TELENTIR_PROXY_HOPS", "0", "proxy_hops", 0),
    ("TELENTIR_PROXY_HOPS", "2", "proxy_hops", 2),
    ("TELENTIR_SMS_BACKEND", "LOG", "sms_backend", "log"),
    ("TELENTIR_PHONE_CODE_TTL_SECONDS", "30", "phone_code_ttl_seconds", 30),
    ("TELENTIR_AUTH_MAX_ATTEMPTS", "3", "auth_max_attempts", 3),
    ("TELENTIR_AUTH_WINDOW_SECONDS", "10", "auth_window_seconds", 10),
    ("TELENTIR_LOG_LEVEL", "debug", "log_level", "DEBUG"),
    (
        "TELENTIR_CONNECT_PATHS",
        "/get-leads, /Search/Companies",
        "connect_paths",
        ("/get-leads", "/Search/Companies"),
    ),
    ("TELENTIR_BILLED_PATHS", "/get-leads,/premium", "billed_paths", ("/get-leads", "/premium")),
    ("TELENTIR_QUOTA_BYTES_PER_USER", "200000", "quota_bytes_per_user", 200_000),
    ("TELENTIR_MAX_API_KEYS_PER_USER", "5", "max_api_keys_per_user", 5),
    ("TELENTIR_MAX_SERVERS_PER_USER", "5", "max_servers_per_user", 5),
    ("TELENTIR_RSA_GENERATIONS_PER_HOUR", "5", "rsa_generations_per_hour", 5),
    ("TELENTIR_SSE_FAIR_SHARE_USERS", "4", "sse_fair_share_users", 4),
]


@pytest.mark.parametrize("env, value, attr, expected", GOOD_VALUES)
def test_environment_values_are_parsed(env, value, attr, expected):
    environ = {env: value}
    if env == "TELENTIR_PLANS":
        environ["TELENTIR_DEFAULT_PLAN"] = "solo"
    assert getattr(load_config(environ=environ), attr) == expected


def test_twilio_backend_with_its_credentials():
    config = load_config(
        environ={
            "TELENTIR_SMS_BACKEND": "twilio",
            "TWILIO_ACCOUNT_SID": "AC1",
            "TWILIO_AUTH_TOKEN": "tok",
            "TWILIO_FROM_NUMBER": "+15555550100",
        }
    )
    assert (config.sms_backend, config.twilio_account_sid, config.twilio_auth_token, config.twilio_from_number) == (
        "twilio",
        "AC1",
        "tok",
        "+15555550100",
    )


def test_empty_environment_values_mean_unset():
    assert load_config(environ={s.env: "" for s in SETTINGS}) == Config()


BAD_VALUES = [
    ("TELENTIR_LOG_FORMAT", "xml"),
    ("TELENTIR_METRICS_TOKEN", "short"),
    ("TELENTIR_METRICS_TOKEN", "has a space in the middle"),
    ("TELENTIR_MASTER_KEY", "too-short"),
    ("TELENTIR_MASTER_KEY", "zz" * 32),
    ("TELENTIR_SERVER_NAME", "Telentir"),
    ("TELENTIR_SERVER_NAME", "has space"),
    ("TELENTIR_SERVER_NAME", "café"),
    ("TELENTIR_SERVER_NAME", "a" * 65),
    ("TELENTIR_SERVER_NAME", "../etc"),
    ("TELENTIR_BROKER_URL", "http://127.0.0.1:6379"),
    ("TELENTIR_BROKER_URL", "localhost:6379"),
    ("TELENTIR_MAX_BODY_BYTES", "0"),
    ("TELENTIR_MAX_BODY_BYTES", "-5"),
    ("TELENTIR_MAX_BODY_BYTES", "1MB"),
    ("TELENTIR_MAX_BODY_BYTES", "1.5"),
    ("TELENTIR_MAX_METADATA_BYTES", "zero"),
    ("TELENTIR_SSE_HEARTBEAT_SECONDS", "0"),
    ("TELENTIR_SSE_HEARTBEAT_SECONDS", "-1"),
    ("TELENTIR_SSE_HEARTBEAT_SECONDS", "nan"),
    ("TELENTIR_SSE_HEARTBEAT_SECONDS", "inf"),
    ("TELENTIR_SSE_HEARTBEAT_SECONDS", "soon"),
    ("TELENTIR_SSE_RETRY_MS", "0"),
    ("TELENTIR_PLANS", "not json"),
    ("TELENTIR_PLANS", "{}"),
    ("TELENTIR_PLANS", "[1, 2]"),
    ("TELENTIR_PLANS", '{"x": {"includedLeads": 1, "leadOverageUsdPerLead": 1}}'),
    ("TELENTIR_PLANS", '{"x": {"name": "X", "includedLeads": -1, "leadOverageUsdPerLead": 1}}'),
    ("TELENTIR_PLANS", '{"x": {"name": "X", "includedLeads": 1, "leadOverageUsdPerLead": 0}}'),
    ("TELENTIR_PLANS", '{"starter": {"name": "S", "includedLeads": 1, "leadOverageUsdPerLead": "a"}}'),
    ("TELENTIR_DEFAULT_PLAN", "platinum"),
    ("SCRAPER_HOSTNAME", "scraper:8080"),
    ("SCRAPER_HOSTNAME", "ftp://scraper"),
    ("TELENTIR_SYNCHRONOUS", "OFF"),
    ("TELENTIR_SYNCHRONOUS", "EXTRA"),
    ("TELENTIR_JWT_TTL_SECONDS", "0"),
    ("TELENTIR_JWT_REMEMBER_TTL_SECONDS", "1h"),
    ("TELENTIR_COOKIE_SECURE", "maybe"),
    ("TELENTIR_PROXY_HOPS", "-1"),
    ("TELENTIR_PROXY_HOPS", "one"),
    ("TELENTIR_SMS_BACKEND", "carrier-pigeon"),
    ("TELENTIR_SMS_BACKEND", "twilio"),  # without its credentials
    ("TELENTIR_PHONE_CODE_TTL_SECONDS", "-600"),
    ("TELENTIR_AUTH_MAX_ATTEMPTS", "0"),
    ("TELENTIR_AUTH_WINDOW_SECONDS", "forever"),
    ("TELENTIR_LOG_LEVEL", "LOUD"),
    ("TELENTIR_DATABASE_URL", "mysql://db/telentir"),
    ("TELENTIR_DATABASE_URL", "sqlite:///"),
    ("TELENTIR_DATABASE_URL", "/var/lib/telentir.db"),
    ("TELENTIR_BLOB_URL", "s3://"),
    ("TELENTIR_BLOB_URL", "s3://Bad_Bucket/prefix"),
    ("TELENTIR_BLOB_URL", "gs://bucket"),
    ("TELENTIR_BLOB_URL", "/var/lib/blobs"),
    ("TELENTIR_PLANS", '{"x": {"name": "X", "includedLeads": 1, "leadOverageUsdPerLead": 1, "stripePriceId": 7}}'),
    ("TELENTIR_PLANS", '{"x": {"name": "X", "includedLeads": 1, "leadOverageUsdPerLead": 1, "monthlyPriceUsd": -1}}'),
    ("TELENTIR_RETURN_ORIGINS", "app.example.com"),
    ("TELENTIR_RETURN_ORIGINS", "https://app.example.com/billing"),
    ("TELENTIR_TOPUP_PRICE_ID", "not a price"),
    ("TELENTIR_TOPUP_MAX_USD", "1000000"),
    ("TELENTIR_SIGNUP", "sometimes"),
    ("TELENTIR_SIGNUP", "invite-only"),
    ("TELENTIR_CONNECT_PATHS", "get-leads"),
    ("TELENTIR_CONNECT_PATHS", "/get-leads;x"),
    ("TELENTIR_CONNECT_PATHS", " , "),
    ("TELENTIR_BILLED_PATHS", "/get-leads.json"),
    ("TELENTIR_BILLED_PATHS", "/get-leads/"),
]


# Settings read by the shared number/flag parsers get these bad values automatically.
GENERIC_BAD_VALUES = {
    parsers.positive_int: ["0", "-1", "many", "1.5", "0x10"],
    parsers.non_negative_int: ["-1", "some", "2.5"],
    parsers.positive_float: ["0", "-0.5", "nan", "inf", "soon"],
    parsers.boolean: ["maybe", "2"],
}
ALL_BAD_VALUES = BAD_VALUES + [(s.env, value) for s in SETTINGS for value in GENERIC_BAD_VALUES.get(s.parse, [])]


@pytest.mark.parametrize("env, value", ALL_BAD_VALUES)
def test_bad_values_name_the_variable(env, value):
    with pytest.raises(ConfigError) as info:
        load_config(environ={env: value})
    assert env in str(info.value)


def test_every_validated_setting_has_bad_values():
    validated = {s.env for s in SETTINGS if s.parse not in (parsers.text, parsers.path)} | {"TELENTIR_DEFAULT_PLAN"}
    assert validated <= {env for env, _ in ALL_BAD_VALUES}


@pytest.mark.parametrize("env", ["TELENTIR_MASTER_KEY"])
def test_a_bad_secret_is_not_echoed(env):
    with pytest.raises(ConfigError) as info:
        load_config(environ={env: "secret-value-123"})
    assert "secret-value-123" not in str(info.value) and env in str(info.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_overrides_win_over_the_environment(tmp_path):
    config = load_config(
        {"data_dir": str(tmp_path), "max_body_bytes": 10, "server_name": "other"},
        environ={"TELENTIR_DATA_DIR": "/elsewhere", "TELENTIR_MAX_BODY_BYTES": "99"},
    )
    assert config.data_dir == tmp_path and isinstance(config.data_dir, Path)
    assert config.max_body_bytes == 10
    assert config.server_name == "other"


def test_overrides_convert_paths(tmp_path):
    config = load_config(
        {
            "database": str(tmp_path / "db.sqlite"),
            "blob_dir": str(tmp_path / "b"),
            "master_key_file": str(tmp_path / "k"),
        },
        environ={},
    )
    assert config.database_path == tmp_path / "db.sqlite"
    assert isinstance(config.blob_dir, Path) and isinstance(config.master_key_file, Path)


def test_unknown_override_is_refused():
    with pytest.raises(ConfigError, match="max_body_size"):
        load_config({"max_body_size": 10}, environ={})


def test_overrides_are_validated_too():
    with pytest.raises(ConfigError, match="TELENTIR_DEFAULT_PLAN"):
        load_config({"default_plan": "nope"}, environ={})
    with pytest.raises(ConfigError, match="TELENTIR_MASTER_KEY"):
        load_config({"master_key": "short"}, environ={})
    with pytest.raises(ConfigError, match="TELENTIR_LOG_LEVEL"):
        load_config({"log_level": "chatty"}, environ={})


def test_secrets_stay_out_of_repr():
    config = load_config(
        environ={
            "TELENTIR_MASTER_KEY": MASTER_HEX,
            "STRIPE_SECRET_KEY": "sk_live_zzz",
            "TELENTIR_SMS_BACKEND": "twilio",
            "TWILIO_ACCOUNT_SID": "AC1",
            "TWILIO_AUTH_TOKEN": "tok_secret",
            "TWILIO_FROM_NUMBER": "+15555550100",
        }
    )
    text = repr(config)
    assert MASTER_HEX not in text and "sk_live_zzz" not in text and "tok_secret" not in text


def test_load_config_reads_os_environ_by_default(monkeypatch, tmp_path):
    monkeypatch.setenv("TELENTIR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TELENTIR_AUTH_MAX_ATTEMPTS", "7")
    config = load_config()
    assert config.data_dir == tmp_path and config.auth_max_attempts == 7


# --- overrides go through the parsers the environment goes through ------------------------

BY_ENV = {s.env: s for s in SETTINGS}
BY_ATTR = {s.attr: s for s in SETTINGS}


@pytest.mark.parametrize("env, value", ALL_BAD_VALUES)
def test_an_override_is_refused_where_the_variable_is(env, value):
    with pytest.raises(ConfigError) as info:
        load_config({BY_ENV[env].attr: value}, environ={})
    assert env in str(info.value)


@pytest.mark.parametrize(
    "attr, value",
    [
        ("max_body_bytes", 0),
        ("max_body_bytes", -5),
        ("max_body_bytes", 1.5),
        ("max_body_bytes", True),
        ("max_body_bytes", None),
        ("inline_max_bytes", -1),
        ("sse_heartbeat_seconds", 0),
        ("sse_heartbeat_seconds", float("nan")),
        ("sse_heartbeat_seconds", float("inf")),
        ("sse_heartbeat_seconds", False),
        ("sse_hub", 1),
        ("sse_hub", "maybe"),
        ("data_dir", 5),
        ("data_dir", None),
        ("server_name", "Telentir"),
        ("synchronous", "OFF"),
        ("sms_backend", "carrier-pigeon"),
        ("signup", "sometimes"),
        ("broker_url", "localhost:6379"),
        ("scraper_hostname", "scraper:8080"),
        ("workers", 0),
        ("connect_paths", ("get-leads",)),
        ("connect_paths", ()),
        ("billed_paths", ["/get-leads", "/a.json"]),
        ("billed_paths", ("/get-leads", 7)),
        ("return_origins", ("https://app.example.com/billing",)),
        ("return_origins", "https://app.example.com,"),
        ("plans", {}),
        ("plans", {"x": {"name": "X", "includedLeads": -1, "leadOverageUsdPerLead": 1}}),
        ("plans", [1, 2]),
        ("topup_min_usd", 0),
        ("topup_price_id", "not a price"),
        ("database_url", "mysql://db/telentir"),
        ("blob_url", "gs://bucket"),
        ("stripe_secret_key", 42),
    ],
)
def test_a_bad_typed_override_is_refused(attr, value):
    environ = {"TELENTIR_DEFAULT_PLAN": "x"} if attr == "plans" else {}
    with pytest.raises(ConfigError) as info:
        load_config({attr: value}, environ=environ)
    assert BY_ATTR[attr].env in str(info.value)


@pytest.mark.parametrize("env, text, attr, expected", GOOD_VALUES)
def test_an_override_as_text_or_typed_reads_as_the_variable(env, text, attr, expected):
    extra = {"default_plan": "solo"} if attr == "plans" else {}
    from_env = getattr(load_config(extra, environ={env: text}), attr)
    from_text = getattr(load_config({attr: text, **extra}, environ={}), attr)
    from_typed = getattr(load_config({attr: expected, **extra}, environ={}), attr)
    assert from_env == from_text == from_typed == expected
    assert type(from_env) is type(from_text) is type(from_typed)


def test_typed_overrides_are_normalised_as_the_variable_is():
    config = load_config(
        {
            "max_body_bytes": "2048",
            "job_lease_seconds": 3,
            "log_level": "debug",
            "return_origins": ["HTTPS://App.Example.com/", "https://app.example.com:443"],
            "billed_paths": ["/a", " /b ", "/a"],
        },
        environ={},
    )
    assert config.max_body_bytes == 2048
    assert config.job_lease_seconds == 3.0 and isinstance(config.job_lease_seconds, float)
    assert config.log_level == "DEBUG"
    assert config.return_origins == ("https://app.example.com",)
    assert config.billed_paths == ("/a", "/b")


def test_none_unsets_an_optional_setting_and_an_empty_override_means_the_default():
    environ = {"TELENTIR_WORKERS": "3", "TELENTIR_MAX_BODY_BYTES": "99"}
    config = load_config({"workers": None, "max_body_bytes": ""}, environ=environ)
    assert config.workers is None and config.max_body_bytes == Config().max_body_bytes


def test_every_default_passes_its_own_parser():
    defaults = {s.attr: s.default for s in SETTINGS if s.default is not None}
    assert load_config(defaults, environ={}) == Config()


def test_a_bad_secret_override_is_not_echoed():
    with pytest.raises(ConfigError) as info:
        load_config({"metrics_token": "secret value 123"}, environ={})
    assert "secret value 123" not in str(info.value) and "TELENTIR_METRICS_TOKEN" in str(info.value)


def test_secrets_are_the_fields_left_out_of_repr():
    hidden = {f.name for f in fields(Config) if not f.repr}
    assert hidden == {s.attr for s in SETTINGS if s.secret}
    assert {"master_key", "stripe_secret_key", "twilio_auth_token", "database_url"} <= hidden
