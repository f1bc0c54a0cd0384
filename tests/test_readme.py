"""The README's quick start does what it says: its object snippet runs against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from .support import ROOT


def readme_block(language: str, containing: str) -> str:
    """The README's first fenced block of `language` that contains `containing`."""
    blocks = re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    found = [block for block in blocks if containing in block]
    assert found, f"no ```{language} block with {containing!r} in the README"
    return found[0]


def test_the_create_an_object_snippet_encrypts_stores_and_reads_back(live_server, new_live_user, tmp_path):
    user, _ = new_live_user()
    script = tmp_path / "create_object.py"
    script.write_text(readme_block("python", "AESGCM"))
    env = {**os.environ, "KEY": user["api_key"], "BASE": live_server.url}
    command = [sys.executable, str(script)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    object_id, _, plain = result.stdout.strip().partition(" ")
    assert object_id.startswith("obj_") and plain == "{'name': 'Ada Lovelace'}"


def test_the_readme_names_the_make_run_ports():
    text = (ROOT / "README.md").read_text()
    assert "SCRAPER_PORT" in text and "make run PORT=" in text
