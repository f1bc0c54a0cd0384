"""Admin commands: a thin click shell over the service functions, one module per group of commands.

`main` is the `telentir` command (pyproject.toml's entry point, `python -m telentir`).
"""

from __future__ import annotations

import click

from ..version import __version__
from . import api_keys, audit, backups, billing, copy_data, folder, invites, master_key, server, users
from .server import DEMO_EMAIL, ensure_demo_user

__all__ = ["DEMO_EMAIL", "ensure_demo_user", "main"]


@click.group()
@click.version_option(__version__, "--version", prog_name="telentir", message="%(prog)s %(version)s")
def main() -> None:
    """Telentir server: an open, self-hostable encrypted data plane.

    Every command acts on the data folder of TELENTIR_DATA_DIR (default ./data).
    """


for command in (
    server.serve,
    server.demo_scraper,
    folder.init,
    folder.migrate,
    copy_data.copy_data,
    backups.backup,
    backups.restore,
    backups.verify,
    master_key.master_key,
    users.users,
    api_keys.api_keys,
    billing.credits_group,
    billing.billing_group,
    invites.invites_group,
    audit.audit_log,
):
    main.add_command(command)
