"""docs/configuration.md, written from the declaration: `python -m telentir.config.docs > docs/configuration.md`.

`make docs` runs that command; tests/unit/test_configuration_doc.py fails when the file and the declaration differ.
"""

from __future__ import annotations

import sys

from .settings import SETTINGS
from .table import Setting

REGENERATE = "make docs"

_INTRO = f"""\
# Configuration

<!-- Generated from telentir/config/settings.py by `{REGENERATE}`: edit the declaration, not this file. -->

Every setting is an environment variable, read and validated at start: a bad value stops the
server with a message naming the variable. An empty variable counts as unset. `create_app({{...}})`
and `load_config({{...}})` take the same settings by field name (the variable's name in lowercase
without `TELENTIR_`, e.g. `max_body_bytes`), either as the typed value or as the variable's text;
an override goes through the same checks as the variable and is refused where the variable would be.

Secrets are marked; their values never appear in logs, error messages or `repr`.

| Variable | Type | Default | What it does |
|---|---|---|---|
"""

_OUTRO = """
## The plan catalog

The plan catalog (`TELENTIR_PLANS`) is JSON: `{"starter": {"name": "Starter",
"includedLeads": 100, "leadOverageUsdPerLead": 0.25}, …}`. The default catalog has
`starter` (100 leads/month, $0.25), `pro` (1,000, $0.20), `growth` (5,000, $0.15) and
`agency` (20,000, $0.10). Two optional fields per plan: `stripePriceId`, the Stripe price
(a monthly recurring price) that sells the plan through Checkout (a plan without one cannot
be bought there; no two plans may share one), and `monthlyPriceUsd`, shown to clients
(absent reads as 0).

## gunicorn and `make run`

gunicorn's own settings (bind, workers, threads, timeouts) live in `gunicorn.conf.py`
(`telentir/gunicorn_settings.py`). `serve` reads `GUNICORN_CMD_ARGS` as the `gunicorn`
command does, and its `--host/--port/--workers/--threads/--worker-class` options win over
both. `make run` also takes `PORT` and `SCRAPER_PORT` (8000 and 8001).
"""


def render() -> str:
    """The whole of docs/configuration.md."""
    return _INTRO + "".join(row(setting) for setting in SETTINGS) + _OUTRO


def row(setting: Setting) -> str:
    """The table row of one setting: variable (secret marked), type, default (never a secret's), meaning."""
    name = f"`{setting.env}`" + (" (secret)" if setting.secret else "")
    kind = (setting.parse.__doc__ or "").strip().splitlines()[0]
    return f"| {name} | {kind} | {_default(setting)} | {setting.doc} |\n"


def _default(setting: Setting) -> str:
    value = setting.default
    if setting.secret:
        return "(hidden)" if value is not None else "(unset)"
    if value is None:
        return "(unset)"
    if value == ():
        return "(none)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (tuple, dict)):
        return ", ".join(f"`{item}`" for item in value)
    return f"`{value}`"


def main() -> None:
    """Write docs/configuration.md to standard output."""
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
