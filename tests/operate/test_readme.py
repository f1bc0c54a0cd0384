"""The README's quick start does what it says: its client snippet, and the raw-HTTP ones of docs/raw-http.md, run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from ..support import ROOT

CLIENT_SOURCE = ROOT / "clients" / "python" / "src"


def doc_block(document: Path, language: str, containing: str) -> str:
    """The document's first fenced block of `language` that contains `containing`."""
    blocks = re.findall(rf"```{language}\n(.*?)```", document.read_text(), flags=re.S)
    found = [block for block in blocks if containing in block]
    assert found, f"no ```{language} block with {containing!r} in {document.name}"
    return found[0]


def readme_block(language: str, containing: str) -> str:
    """The README's first fenced block of `language` that contains `containing`."""
    return doc_block(ROOT / "README.md", language, containing)


def run_snippet(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "snippet.py"
    script.write_text(code)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TELENTIR_", "PYTHONPATH"))}
    return subprocess.run(
        [sys.executable, str(script)],
        env={**environment, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_quick_start_client_snippet_creates_and_reads_back(live_server, new_live_user, tmp_path):
    """The quick start's snippet, with the client from clients/python (as `pip install ./clients/python` gives it)."""
    user, api = new_live_user()
    code = readme_block("python", "from telentir_client import Telentir")
    env = {"TELENTIR_API_KEY": user["api_key"], "TELENTIR_API": live_server.url + "/api"}
    result = run_snippet(code, tmp_path, PYTHONPATH=str(CLIENT_SOURCE), **env)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip()
    found = re.fullmatch(r"\{'name': 'Ada Lovelace', 'id': '(obj_[A-Za-z0-9]{22})'\}", printed)
    assert found, printed
    # Stored as ciphertext, under the contacts store.
    record = api.get(f"/objects/{found.group(1)}").json()
    assert "Ada" not in record["content"] and record["related_object_id"]


def test_the_readme_installs_the_client_from_its_folder():
    assert "pip install ./clients/python" in readme_block("sh", "pip install")
    assert "docs/raw-http.md" in (ROOT / "README.md").read_text()


def test_the_raw_http_snippet_with_a_minted_key_encrypts_stores_and_reads_back(live_server, new_live_user, tmp_path):
    user, _ = new_live_user()
    code = doc_block(ROOT / "docs" / "raw-http.md", "python", "AESGCM(private_key.decrypt")
    result = run_snippet(code, tmp_path, KEY=user["api_key"], BASE=live_server.url)
    assert result.returncode == 0, result.stderr
    object_id, _, plain = result.stdout.strip().partition(" ")
    assert object_id.startswith("obj_") and plain == "{'name': 'Ada Lovelace'}"


def test_the_raw_http_snippet_with_a_key_made_here_stores_what_the_client_reads(live_server, new_live_user, tmp_path):
    user, _ = new_live_user()
    code = doc_block(ROOT / "docs" / "raw-http.md", "python", "generate_key")
    result = run_snippet(code, tmp_path, KEY=user["api_key"], BASE=live_server.url)
    assert result.returncode == 0, result.stderr
    object_id, _, same_key = result.stdout.strip().partition(" ")
    assert same_key == "True"
    read = f"from telentir_client import Telentir\nprint(Telentir.connect().contacts.get({object_id!r})['name'])\n"
    env = {"TELENTIR_API_KEY": user["api_key"], "TELENTIR_API": live_server.url + "/api"}
    back = run_snippet(read, tmp_path, PYTHONPATH=str(CLIENT_SOURCE), **env)
    assert back.returncode == 0 and back.stdout.strip() == "Grace Hopper", back.stderr


def test_the_readme_names_the_make_run_ports():
    text = (ROOT / "README.md").read_text()
    assert "SCRAPER_PORT" in text and "make run PORT=" in text
