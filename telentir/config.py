"""Every setting in one place: defaults in code, then environment variables, then overrides.

`SETTINGS` is the single table of settings (environment name, type, default, meaning);
the README's configuration table mirrors it and a test keeps the two in step.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .crypto import CryptoError, parse_master_key
from .money import MAX_INCLUDED_LEADS, MAX_LEAD_PRICE
from .wire import is_plain_path


class ConfigError(ValueError):
    """A setting has a value the server cannot start with."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be zero or a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError("must be a positive number")
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _synchronous(text: str) -> str:
    upper = text.strip().upper()
    if upper not in ("NORMAL", "FULL"):
        raise ValueError("must be NORMAL or FULL")
    return upper


_SERVER_NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_FORMATS = ("auto", "json", "text")


def _server_name(text: str) -> str:
    # ASCII only: str.isalnum() would let "café" or "ß" through.
    name = text.strip()
    if not _SERVER_NAME_RE.fullmatch(name):
        raise ValueError("must be 1-64 lowercase letters, digits, '-' or '_'")
    return name


def _master_key(text: str) -> str:
    try:
        parse_master_key(text)
    except CryptoError as exc:
        raise ValueError("must be 32 bytes as 64 hex characters or base64") from exc
    return text


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in _LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
    return level


def _log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in _LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(_LOG_FORMATS)}")
    return value


def _metrics_token(text: str) -> str:
    token = text.strip()
    # Compared with the whole Authorization header's value: a short token is guessable.
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ValueError("must be at least 16 characters without spaces")
    return token


def _sms_backend(text: str) -> str:
    value = text.strip().lower()
    if value not in ("log", "twilio"):
        raise ValueError("must be log or twilio")
    return value


def _connector_paths(text: str) -> tuple[str, ...]:
    paths = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    bad = [path for path in paths if not is_plain_path(path)]
    if not paths or bad:
        raise ValueError("must be comma-separated paths such as /get-leads (segments of A-Z a-z 0-9 - _)")
    return paths


SIGNUP_MODES = ("closed", "invite", "open")


def _signup(text: str) -> str:
    value = text.strip().lower()
    if value not in SIGNUP_MODES:
        raise ValueError(f"must be one of {', '.join(SIGNUP_MODES)}")
    return value


def _broker_url(text: str) -> str:
    if not text.startswith(("memory://", "redis://", "rediss://", "unix://")):
        raise ValueError("must start with memory://, redis://, rediss:// or unix://")
    return text


def _database_url(text: str) -> str:
    if not text.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ValueError("must start with sqlite:/// (a file path follows) or postgresql://")
    if text.startswith("sqlite:///") and len(text) == len("sqlite:///"):
        raise ValueError("sqlite:/// needs a file path")
    return text


def _blob_url(text: str) -> str:
    if text.startswith("file://") and len(text) > len("file://"):
        return text
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/[A-Za-z0-9!_.*'()/-]*)?", text)
    if match is None:
        raise ValueError("must be file:///path or s3://bucket/prefix (a valid bucket name)")
    return text


_PRICE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,255}")


def _usd(value: object, *, positive: bool) -> bool:
    """A finite JSON number of dollars in whole cents (> 0 when `positive`, else >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return (value > 0 if positive else value >= 0) and not round(value * 100, 6) % 1


def _plans(text: str) -> dict[str, dict[str, Any]]:
    return check_plans(json.loads(text))


def check_plans(plans: object) -> dict[str, dict[str, Any]]:
    """Check a plan catalog: key -> {name, includedLeads, leadOverageUsdPerLead, stripePriceId?, monthlyPriceUsd?}."""
    if not isinstance(plans, dict) or not plans:
        raise ValueError("must be a non-empty JSON object of plan key -> plan")
    for key, plan in plans.items():
        _check_plan(key, plan)
    prices = [plan["stripePriceId"] for plan in plans.values() if plan.get("stripePriceId") is not None]
    if len(prices) != len(set(prices)):
        raise ValueError("two plans share a stripePriceId (a subscription's price must name one plan)")
    return plans


def _check_plan(key: str, plan: object) -> None:
    if not isinstance(plan, dict) or not isinstance(plan.get("name"), str):
        raise ValueError(f"plan {key!r} needs a name")
    included = plan.get("includedLeads")
    if isinstance(included, bool) or not isinstance(included, int) or not 0 <= included <= MAX_INCLUDED_LEADS:
        raise ValueError(f"plan {key!r} needs includedLeads from 0 to {MAX_INCLUDED_LEADS:,}")
    overage = plan.get("leadOverageUsdPerLead")
    if not _usd(overage, positive=True) or not isinstance(overage, (int, float)) or overage > MAX_LEAD_PRICE / 100:
        raise ValueError(
            f"plan {key!r} needs leadOverageUsdPerLead above 0 and at most {MAX_LEAD_PRICE // 100:,}, in whole cents"
        )
    price_id = plan.get("stripePriceId")
    if price_id is not None and not (isinstance(price_id, str) and _PRICE_ID_RE.fullmatch(price_id)):
        raise ValueError(f"plan {key!r}: stripePriceId must be a Stripe price id such as price_1PxYz")
    if plan.get("monthlyPriceUsd") is not None and not _usd(plan["monthlyPriceUsd"], positive=False):
        raise ValueError(f"plan {key!r}: monthlyPriceUsd must be >= 0 in whole cents")


_ORIGIN_RE = re.compile(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?/?", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(scheme: str, host: str, port: int | None) -> str:
    """The canonical spelling of an origin: lowercase, the default port left out."""
    scheme, host = scheme.lower(), host.lower()
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


def _price_id(text: str) -> str:
    if not _PRICE_ID_RE.fullmatch(text.strip()):
        raise ValueError("must be a Stripe price id such as price_1PxYz")
    return text.strip()


def _return_origins(text: str) -> tuple[str, ...]:
    origins = []
    for item in (part.strip() for part in text.split(",")):
        match = _ORIGIN_RE.fullmatch(item)
        port = int(match.group(3)) if match and match.group(3) else None
        if match is None or (port is not None and not 0 < port < 65536):
            raise ValueError(f"{item!r} is not an origin such as https://app.example.com or http://localhost:3000")
        origins.append(origin_of(match.group(1), match.group(2), port))
    return tuple(dict.fromkeys(origins))


DEFAULT_PLANS: dict[str, dict[str, Any]] = {
    "starter": {"name": "Starter", "includedLeads": 100, "leadOverageUsdPerLead": 0.25},
    "pro": {"name": "Pro", "includedLeads": 1000, "leadOverageUsdPerLead": 0.20},
    "growth": {"name": "Growth", "includedLeads": 5000, "leadOverageUsdPerLead": 0.15},
    "agency": {"name": "Agency", "includedLeads": 20000, "leadOverageUsdPerLead": 0.10},
}


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    env: str
    attr: str
    parse: Callable[[str], Any]
    doc: str
    secret: bool = False


@dataclass(frozen=True)
class Config:
    """The server's typed settings; build it with `load_config`."""

    data_dir: Path = Path("data")
    database: Path | None = None
    blob_dir: Path | None = None
    master_key: str | None = field(default=None, repr=False)
    master_key_file: Path | None = None
    server_name: str = "telentir"
    broker_url: str = "memory://"
    max_body_bytes: int = 16 * 1024 * 1024
    header_timeout_seconds: float = 10.0
    max_metadata_bytes: int = 16 * 1024
    inline_max_bytes: int = 16 * 1024
    sse_heartbeat_seconds: float = 15.0
    sse_retry_ms: int = 3000
    sse_batch_ms: int = 100
    sse_hub: bool = True
    sse_max_streams: int = 200
    sse_max_streams_per_user: int = 50
    sse_fair_share_users: int = 8
    event_retention_seconds: int = 7 * 24 * 3600
    event_retention_count: int = 1_000_000
    event_prune_interval_seconds: float = 60.0
    plans: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_PLANS))
    default_plan: str = "starter"
    signup: str = "closed"
    scraper_hostname: str | None = None
    stripe_secret_key: str | None = field(default=None, repr=False)
    stripe_api_base: str | None = None
    synchronous: str = "NORMAL"
    sqlite_cache_mib: int = 2
    jwt_ttl_seconds: int = 24 * 3600
    jwt_remember_ttl_seconds: int = 30 * 24 * 3600
    cookie_secure: bool = False
    proxy_hops: int = 0
    sms_backend: str = "log"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_from_number: str | None = None
    phone_code_ttl_seconds: int = 600
    auth_max_attempts: int = 5
    auth_address_max_attempts: int = 20
    auth_account_max_attempts: int = 20
    auth_max_delay_seconds: int = 60
    auth_account_window_seconds: int = 24 * 3600
    auth_window_seconds: int = 900
    sms_per_phone_per_hour: int = 5
    signups_per_address_per_hour: int = 10
    log_level: str = "INFO"
    workers: int | None = None
    log_format: str = "auto"
    metrics_token: str | None = field(default=None, repr=False)
    connect_workers: int = 4
    connect_per_user: int = 2
    connect_connect_timeout: float = 5.0
    connect_read_timeout: float = 30.0
    connect_max_seconds: float = 3600.0
    connect_max_frame_bytes: int = 1024 * 1024
    connect_max_params_bytes: int = 64 * 1024
    connect_max_records: int = 100_000
    connect_batch_size: int = 200
    connect_batch_seconds: float = 0.5
    connect_paths: tuple[str, ...] | None = None
    billed_paths: tuple[str, ...] = ("/get-leads",)
    quota_bytes_per_user: int | None = None
    max_api_keys_per_user: int = 100
    max_servers_per_user: int = 20
    rsa_generations_per_hour: int = 10
    stripe_timeout_seconds: float = 10.0
    refund_retry_seconds: float = 60.0
    database_url: str | None = field(default=None, repr=False)  # may carry a password
    database_pool_size: int = 20
    blob_url: str | None = None
    s3_endpoint_url: str | None = None
    blob_sweep_grace_seconds: float = 3600.0
    blob_sweep_interval_seconds: float = 3600.0
    stripe_webhook_secret: str | None = field(default=None, repr=False)
    return_origins: tuple[str, ...] = ()
    topup_min_usd: int = 5
    topup_max_usd: int = 500
    topup_price_id: str | None = None
    job_lease_seconds: float = 30.0
    min_free_bytes: int = 0

    @property
    def uses_postgres(self) -> bool:
        """Metadata lives in PostgreSQL (shared by every node) rather than in a SQLite file."""
        return bool(self.database_url) and not str(self.database_url).startswith("sqlite:///")

    @property
    def uses_s3(self) -> bool:
        """Ciphertext lives in an S3-compatible bucket rather than in local files."""
        return bool(self.blob_url) and str(self.blob_url).startswith("s3://")

    @property
    def stream_fair_share(self) -> int:
        """A user's fair share of the box's streams: TELENTIR_SSE_MAX_STREAMS // TELENTIR_SSE_FAIR_SHARE_USERS (≥ 1).

        Past it a user opens more streams (up to TELENTIR_SSE_MAX_STREAMS_PER_USER) only while half
        the box's cap is free (`StreamSlots`): that half is kept for users below their share, so
        with the defaults it takes at least five users to fill the box.
        """
        return max(1, self.sse_max_streams // self.sse_fair_share_users)

    @property
    def worker_count(self) -> int:
        """How many worker processes to serve with: TELENTIR_WORKERS, else one per core this process may use."""
        return self.workers or default_workers()

    @property
    def database_path(self) -> Path:
        """Where the SQLite database lives (TELENTIR_DATABASE_URL=sqlite:///…, else TELENTIR_DATABASE)."""
        if self.database_url and self.database_url.startswith("sqlite:///"):
            return Path(self.database_url[len("sqlite:///") :])
        return self.database or self.data_dir / "telentir.db"

    @property
    def blob_path(self) -> Path:
        """The root folder of ciphertext files (TELENTIR_BLOB_URL=file://…, else TELENTIR_BLOB_DIR)."""
        if self.blob_url and self.blob_url.startswith("file://"):
            return Path(self.blob_url[len("file://") :])
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def master_key_path(self) -> Path:
        """The master key file used when TELENTIR_MASTER_KEY is not set."""
        return self.master_key_file or self.data_dir / "master.key"


SETTINGS: tuple[Setting, ...] = (
    Setting("TELENTIR_DATA_DIR", "data_dir", Path, "Folder for the database, blobs and master key."),
    Setting("TELENTIR_DATABASE", "database", Path, "SQLite database file (default `<data dir>/telentir.db`)."),
    Setting("TELENTIR_BLOB_DIR", "blob_dir", Path, "Folder of ciphertext files (default `<data dir>/blobs`)."),
    Setting(
        "TELENTIR_MASTER_KEY",
        "master_key",
        _master_key,
        "Master key sealing secrets at rest: 32 bytes as hex or base64. Unset: a key file is used.",
        secret=True,
    ),
    Setting(
        "TELENTIR_MASTER_KEY_FILE",
        "master_key_file",
        Path,
        "Master key file, created 0600 on first start (default `<data dir>/master.key`).",
    ),
    Setting("TELENTIR_SERVER_NAME", "server_name", _server_name, "Name of the platform server in `GET /api/server`."),
    Setting(
        "TELENTIR_BROKER_URL",
        "broker_url",
        _broker_url,
        "Event broker: `memory://` (the workers of one box) or `redis://host:port/db` (any number of boxes).",
    ),
    Setting("TELENTIR_MAX_BODY_BYTES", "max_body_bytes", _positive_int, "Largest request body accepted (413 past it)."),
    Setting(
        "TELENTIR_HEADER_TIMEOUT_SECONDS",
        "header_timeout_seconds",
        _positive_float,
        "A connection that has not sent its whole request header block within this many seconds gets 408 and is "
        "closed; until then it holds no worker thread.",
    ),
    Setting(
        "TELENTIR_MAX_METADATA_BYTES",
        "max_metadata_bytes",
        _positive_int,
        "Largest `metadata` object, as compact JSON.",
    ),
    Setting(
        "TELENTIR_INLINE_MAX_BYTES",
        "inline_max_bytes",
        _non_negative_int,
        "Ciphertexts up to this size live in the database row; larger ones in files (0: always files).",
    ),
    Setting(
        "TELENTIR_SSE_HEARTBEAT_SECONDS",
        "sse_heartbeat_seconds",
        _positive_float,
        "Seconds between keep-alive comments on an idle event stream.",
    ),
    Setting("TELENTIR_SSE_RETRY_MS", "sse_retry_ms", _positive_int, "`retry:` sent to event-stream clients."),
    Setting(
        "TELENTIR_SSE_HUB",
        "sse_hub",
        _boolean,
        "Serve live SSE streams under gunicorn from one hub per process instead of a thread each.",
    ),
    Setting(
        "TELENTIR_SSE_BATCH_MS",
        "sse_batch_ms",
        _non_negative_int,
        "A busy stream not served by the hub sends at most one batch per this many ms (an idle one sends at once); "
        "0 sends each event alone.",
    ),
    Setting(
        "TELENTIR_SSE_MAX_STREAMS",
        "sse_max_streams",
        _positive_int,
        "Open event streams (SSE + WebSocket) the server serves, all its worker processes together; 503 past it. "
        "Keep below gunicorn's threads.",
    ),
    Setting(
        "TELENTIR_SSE_MAX_STREAMS_PER_USER",
        "sse_max_streams_per_user",
        _positive_int,
        "Open event streams one user may hold on the server (all workers together); 429 past it. "
        "Past the fair share below, only while half of TELENTIR_SSE_MAX_STREAMS is free.",
    ),
    Setting(
        "TELENTIR_SSE_FAIR_SHARE_USERS",
        "sse_fair_share_users",
        _positive_int,
        "A user's fair share of streams is max(1, TELENTIR_SSE_MAX_STREAMS // this); past it a user opens more only "
        "while half the box's cap is free, kept for users below their share; 1 turns the fair share off.",
    ),
    Setting(
        "TELENTIR_EVENT_RETENTION_SECONDS",
        "event_retention_seconds",
        _positive_int,
        "Events older than this are pruned (streams resuming from before them get `resync`).",
    ),
    Setting(
        "TELENTIR_EVENT_RETENTION_COUNT",
        "event_retention_count",
        _positive_int,
        "At most this many events are kept; older ones are pruned.",
    ),
    Setting(
        "TELENTIR_EVENT_PRUNE_INTERVAL_SECONDS",
        "event_prune_interval_seconds",
        _positive_float,
        "How often the background pruner runs.",
    ),
    Setting(
        "TELENTIR_PLANS",
        "plans",
        _plans,
        "JSON plan catalog: key -> {name, includedLeads, leadOverageUsdPerLead, stripePriceId?, monthlyPriceUsd?}.",
    ),
    Setting(
        "TELENTIR_DEFAULT_PLAN",
        "default_plan",
        str,
        "Plan key given to new users (an invite's `--plan` overrides it).",
    ),
    Setting(
        "TELENTIR_SIGNUP",
        "signup",
        _signup,
        "Who may register with `POST /api/auth/register`: `closed` (nobody: accounts come from the CLI), "
        "`invite` (with a code from `telentir invites create`) or `open` (anyone).",
    ),
    Setting("SCRAPER_HOSTNAME", "scraper_hostname", str, "Base URL of the scraper service for `POST /api/connect`."),
    Setting("STRIPE_SECRET_KEY", "stripe_secret_key", str, "Enables Stripe mode for prepaid balances.", secret=True),
    Setting("STRIPE_API_BASE", "stripe_api_base", str, "Override of Stripe's API address (tests, proxies)."),
    Setting(
        "TELENTIR_SYNCHRONOUS",
        "synchronous",
        _synchronous,
        "SQLite `synchronous`: NORMAL survives a process crash, FULL also power loss.",
    ),
    Setting(
        "TELENTIR_SQLITE_CACHE_MIB",
        "sqlite_cache_mib",
        _positive_int,
        "SQLite page cache per connection (one connection per thread), MiB. More speeds up reads "
        "of a large database at the cost of memory per busy thread.",
    ),
    Setting("TELENTIR_JWT_TTL_SECONDS", "jwt_ttl_seconds", _positive_int, "Lifetime of a session token."),
    Setting(
        "TELENTIR_JWT_REMEMBER_TTL_SECONDS",
        "jwt_remember_ttl_seconds",
        _positive_int,
        "Lifetime of a session token when logging in with `remember`.",
    ),
    Setting("TELENTIR_COOKIE_SECURE", "cookie_secure", _boolean, "Mark the `token` cookie Secure (behind HTTPS)."),
    Setting(
        "TELENTIR_PROXY_HOPS",
        "proxy_hops",
        _non_negative_int,
        "Reverse proxies in front whose X-Forwarded-For is trusted (rate limits use the client address).",
    ),
    Setting(
        "TELENTIR_SMS_BACKEND",
        "sms_backend",
        _sms_backend,
        "`log` writes phone codes to the server log; `twilio` sends them.",
    ),
    Setting("TWILIO_ACCOUNT_SID", "twilio_account_sid", str, "Twilio account for the `twilio` SMS backend."),
    Setting("TWILIO_AUTH_TOKEN", "twilio_auth_token", str, "Twilio auth token.", secret=True),
    Setting("TWILIO_FROM_NUMBER", "twilio_from_number", str, "Sender number for SMS codes."),
    Setting(
        "TELENTIR_PHONE_CODE_TTL_SECONDS", "phone_code_ttl_seconds", _positive_int, "How long a phone code stays valid."
    ),
    Setting(
        "TELENTIR_AUTH_MAX_ATTEMPTS",
        "auth_max_attempts",
        _positive_int,
        "Failed sign-ins (or phone-code checks) of one account from one client address in one window; "
        "past it that address is refused for that account (429) until the window frees. The owner, "
        "from another address, is not affected.",
    ),
    Setting(
        "TELENTIR_AUTH_ADDRESS_MAX_ATTEMPTS",
        "auth_address_max_attempts",
        _positive_int,
        "Failed sign-ins (or phone-code checks) from one client address, whatever the accounts, in one "
        "window; past it the address is refused (429) until the window frees.",
    ),
    Setting(
        "TELENTIR_AUTH_ACCOUNT_MAX_ATTEMPTS",
        "auth_account_max_attempts",
        _positive_int,
        "Failed sign-ins (or phone-code checks) of one account from all addresses in "
        "TELENTIR_AUTH_ACCOUNT_WINDOW_SECONDS before each further attempt must wait (429 with a short "
        "Retry-After that doubles per failure).",
    ),
    Setting(
        "TELENTIR_AUTH_ACCOUNT_WINDOW_SECONDS",
        "auth_account_window_seconds",
        _positive_int,
        "The window, in seconds, over which the failures of one account from all addresses are counted: "
        "long, so that guessing spread over many addresses stays at one guess per longest wait.",
    ),
    Setting(
        "TELENTIR_AUTH_MAX_DELAY_SECONDS",
        "auth_max_delay_seconds",
        _positive_int,
        "Longest of those waits between attempts on one account (a slowdown, never a lockout).",
    ),
    Setting(
        "TELENTIR_AUTH_WINDOW_SECONDS",
        "auth_window_seconds",
        _positive_int,
        "The window, in seconds, over which sign-in and phone-code failures are counted.",
    ),
    Setting(
        "TELENTIR_SMS_PER_PHONE_PER_HOUR",
        "sms_per_phone_per_hour",
        _positive_int,
        "Texts sent to one phone number in any hour, whichever accounts ask (the server and all its "
        "nodes together); 429 past it, nothing sent.",
    ),
    Setting(
        "TELENTIR_SIGNUPS_PER_ADDRESS_PER_HOUR",
        "signups_per_address_per_hour",
        _positive_int,
        "Sign-ups (`POST /api/auth/register`) from one client address (an IPv6 /64) in any hour, the "
        "server and all its nodes together; 429 past it, no account made.",
    ),
    Setting(
        "TELENTIR_LOG_LEVEL",
        "log_level",
        _log_level,
        "Python log level of the server: DEBUG, INFO, WARNING, ERROR or CRITICAL (request lines are INFO).",
    ),
    Setting(
        "TELENTIR_LOG_FORMAT",
        "log_format",
        _log_format,
        "`json` (one object per line), `text`, or `auto`: JSON unless the log is a terminal.",
    ),
    Setting(
        "TELENTIR_METRICS_TOKEN",
        "metrics_token",
        _metrics_token,
        "Enables `GET /metrics` for `Authorization: Bearer <this token>` (unset: 404). At least 16 characters.",
        secret=True,
    ),
    Setting(
        "TELENTIR_WORKERS",
        "workers",
        _positive_int,
        "gunicorn worker processes `serve` starts (default: one per CPU core; `serve --workers` overrides).",
    ),
    Setting(
        "TELENTIR_CONNECT_WORKERS",
        "connect_workers",
        _non_negative_int,
        "Threads running ingestion jobs per process (0 runs each job in its request thread).",
    ),
    Setting(
        "TELENTIR_CONNECT_PER_USER",
        "connect_per_user",
        _positive_int,
        "Ingestion jobs one user may run at once (in every worker and node together); 429 past it.",
    ),
    Setting(
        "TELENTIR_CONNECT_CONNECT_TIMEOUT",
        "connect_connect_timeout",
        _positive_float,
        "Seconds to connect to the scraper.",
    ),
    Setting(
        "TELENTIR_CONNECT_READ_TIMEOUT",
        "connect_read_timeout",
        _positive_float,
        "Seconds the scraper may stay silent before the job fails.",
    ),
    Setting(
        "TELENTIR_CONNECT_MAX_SECONDS", "connect_max_seconds", _positive_float, "Longest an ingestion job may run."
    ),
    Setting(
        "TELENTIR_CONNECT_MAX_FRAME_BYTES",
        "connect_max_frame_bytes",
        _positive_int,
        "Largest SSE frame accepted from the scraper; a larger one fails the job.",
    ),
    Setting(
        "TELENTIR_CONNECT_MAX_PARAMS_BYTES",
        "connect_max_params_bytes",
        _positive_int,
        "Largest `params` object of POST /api/connect, as JSON.",
    ),
    Setting(
        "TELENTIR_CONNECT_MAX_RECORDS",
        "connect_max_records",
        _positive_int,
        "Most records one job writes when no credits limit it.",
    ),
    Setting(
        "TELENTIR_CONNECT_BATCH_SIZE",
        "connect_batch_size",
        _positive_int,
        "Records committed per ingestion transaction.",
    ),
    Setting(
        "TELENTIR_CONNECT_BATCH_SECONDS",
        "connect_batch_seconds",
        _positive_float,
        "Longest a received record waits before its batch commits.",
    ),
    Setting(
        "TELENTIR_CONNECT_PATHS",
        "connect_paths",
        _connector_paths,
        "Comma-separated scraper paths `POST /api/connect` may call (compared without case; 400 otherwise). "
        "Unset: any well-formed path.",
    ),
    Setting(
        "TELENTIR_BILLED_PATHS",
        "billed_paths",
        _connector_paths,
        "Comma-separated scraper paths whose records spend lead credits (compared without case).",
    ),
    Setting(
        "TELENTIR_QUOTA_BYTES_PER_USER",
        "quota_bytes_per_user",
        _positive_int,
        "Ciphertext bytes one user may store (objects, ingested records included); a write past it is a 413 "
        "`quota_exceeded`. Unset: no quota.",
    ),
    Setting(
        "TELENTIR_MAX_API_KEYS_PER_USER",
        "max_api_keys_per_user",
        _positive_int,
        "Live (unrevoked) API keys one user may hold; creating one more is a 409 `too_many_api_keys`.",
    ),
    Setting(
        "TELENTIR_MAX_SERVERS_PER_USER",
        "max_servers_per_user",
        _positive_int,
        "Servers one user may register with `POST /api/servers`; one more is a 409 `too_many_servers`.",
    ),
    Setting(
        "TELENTIR_RSA_GENERATIONS_PER_HOUR",
        "rsa_generations_per_hour",
        _positive_int,
        "Key pairs one user may have the server generate (`POST /api/servers` with `generate`) per rolling hour; "
        "429 with Retry-After past it.",
    ),
    Setting(
        "TELENTIR_STRIPE_TIMEOUT_SECONDS", "stripe_timeout_seconds", _positive_float, "Timeout of each Stripe call."
    ),
    Setting(
        "TELENTIR_REFUND_RETRY_SECONDS",
        "refund_retry_seconds",
        _positive_float,
        "How often pending Stripe refunds are retried in the background.",
    ),
    Setting(
        "TELENTIR_DATABASE_URL",
        "database_url",
        _database_url,
        "Metadata database: `sqlite:///path/to/file` or `postgresql://user:pass@host:5432/db` (several nodes). "
        "Unset: the SQLite file of TELENTIR_DATABASE.",
        secret=True,
    ),
    Setting(
        "TELENTIR_DATABASE_POOL_SIZE",
        "database_pool_size",
        _positive_int,
        "PostgreSQL connections each process keeps at most (a statement borrows one; a transaction holds one).",
    ),
    Setting(
        "TELENTIR_MIN_FREE_BYTES",
        "min_free_bytes",
        _non_negative_int,
        "Free disk space kept in reserve: below it, data-plane writes (POST, PUT, PATCH) answer 507 "
        "`insufficient_storage` while reads and deletes keep working. The server keeps at least 8 MiB free "
        "(an eighth of a disk under 64 MiB) whatever this says: room for deletes on a disk creates filled.",
    ),
    Setting(
        "TELENTIR_BLOB_URL",
        "blob_url",
        _blob_url,
        "Ciphertext store: `file:///path` or `s3://bucket/prefix` (several nodes; credentials from the standard "
        "AWS variables). Unset: the folder of TELENTIR_BLOB_DIR.",
    ),
    Setting(
        "TELENTIR_S3_ENDPOINT_URL",
        "s3_endpoint_url",
        str,
        "Endpoint of a non-AWS S3-compatible store (MinIO, R2, Ceph), e.g. `http://127.0.0.1:9000`.",
    ),
    Setting(
        "TELENTIR_BLOB_SWEEP_GRACE_SECONDS",
        "blob_sweep_grace_seconds",
        _positive_float,
        "A bucket's unreferenced blobs are swept once older than this (younger ones may await their commit).",
    ),
    Setting(
        "TELENTIR_BLOB_SWEEP_INTERVAL_SECONDS",
        "blob_sweep_interval_seconds",
        _positive_float,
        "How often one node sweeps the bucket for unreferenced blobs.",
    ),
    Setting(
        "STRIPE_WEBHOOK_SECRET",
        "stripe_webhook_secret",
        str,
        "Signing secret (`whsec_…`) of the Stripe webhook endpoint `POST /api/stripe/webhook`.",
        secret=True,
    ),
    Setting(
        "TELENTIR_RETURN_ORIGINS",
        "return_origins",
        _return_origins,
        "Comma-separated origins a billing `returnTo` may point at (e.g. `https://app.example.com`); "
        "the first is the return page when none is given.",
    ),
    Setting(
        "TELENTIR_TOPUP_MIN_USD",
        "topup_min_usd",
        _positive_int,
        "Smallest credit top-up, in whole dollars, a customer may choose on Stripe's Checkout page.",
    ),
    Setting(
        "TELENTIR_TOPUP_MAX_USD",
        "topup_max_usd",
        _positive_int,
        "Largest credit top-up, in whole dollars (at most 999999).",
    ),
    Setting(
        "TELENTIR_TOPUP_PRICE_ID",
        "topup_price_id",
        _price_id,
        "A Stripe price sold once per top-up instead of the dollar amount chosen between the bounds above.",
    ),
    Setting(
        "TELENTIR_JOB_LEASE_SECONDS",
        "job_lease_seconds",
        _positive_float,
        "A running job whose process has not heartbeaten for this long is settled by another live process "
        "(its owner heartbeats every third of it).",
    ),
)


def default_workers() -> int:
    """One worker per CPU core this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def load_config(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, then environment variables, then `overrides` (attribute names); validated."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env)
        if raw is None or raw == "":
            continue
        try:
            values[setting.attr] = setting.parse(raw)
        except (ValueError, TypeError) as exc:
            shown = "(hidden)" if setting.secret else repr(raw)  # never echo a secret into logs
            raise ConfigError(f"{setting.env}={shown} is not valid: {exc}") from exc
    values.update(_check_overrides(overrides or {}))
    return _validate(replace(Config(), **values))


def _check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(Config)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    return {k: Path(v) if k in _PATH_ATTRS and v is not None else v for k, v in overrides.items()}


_PATH_ATTRS = {"data_dir", "database", "blob_dir", "master_key_file"}


def _validate(config: Config) -> Config:
    # Overrides skip the env parsers, so the settings that would fail only later are checked here.
    if config.master_key:
        try:
            _master_key(config.master_key)
        except ValueError as exc:
            raise ConfigError(f"TELENTIR_MASTER_KEY=(hidden) is not valid: {exc}") from exc
    if config.log_level.upper() not in _LOG_LEVELS:
        raise ConfigError(
            f"TELENTIR_LOG_LEVEL={config.log_level!r} is not valid: must be one of {', '.join(_LOG_LEVELS)}"
        )
    _validate_billing(config)
    if config.signup not in SIGNUP_MODES:
        raise ConfigError(f"TELENTIR_SIGNUP={config.signup!r} is not valid: must be one of {', '.join(SIGNUP_MODES)}")
    if config.log_format not in _LOG_FORMATS:
        raise ConfigError(
            f"TELENTIR_LOG_FORMAT={config.log_format!r} is not valid: must be one of {', '.join(_LOG_FORMATS)}"
        )
    if config.metrics_token is not None:
        try:
            _metrics_token(config.metrics_token)
        except ValueError as exc:
            raise ConfigError(f"TELENTIR_METRICS_TOKEN=(hidden) is not valid: {exc}") from exc
    if config.default_plan not in config.plans:
        raise ConfigError(f"TELENTIR_DEFAULT_PLAN={config.default_plan!r} is not a key of the plan catalog")
    if config.sms_backend == "twilio" and not (
        config.twilio_account_sid and config.twilio_auth_token and config.twilio_from_number
    ):
        raise ConfigError(
            "TELENTIR_SMS_BACKEND=twilio needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM_NUMBER"
        )
    if config.scraper_hostname and not config.scraper_hostname.startswith(("http://", "https://")):
        raise ConfigError("SCRAPER_HOSTNAME must start with http:// or https://")
    for attr, parse, env in (
        ("database_url", _database_url, "TELENTIR_DATABASE_URL"),
        ("blob_url", _blob_url, "TELENTIR_BLOB_URL"),
    ):
        value = getattr(config, attr)
        if value is not None:
            try:
                parse(value)
            except ValueError as exc:
                shown = "(hidden)" if attr == "database_url" else repr(value)
                raise ConfigError(f"{env}={shown} is not valid: {exc}") from exc
    return config


TOPUP_MAX_USD = 999_999  # Stripe's largest adjustable quantity, one dollar per unit


def _validate_billing(config: Config) -> None:
    try:
        check_plans(config.plans)
    except ValueError as exc:
        raise ConfigError(f"TELENTIR_PLANS is not valid: {exc}") from exc
    if not 0 < config.topup_min_usd <= config.topup_max_usd <= TOPUP_MAX_USD:
        raise ConfigError(
            f"TELENTIR_TOPUP_MIN_USD ({config.topup_min_usd}) and TELENTIR_TOPUP_MAX_USD ({config.topup_max_usd}) "
            f"must satisfy 1 <= min <= max <= {TOPUP_MAX_USD}"
        )
    for origin in config.return_origins:
        if _return_origins(origin) != (origin,):
            raise ConfigError(f"TELENTIR_RETURN_ORIGINS: {origin!r} is not an origin in canonical form")
