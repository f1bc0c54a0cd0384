"""The documents say what is true: the README's quick start and docs/raw-http.md's snippets run, the README stays a
front page (at most 250 lines), every relative link leads somewhere, and the reference pages name every setting and
every command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click

from telentir.cli import main as cli_main
from telentir.config import SETTINGS

from ..support import ROOT

CLIENT_SOURCE = ROOT / "clients" / "python" / "src"
README_MAX_LINES = 250
LINKED_DOCUMENTS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


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


# --- the README is a front page; the rest is where it links -----------------------------------------------------


def test_the_readme_stays_a_front_page():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move detail to docs/ or CONTRIBUTING.md"


def without_code(markdown: str) -> str:
    """The document without its fenced blocks and inline code, where a `[x](y)` is text, not a link."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M))


def heading_anchors(document: Path) -> set[str]:
    """The anchors GitHub gives the document's headings: lower case, punctuation dropped, spaces as hyphens."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", without_code(document.read_text()), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def relative_links(document: Path) -> list[str]:
    """Every link and image target of the document that is not a URL."""
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", without_code(document.read_text()))
    return [target for target in targets if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def test_the_anchor_rule_matches_github():
    document = ROOT / "docs" / "deploy.md"
    assert {"13-sign-up-and-plans", "1-behind-a-reverse-proxy"} <= heading_anchors(document)
    assert "console.png" in relative_links(ROOT / "docs" / "console.md")


def test_every_relative_link_leads_to_a_file_and_heading_that_exist():
    broken = []
    for document in LINKED_DOCUMENTS:
        for target in relative_links(document):
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            if not linked.exists():
                broken.append(f"{document.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
                broken.append(f"{document.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_readme_links_every_document():
    readme = (ROOT / "README.md").read_text()
    expected = [*LINKED_DOCUMENTS[1:], ROOT / "CHANGELOG.md", ROOT / "clients" / "python" / "README.md"]
    expected.append(ROOT / "docs" / "configuration.md")  # generated from the settings: linked before it exists
    missing = [str(path.relative_to(ROOT)) for path in expected if f"]({path.relative_to(ROOT)})" not in readme]
    assert missing == []


def test_the_readme_names_the_test_commands():
    text = readme_block("sh", "make test")
    assert "make test-fast" in text and "CONTRIBUTING.md" in (ROOT / "README.md").read_text()


# --- the reference pages name everything they document ------------------------------------------------------------


def command_paths(group: click.Group, prefix: str = "") -> list[str]:
    """Every command of the admin CLI, groups and their subcommands alike (`users`, `users create`, …)."""
    paths = []
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        paths.append(path)
        if isinstance(command, click.Group):
            paths.extend(command_paths(command, path + " "))
    return paths


def test_the_cli_walk_finds_nested_commands():
    assert {
        "serve",
        "init",
        "users",
        "users create",
        "users list",
        "users verify-phone",
        "api-keys",
        "api-keys create",
        "api-keys list",
        "api-keys revoke",
    } <= set(command_paths(cli_main))


def test_the_deployment_guide_names_every_command():
    guide = (ROOT / "docs" / "deploy.md").read_text()
    cli = guide[guide.index("## 15. The admin CLI") :]
    missing = [path for path in command_paths(cli_main) if not re.search(rf"(?<![\w-]){re.escape(path)}(?![\w-])", cli)]
    assert missing == [], f"add to docs/deploy.md's admin CLI table: {missing}"


def test_the_configuration_reference_names_every_setting():
    reference = (ROOT / "docs" / "configuration.md").read_text()
    missing = [s.env for s in SETTINGS if not re.search(rf"\b{re.escape(s.env)}\b", reference)]
    assert missing == [], f"docs/configuration.md is stale: regenerate it ({missing})"
