"""docs/configuration.md is generated from the settings' declaration and kept in step with it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from telentir.config import SETTINGS, docs, load_config

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"


def test_the_configuration_reference_is_up_to_date():
    assert REFERENCE.read_text() == docs.render(), (
        f"docs/configuration.md is stale: run `{docs.REGENERATE}` "
        "(python -m telentir.config.docs > docs/configuration.md) and commit it"
    )


def test_the_generator_runs_as_a_module():
    written = subprocess.run(
        [sys.executable, "-m", "telentir.config.docs"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert written.stdout == docs.render()


def _rows() -> dict[str, list[str]]:
    rows = {}
    for line in docs.render().splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows[cells[0].split("`")[1]] = cells
    return rows


def test_every_setting_has_one_row_with_its_type_default_and_meaning():
    rows = _rows()
    assert list(rows) == [s.env for s in SETTINGS]
    for setting in SETTINGS:
        name, kind, default, doc = rows[setting.env]
        assert kind and default and doc == setting.doc
        assert ("(secret)" in name) == setting.secret


def test_a_secret_default_is_never_printed():
    rows = _rows()
    assert all(rows[s.env][2] == "(unset)" for s in SETTINGS if s.secret)
    secret = next(s for s in SETTINGS if s.secret)
    shown = docs.row(replace(secret, default="s3cr3t-default"))
    assert "s3cr3t" not in shown and "(hidden)" in shown


def test_defaults_are_printed_as_a_variable_would_spell_them():
    rows = _rows()
    assert rows["TELENTIR_MAX_BODY_BYTES"][2] == "`16777216`"
    assert rows["TELENTIR_SSE_HUB"][2] == "`true`"
    assert rows["TELENTIR_BILLED_PATHS"][2] == "`/get-leads`"
    assert rows["TELENTIR_DATABASE_URL"][2] == "(unset)"
    environ = {env: cells[2].strip("`") for env, cells in rows.items() if cells[2].startswith("`")}
    environ.pop("TELENTIR_PLANS")  # the catalog's row names its plans, not its JSON
    assert load_config(environ=environ) == load_config(environ={})
