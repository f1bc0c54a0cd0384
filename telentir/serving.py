"""Start-up work done once in the master process, and gunicorn run from Python."""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.app.base import Application

from .config import Config, ConfigError, load_config
from .crypto import CryptoError
from .runtime import Runtime
from .storage.schema import SchemaError
from .wiring import build_runtime, migrate

log = logging.getLogger(__name__)


def prepare(config: Config) -> dict[str, int]:
    """Create what must exist and repair what a crash left (run before workers serve)."""
    from .services import ingest

    applied = migrate(config)
    for step in applied:
        log.warning("migrated the database to schema version %d: %s", step.version, step.description)
    rt = build_runtime(config)
    try:
        # Jobs first: settling them touches no files, and the sweep then sees the final rows.
        return {"migrations": len(applied), **ingest.recover(rt), "swept_blobs": sweep_blobs(rt)}
    finally:
        rt.close()


def sweep_blobs(rt: Runtime) -> int:
    """Remove ciphertext files that no object row names (left by a crash mid-write)."""
    referenced = {row["blob"] for row in rt.db.query("SELECT blob FROM objects WHERE blob IS NOT NULL")}
    removed = rt.blobs.sweep(referenced.__contains__)
    if removed:
        log.warning("start-up sweep removed %d unreferenced blob file(s)", removed)
    return removed


class GunicornServer(Application):
    """gunicorn with the package's settings, then our command-line overrides, serving create_app()."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        self.overrides = overrides
        super().__init__()

    def init(self, parser: Any, opts: Any, args: Any) -> None:
        """Unused: settings come from the file and the overrides."""

    def load_config(self) -> None:
        """Read the package's gunicorn settings, then apply the CLI's values."""
        self.load_config_from_module_name_or_filename("python:telentir.gunicorn_settings")
        for key, value in self.overrides.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self) -> Any:
        """Each worker builds its own app (connections and threads are per process)."""
        from . import create_app

        return create_app()


def serve(host: str, port: int, workers: int | None, threads: int | None, worker_class: str | None = None) -> None:
    """Run the production server in the foreground."""
    GunicornServer(
        {"bind": f"{host}:{port}", "workers": workers, "threads": threads, "worker_class": worker_class}
    ).run()


def on_starting() -> None:
    """gunicorn master hook: validate settings, prepare storage, before any worker forks."""
    try:
        config = load_config()
        report = prepare(config)
    except (ConfigError, CryptoError, SchemaError) as exc:  # CryptoError: an unreadable master key file
        log.error("cannot start: %s", exc)
        raise SystemExit(f"telentir: {exc}") from None
    log.info("storage ready: %s", report)
