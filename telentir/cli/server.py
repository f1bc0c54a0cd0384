"""Running servers: `serve` (gunicorn, with an optional demo user) and `demo-scraper`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .. import logs
from ..config import Config, ConfigError, load_config
from ..errors import ApiError
from ..runtime import Runtime
from ..services import accounts, credentials
from ..wiring import build_runtime

DEMO_EMAIL = "demo@localhost.localdomain"
DEMO_PHONE = "+15555550100"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option(
    "--workers", type=click.IntRange(1, 64), help="Worker processes (default: TELENTIR_WORKERS, else one per core)."
)
@click.option("--threads", type=click.IntRange(1, 4096), help="Threads per worker (gthread).")
@click.option(
    "--worker-class",
    type=click.Choice(["gthread", "gevent"]),
    help="gunicorn worker: gthread (default) or gevent (one event loop per worker).",
)
@click.option("--demo", is_flag=True, help="Create a demo user once; print its API key and the console's address.")
def serve(host: str, port: int, workers: int | None, threads: int | None, worker_class: str | None, demo: bool) -> None:
    """Run the production server (gunicorn); refused while another server holds the data folder.

    Example: python -m telentir serve --port 8000 --demo
    """
    from ..serving import serve as run_server
    from ..serving import stop_multiprocess_metrics, use_multiprocess_metrics

    try:
        config = load_config()
        logs.configure(config.log_level, config.log_format)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc

    def announce_demo(config: Config) -> None:
        rt = build_runtime(config)
        try:
            _announce_demo(rt, host, port)
        finally:
            rt.close()

    # Before anything counts: the master and its workers share one metrics folder.
    use_multiprocess_metrics()
    try:
        # The gunicorn master takes the folder's lock before binding, then repairs storage once
        # the port is bound (telentir.serving): nothing is touched here.
        run_server(
            host, port, workers or config.worker_count, threads, worker_class, on_ready=announce_demo if demo else None
        )
    finally:
        stop_multiprocess_metrics()


def _announce_demo(rt: Runtime, host: str, port: int) -> None:
    key = ensure_demo_user(rt)
    click.echo(
        f"Demo user: {DEMO_EMAIL}\nDemo API key: {key}\n"
        f"Console: http://{host}:{port}/console (sign in with the API key)\n"
        f"Try: curl -H 'Authorization: Bearer {key}' http://{host}:{port}/api/root"
    )


def ensure_demo_user(rt: Runtime) -> str:
    """Create the demo user (once) and return a live API key for it, kept in the data dir."""
    try:
        user = accounts.find_user_by_email(rt, DEMO_EMAIL)
    except ApiError:
        user = accounts.create_user(rt, DEMO_EMAIL, DEMO_PHONE, first_name="Demo", last_name="User", verified=True)
    key_file = rt.config.data_dir / "demo-api-key"
    if key_file.exists():
        key = key_file.read_text().strip()
        try:
            if credentials.authenticate(rt, key)["id"] == user["id"]:
                return key
        except ApiError:
            pass  # revoked or from another database: mint a new one
    new_key = str(credentials.create_api_key(rt, user["id"], "demo")["key"])
    _write_private(key_file, new_key + "\n")
    return new_key


def _write_private(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


@click.command("demo-scraper")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8001, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
def demo_scraper(host: str, port: int) -> None:
    """Run a local scraper that streams fake leads over SSE (for development).

    Example: python -m telentir demo-scraper --port 8001
    """
    from ..demo_scraper import serve_demo_scraper

    serve_demo_scraper(host, port)
