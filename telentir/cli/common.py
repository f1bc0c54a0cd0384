"""What every command shares: the settings, a runtime over them, and a progress bar for long jobs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from ..config import Config, ConfigError, load_config
from ..crypto import CryptoError
from ..errors import ApiError
from ..runtime import Runtime
from ..services import audit
from ..storage.schema import SchemaError
from ..wiring import build_runtime


def config() -> Config:
    """The settings; a bad one is the command's error (exit 1)."""
    try:
        return load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@contextmanager
def runtime() -> Iterator[Runtime]:
    """A runtime over the settings, closed after the command; a service's refusal is the command's error."""
    try:
        rt = build_runtime(load_config())
    except (ConfigError, CryptoError, SchemaError) as exc:  # CryptoError: an unreadable master key file
        raise click.ClickException(str(exc)) from exc
    audit.act_as(credential="cli")  # what the operator changes is audited as theirs
    try:
        yield rt
    except ApiError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        rt.close()


def embedded_config(command: str) -> Config:
    """The settings, for a command that works on an embedded data folder's SQLite file and ciphertext files."""
    settings = config()
    if settings.uses_postgres or settings.uses_s3:
        raise click.ClickException(
            f"`telentir {command}` works on an embedded data folder (SQLite and files); with PostgreSQL and an "
            "S3 bucket use their own tools (pg_dump, the bucket's versioning): see docs/scale-out.md"
        )
    return settings


@contextmanager
def progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """click's progress bar on a terminal (and for long jobs only); nothing otherwise."""
    if not sys.stdout.isatty() or total < 100:
        yield lambda steps: None
        return
    with click.progressbar(length=total, label=label) as bar:
        yield bar.update
