# ruff: noqa: RUF009  (`setting` returns a dataclasses.field, as `field(...)` would)
"""The settings, declared once: each is a field of `Config` with its parser, meaning, environment name and secrecy.

`SETTINGS` (one row per field, read off the fields) is what loading and docs/configuration.md use;
to add a setting, add a field here with `setting(...)` and run `make docs`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import billing, parsers
from .billing import DEFAULT_PLANS
from .table import Setting, rows_of, setting


@dataclass(frozen=True)
class Config:
    """The server's typed settings; build it with `load_config`, which parses and checks every value.

    Each field is one setting (see `setting`); the properties below derive from them.
    `Config(...)` itself checks nothing: only `load_config` does.
    """

    data_dir: Path = setting(Path("data"), parsers.path, "Folder for the database, blobs and master key.")
    database: Path | None = setting(None, parsers.path, "SQLite database file (default `<data dir>/telentir.db`).")
    blob_dir: Path | None = setting(None, parsers.path, "Folder of ciphertext files (default `<data dir>/blobs`).")
    master_key: str | None = setting(
        None,
        parsers.master_key,
        "Master key sealing secrets at rest: 32 bytes as hex or base64. Unset: a key file is used.",
        secret=True,
    )
    master_key_file: Path | None = setting(
        None,
        parsers.path,
        "Master key file, created 0600 on first start (default `<data dir>/master.key`).",
    )
    server_name: str = setting("telentir", parsers.server_name, "Name of the platform server in `GET /api/server`.")
    broker_url: str = setting(
        "memory://",
        parsers.broker_url,
        "Event broker: `memory://` (the workers of one box) or `redis://host:port/db` (any number of boxes).",
    )
    max_body_bytes: int = setting(
        16 * 1024 * 1024,
        parsers.positive_int,
        "Largest request body accepted (413 past it).",
    )
    header_timeout_seconds: float = setting(
        10.0,
        parsers.positive_float,
        "A connection that has not sent its whole request header block within this many seconds gets 408 and is "
        "closed; until then it holds no worker thread.",
    )
    max_metadata_bytes: int = setting(16 * 1024, parsers.positive_int, "Largest `metadata` object, as compact JSON.")
    inline_max_bytes: int = setting(
        16 * 1024,
        parsers.non_negative_int,
        "Ciphertexts up to this size live in the database row; larger ones in files (0: always files). "
        "See “Where ciphertext lives” in docs/architecture.md.",
    )
    sse_heartbeat_seconds: float = setting(
        15.0,
        parsers.positive_float,
        "Seconds between keep-alive comments on an idle event stream.",
    )
    sse_retry_ms: int = setting(3000, parsers.positive_int, "`retry:` sent to event-stream clients.")
    sse_hub: bool = setting(
        True,
        parsers.boolean,
        "Serve live SSE streams under gunicorn from one hub per process instead of a thread each.",
    )
    sse_batch_ms: int = setting(
        100,
        parsers.non_negative_int,
        "A busy stream not served by the hub sends at most one batch per this many ms (an idle one sends at "
        "once); 0 sends each event alone.",
    )
    sse_max_streams: int = setting(
        200,
        parsers.positive_int,
        "Open event streams (SSE + WebSocket) the server serves, all its worker processes together; 503 past it. "
        "Keep below gunicorn's threads.",
    )
    sse_max_streams_per_user: int = setting(
        50,
        parsers.positive_int,
        "Open event streams one user may hold on the server (all workers together); 429 past it. Past the fair "
        "share below, only while half of `TELENTIR_SSE_MAX_STREAMS` is free.",
    )
    sse_fair_share_users: int = setting(
        8,
        parsers.positive_int,
        "A user's fair share of streams is max(1, `TELENTIR_SSE_MAX_STREAMS` // this) (25 by default); past it a "
        "user opens more only while half the box's cap is free, kept for users below their share; 1 turns the "
        "fair share off.",
    )
    event_retention_seconds: int = setting(
        7 * 24 * 3600,
        parsers.positive_int,
        "Events older than this are pruned (streams resuming from before them get `resync`).",
    )
    event_retention_count: int = setting(
        1000000,
        parsers.positive_int,
        "At most this many events are kept; older ones are pruned.",
    )
    event_prune_interval_seconds: float = setting(60.0, parsers.positive_float, "How often the background pruner runs.")
    audit_retention_days: int = setting(
        365,
        parsers.positive_int,
        "Audit log entries (`GET /api/audit`, `telentir audit`) older than this many days are pruned.",
    )
    plans: dict[str, dict[str, Any]] = setting(
        DEFAULT_PLANS,
        billing.plans,
        "JSON plan catalog: key -> {name, includedLeads, leadOverageUsdPerLead, stripePriceId?, monthlyPriceUsd?}.",
    )
    default_plan: str = setting(
        "starter",
        parsers.text,
        "Plan key given to new users (an invite's `--plan` overrides it).",
    )
    signup: str = setting(
        "closed",
        parsers.signup,
        "Who may register with `POST /api/auth/register`: `closed` (nobody: accounts come from the CLI), `invite`"
        " (with a code from `telentir invites create`) or `open` (anyone).",
    )
    scraper_hostname: str | None = setting(
        None,
        parsers.http_url,
        "Base URL of the scraper service for `POST /api/connect`.",
        env="SCRAPER_HOSTNAME",
    )
    stripe_secret_key: str | None = setting(
        None,
        parsers.text,
        "Enables Stripe mode for prepaid balances.",
        env="STRIPE_SECRET_KEY",
        secret=True,
    )
    stripe_api_base: str | None = setting(
        None,
        parsers.text,
        "Override of Stripe's API address (tests, proxies).",
        env="STRIPE_API_BASE",
    )
    synchronous: str = setting(
        "NORMAL",
        parsers.synchronous,
        "SQLite `synchronous`: NORMAL survives a process crash, FULL also power loss.",
    )
    sqlite_cache_mib: int = setting(
        2,
        parsers.positive_int,
        "SQLite page cache per connection (one connection per thread), MiB. More speeds up reads of a large "
        "database at the cost of memory per busy thread (see `bench/RESULTS.md`).",
    )
    jwt_ttl_seconds: int = setting(24 * 3600, parsers.positive_int, "Lifetime of a session token.")
    jwt_remember_ttl_seconds: int = setting(
        30 * 24 * 3600,
        parsers.positive_int,
        "Lifetime of a session token when logging in with `remember`.",
    )
    cookie_secure: bool = setting(False, parsers.boolean, "Mark the `token` cookie Secure (behind HTTPS).")
    proxy_hops: int = setting(
        0,
        parsers.non_negative_int,
        "Reverse proxies in front whose X-Forwarded-For is trusted (rate limits use the client address).",
    )
    sms_backend: str = setting(
        "log",
        parsers.sms_backend,
        "`log` writes phone codes to the server log; `twilio` sends them.",
    )
    twilio_account_sid: str | None = setting(
        None,
        parsers.text,
        "Twilio account for the `twilio` SMS backend.",
        env="TWILIO_ACCOUNT_SID",
    )
    twilio_auth_token: str | None = setting(
        None,
        parsers.text,
        "Twilio auth token.",
        env="TWILIO_AUTH_TOKEN",
        secret=True,
    )
    twilio_from_number: str | None = setting(
        None,
        parsers.text,
        "Sender number for SMS codes.",
        env="TWILIO_FROM_NUMBER",
    )
    phone_code_ttl_seconds: int = setting(600, parsers.positive_int, "How long a phone code stays valid.")
    auth_max_attempts: int = setting(
        5,
        parsers.positive_int,
        "Failed sign-ins (or phone-code checks) of one account from one client address in one window; past it "
        "that address is refused for that account (429) until the window frees. The owner, from another address, "
        "is not affected.",
    )
    auth_address_max_attempts: int = setting(
        20,
        parsers.positive_int,
        "Failed sign-ins (or phone-code checks) from one client address, whatever the accounts, in one window; "
        "past it the address is refused (429) until the window frees.",
    )
    auth_account_max_attempts: int = setting(
        20,
        parsers.positive_int,
        "Failed sign-ins (or phone-code checks) of one account from all addresses in "
        "TELENTIR_AUTH_ACCOUNT_WINDOW_SECONDS before each further attempt must wait (429 with a short Retry-After"
        " that doubles per failure).",
    )
    auth_account_window_seconds: int = setting(
        24 * 3600,
        parsers.positive_int,
        "The window, in seconds, over which the failures of one account from all addresses are counted: long, so "
        "that guessing spread over many addresses stays at one guess per longest wait.",
    )
    auth_max_delay_seconds: int = setting(
        60,
        parsers.positive_int,
        "Longest of those waits between attempts on one account (a slowdown, never a lockout).",
    )
    auth_window_seconds: int = setting(
        900,
        parsers.positive_int,
        "The window, in seconds, over which sign-in and phone-code failures are counted.",
    )
    sms_per_phone_per_hour: int = setting(
        5,
        parsers.positive_int,
        "Texts sent to one phone number in any hour, whichever accounts ask (the server and all its nodes "
        "together); 429 past it, nothing sent.",
    )
    signups_per_address_per_hour: int = setting(
        10,
        parsers.positive_int,
        "Sign-ups (`POST /api/auth/register`) from one client address (an IPv6 /64) in any hour, the server and "
        "all its nodes together; 429 past it, no account made.",
    )
    exports_per_user_per_hour: int = setting(
        20,
        parsers.positive_int,
        "Exports (`GET /api/account/export`, each reads the whole account) one user may start in any hour; "
        "429 past it.",
    )
    password_resets_per_address_per_hour: int = setting(
        10,
        parsers.positive_int,
        "Password reset requests (`POST /api/auth/password/reset`) from one client address (an IPv6 /64) in any "
        "hour, the server and all its nodes together; 429 past it, nothing sent.",
    )
    log_level: str = setting(
        "INFO",
        parsers.log_level,
        "Python log level of the server: DEBUG, INFO, WARNING, ERROR or CRITICAL (request lines are INFO).",
    )
    log_format: str = setting(
        "auto",
        parsers.log_format,
        "`json` (one object per line), `text`, or `auto`: JSON unless the log is a terminal.",
    )
    metrics_token: str | None = setting(
        None,
        parsers.metrics_token,
        "Enables `GET /metrics` for `Authorization: Bearer <this token>` (unset: 404). At least 16 characters.",
        secret=True,
    )
    workers: int | None = setting(
        None,
        parsers.positive_int,
        "gunicorn worker processes `serve` starts (default: one per CPU core; `serve --workers` overrides).",
    )
    connect_workers: int = setting(
        4,
        parsers.non_negative_int,
        "Threads running ingestion jobs per process (0 runs each job in its request thread).",
    )
    connect_per_user: int = setting(
        2,
        parsers.positive_int,
        "Ingestion jobs one user may run at once (in every worker and node together); 429 past it.",
    )
    connect_connect_timeout: float = setting(5.0, parsers.positive_float, "Seconds to connect to the scraper.")
    connect_read_timeout: float = setting(
        30.0,
        parsers.positive_float,
        "Seconds the scraper may stay silent before the job fails.",
    )
    connect_max_seconds: float = setting(3600.0, parsers.positive_float, "Longest an ingestion job may run.")
    connect_max_frame_bytes: int = setting(
        1024 * 1024,
        parsers.positive_int,
        "Largest SSE frame accepted from the scraper; a larger one fails the job.",
    )
    connect_max_params_bytes: int = setting(
        64 * 1024,
        parsers.positive_int,
        "Largest `params` object of POST /api/connect, as JSON.",
    )
    connect_max_records: int = setting(
        100000,
        parsers.positive_int,
        "Most records one job writes when no credits limit it.",
    )
    connect_batch_size: int = setting(200, parsers.positive_int, "Records committed per ingestion transaction.")
    connect_batch_seconds: float = setting(
        0.5,
        parsers.positive_float,
        "Longest a received record waits before its batch commits.",
    )
    connect_paths: tuple[str, ...] | None = setting(
        None,
        parsers.connector_paths,
        "Comma-separated scraper paths `POST /api/connect` may call (compared without case; 400 otherwise). "
        "Unset: any well-formed path.",
    )
    billed_paths: tuple[str, ...] = setting(
        ("/get-leads",),
        parsers.connector_paths,
        "Comma-separated scraper paths whose records spend lead credits (compared without case).",
    )
    quota_bytes_per_user: int | None = setting(
        None,
        parsers.positive_int,
        "Ciphertext bytes one user may store (objects, ingested records included); a write past it is a 413 "
        "`quota_exceeded`. Unset: no quota.",
    )
    max_api_keys_per_user: int = setting(
        100,
        parsers.positive_int,
        "Live (unrevoked) API keys one user may hold; creating one more is a 409 `too_many_api_keys`.",
    )
    max_servers_per_user: int = setting(
        20,
        parsers.positive_int,
        "Servers one user may register with `POST /api/servers`; one more is a 409 `too_many_servers`.",
    )
    rsa_generations_per_hour: int = setting(
        10,
        parsers.positive_int,
        "Key pairs one user may have the server generate (`POST /api/servers` with `generate`) per rolling hour; "
        "429 with Retry-After past it.",
    )
    stripe_timeout_seconds: float = setting(10.0, parsers.positive_float, "Timeout of each Stripe call.")
    refund_retry_seconds: float = setting(
        60.0,
        parsers.positive_float,
        "How often pending Stripe refunds are retried in the background.",
    )
    database_url: str | None = setting(
        None,
        parsers.database_url,
        "Metadata database: `sqlite:///path/to/file` or `postgresql://user:pass@host:5432/db` (several nodes). "
        "Unset: the SQLite file of TELENTIR_DATABASE.",
        secret=True,
    )
    database_pool_size: int = setting(
        20,
        parsers.positive_int,
        "PostgreSQL connections each process keeps at most (a statement borrows one; a transaction holds one).",
    )
    min_free_bytes: int = setting(
        0,
        parsers.non_negative_int,
        "Free disk space kept in reserve: below it, data-plane writes (POST, PUT, PATCH) answer 507 "
        "`insufficient_storage` while reads and deletes keep working. The server keeps at least 8 MiB free (an "
        "eighth of a disk under 64 MiB) whatever this says: room for deletes on a disk creates filled.",
    )
    blob_url: str | None = setting(
        None,
        parsers.blob_url,
        "Ciphertext store: `file:///path` or `s3://bucket/prefix` (several nodes; credentials from the standard "
        "AWS variables). Unset: the folder of TELENTIR_BLOB_DIR.",
    )
    s3_endpoint_url: str | None = setting(
        None,
        parsers.text,
        "Endpoint of a non-AWS S3-compatible store (MinIO, R2, Ceph), e.g. `http://127.0.0.1:9000`.",
    )
    blob_sweep_grace_seconds: float = setting(
        3600.0,
        parsers.positive_float,
        "A bucket's unreferenced blobs are swept once older than this (younger ones may await their commit).",
    )
    blob_sweep_interval_seconds: float = setting(
        3600.0,
        parsers.positive_float,
        "How often one node sweeps the bucket for unreferenced blobs.",
    )
    stripe_webhook_secret: str | None = setting(
        None,
        parsers.text,
        "Signing secret (`whsec_…`) of the Stripe webhook endpoint `POST /api/stripe/webhook`.",
        env="STRIPE_WEBHOOK_SECRET",
        secret=True,
    )
    return_origins: tuple[str, ...] = setting(
        (),
        billing.return_origins,
        "Comma-separated origins a billing `returnTo` may point at (e.g. `https://app.example.com`); the first is"
        " the return page when none is given.",
    )
    topup_min_usd: int = setting(
        5,
        parsers.positive_int,
        "Smallest credit top-up, in whole dollars, a customer may choose on Stripe's Checkout page.",
    )
    topup_max_usd: int = setting(500, parsers.positive_int, "Largest credit top-up, in whole dollars (at most 999999).")
    topup_price_id: str | None = setting(
        None,
        billing.price_id,
        "A Stripe price sold once per top-up instead of the dollar amount chosen between the bounds above.",
    )
    job_lease_seconds: float = setting(
        30.0,
        parsers.positive_float,
        "A running job whose process has not heartbeaten for this long is settled by another live process "
        "(its owner heartbeats every third of it). See “Jobs, leases and money” in docs/architecture.md.",
    )

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


def default_workers() -> int:
    """One worker per CPU core this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


SETTINGS: tuple[Setting, ...] = rows_of(Config)
SETTINGS_BY_ATTR: dict[str, Setting] = {s.attr: s for s in SETTINGS}
