"""`pip install ./clients/python` into a bare venv: the client and its two dependencies, none of the server's; it works.

The venv is made with `python -m venv` (no system site-packages) outside the checkout, and
gets the client from a copy of `clients/python` plus the project's pins of requests and
cryptography (requirements.lock). Then the installed client and its command talk to a real
server, with no PYTHONPATH and the checkout out of reach.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CLIENT_ROOT = Path(__file__).resolve().parents[1]
CHECKOUT = CLIENT_ROOT.parents[1]
# What the two dependencies bring; anything else in the venv would be a leak of the server's.
ALLOWED = {
    "telentir-client",
    "requests",
    "cryptography",
    "urllib3",
    "idna",
    "certifi",
    "charset-normalizer",
    "cffi",
    "pycparser",
    "pip",
    "setuptools",
    "typing-extensions",  # cryptography's, on older Pythons
}

SCRIPT = r"""
import json, os, sys
from telentir_client import Telentir, TelentirError

out = {"module": __import__("telentir_client").__file__}
telentir = Telentir.connect(api_key=os.environ["KEY"], api=os.environ["API"])
with telentir.events.listen("object_created") as stream:
    first = telentir.contacts.create({"name": "Ada"})
    out["event"] = dict(next(stream))
task = telentir.store("tasks").create({"title": "call back"})
telentir.store("tasks").update(task, {"title": "called"})
out["task"] = telentir.store("tasks").get(task)
out["contacts"] = telentir.contacts.all()
telentir.contacts.publish(first)
telentir.contacts.unpublish(first)
telentir.contacts.delete(first)
try:
    telentir.contacts.get(first)
except TelentirError as exc:
    out["deleted"] = [exc.status, exc.code]
out["credits"] = telentir.credits.get_balance()
out["plan"] = telentir.billing.get_state()["plan"]["key"]
try:
    Telentir.connect(api_key="tlk_wrong", api=os.environ["API"])
except TelentirError as exc:
    out["bad_key"] = [exc.status, exc.code]
print(json.dumps(out))
"""


def pin(name: str) -> str:
    """`name==version` as the project's lock pins it."""
    found = re.search(rf"^{name}==([^\s\\]+)", (CHECKOUT / "requirements.lock").read_text(), flags=re.M)
    assert found, f"{name} is not pinned in requirements.lock"
    return f"{name}=={found.group(1)}"


def bare_env(**extra: str) -> dict[str, str]:
    """The environment without PYTHON* variables (no path into the checkout) and without TELENTIR_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TELENTIR_", "VIRTUAL_ENV"))}
    return {**env, **extra}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the client installed from a copy of clients/python; its bin/."""
    work = tmp_path_factory.mktemp("client-install")
    source = work / "source"
    shutil.copytree(
        CLIENT_ROOT, source, ignore=shutil.ignore_patterns("__pycache__", "tests", "*.egg-info", "build", ".mypy_cache")
    )
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, timeout=120)
    pip = [str(work / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run(
        [*pip, str(source), pin("requests"), pin("cryptography")],
        cwd=work,
        env=bare_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return work / "venv" / "bin"


def run(venv: Path, args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=tmp_path, env=bare_env(**env), capture_output=True, text=True, timeout=120, check=False
    )


def test_the_venv_holds_the_client_and_its_two_dependencies_only(venv: Path, tmp_path: Path) -> None:
    listed = run(venv, [str(venv / "python"), "-m", "pip", "list", "--format=json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = {entry["name"].lower().replace("_", "-") for entry in json.loads(listed.stdout)}
    assert {"telentir-client", "requests", "cryptography"} <= names
    assert names <= ALLOWED, names - ALLOWED
    for module in ("flask", "gunicorn", "telentir", "stripe", "redis", "jwt"):
        probe = run(venv, [str(venv / "python"), "-c", f"import {module}"], tmp_path)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module
    typed = run(
        venv,
        [
            str(venv / "python"),
            "-c",
            "import importlib.resources as r; print(r.files('telentir_client').joinpath('py.typed').is_file())",
        ],
        tmp_path,
    )
    assert typed.stdout.strip() == "True", typed.stderr


def test_the_installed_client_works_against_a_live_server(
    venv: Path, tmp_path: Path, new_user: Callable[..., dict[str, Any]], api_url: str
) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = run(venv, [str(venv / "python"), str(script)], tmp_path, KEY=new_user(balance=500)["api_key"], API=api_url)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["module"].startswith(str(venv.parent)) and "clients" not in out["module"]
    assert out["event"]["name"] == "Ada" and out["event"]["id"].startswith("obj_")
    assert out["task"] == {"title": "called", "id": out["task"]["id"]}
    assert out["contacts"] == [{"name": "Ada", "id": out["event"]["id"]}]
    assert out["deleted"] == [404, "not_found"] and out["bad_key"] == [401, "unauthorized"]
    assert out["credits"] == {"amount": 500, "currency": "usd"} and out["plan"] == "tiny"


def test_the_command_puts_gets_lists_exports_watches_and_deletes(
    venv: Path, tmp_path: Path, new_user: Callable[..., dict[str, Any]], api_url: str
) -> None:
    env = {"TELENTIR_API_KEY": new_user()["api_key"], "TELENTIR_API": api_url}
    command = str(venv / "telentir-client")

    put = run(venv, [command, "put", "contacts", "--data", '{"name": "Ada"}'], tmp_path, **env)
    assert put.returncode == 0, put.stderr
    object_id = put.stdout.strip()
    got = run(venv, [command, "get", "contacts", object_id], tmp_path, **env)
    assert json.loads(got.stdout) == {"name": "Ada", "id": object_id}
    replaced = subprocess.run(
        [command, "put", "contacts", object_id], input='{"name": "Ada King"}', cwd=tmp_path, env=bare_env(**env),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert replaced.returncode == 0, replaced.stderr
    listed = run(venv, [command, "list", "contacts"], tmp_path, **env)
    assert [json.loads(line) for line in listed.stdout.splitlines()] == [{"name": "Ada King", "id": object_id}]
    exported = run(venv, [str(venv / "python"), "-m", "telentir_client", "export"], tmp_path, **env)
    assert [json.loads(line) for line in exported.stdout.splitlines()] == [
        {"store": "contacts", "item": {"name": "Ada King", "id": object_id}}
    ]

    store_id = json.loads(run(venv, [str(venv / "python"), "-c", WHICH_STORE], tmp_path, **env).stdout)
    with subprocess.Popen(
        [command, "watch", "object_created", "--filter", f"relatedId={store_id}", "--since", "0"],
        cwd=tmp_path, env=bare_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as watcher:  # fmt: skip
        try:
            assert watcher.stdout is not None
            line = watcher.stdout.readline()
        finally:
            watcher.terminate()
            watcher.wait(timeout=30)
    event = json.loads(line)
    assert event["type"] == "object_created" and event["data"]["id"] == object_id and event["event_id"] > 0

    deleted = run(venv, [command, "delete", "contacts", object_id], tmp_path, **env)
    assert deleted.returncode == 0, deleted.stderr
    missing = run(venv, [command, "get", "contacts", object_id], tmp_path, **env)
    assert missing.returncode == 1 and "404 not_found" in missing.stderr
    refused = run(venv, [command, "list", "contacts"], tmp_path, TELENTIR_API_KEY="tlk_wrong", TELENTIR_API=api_url)
    assert refused.returncode == 1 and "401" in refused.stderr and not refused.stdout


WHICH_STORE = """
import json
from telentir_client import Telentir
print(json.dumps(Telentir.connect().contacts.id))
"""
