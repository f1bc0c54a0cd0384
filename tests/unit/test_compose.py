"""compose.yaml: the one-box default and the `scale-out` profile, checked without a compose runtime.

No Docker or compose runs here, so the file is parsed and held to what the server and the
image read: every TELENTIR_* variable it sets is a setting of telentir/config.py, the key
is a secret the service is given, and each profile has the parts docs/deploy.md describes.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from telentir.config import SETTINGS

from ..support import ROOT

SETTING_NAMES = {setting.env for setting in SETTINGS}
SCALE_OUT = "scale-out"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return document


def _services(compose: dict[str, Any], profile: str | None) -> dict[str, dict[str, Any]]:
    """The services `docker compose [--profile profile] up` would know of (no profile: the default ones)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if not service.get("profiles") or (profile is not None and profile in service["profiles"])
    }


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=value list form
        return dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def _servers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s.get("image") == "telentir" or "build" in s}


def test_every_telentir_variable_it_sets_is_a_setting_the_server_reads(compose: dict[str, Any]) -> None:
    seen = set()
    for name, service in compose["services"].items():
        for variable in _environment(service):
            if variable.startswith("TELENTIR_"):
                seen.add(variable)
                assert variable in SETTING_NAMES, f"{name} sets {variable}, which the server does not read"
    # The file does set the variables that matter, so the check above has something to check.
    assert {"TELENTIR_MASTER_KEY_FILE", "TELENTIR_DATABASE_URL", "TELENTIR_BROKER_URL"} <= seen


def test_the_default_is_one_server_with_its_two_volumes_and_the_key_as_a_secret(compose: dict[str, Any]) -> None:
    services = _services(compose, None)
    assert list(services) == ["telentir"]
    server = services["telentir"]
    assert server["build"] == "."
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in server["volumes"]}
    assert set(mounts) == {"/data", "/keys"} and set(mounts.values()) <= set(compose["volumes"])
    _assert_key_is_a_secret(compose, server)
    assert all(port.startswith("127.0.0.1:") for port in server["ports"]), "plain HTTP stays on the host's loopback"
    assert server["read_only"] is True and server["tmpfs"] == ["/tmp"]  # what tests/operate/test_container.py runs


def _assert_key_is_a_secret(compose: dict[str, Any], server: dict[str, Any]) -> None:
    path = _environment(server)["TELENTIR_MASTER_KEY_FILE"]
    match = re.fullmatch(r"/run/secrets/([\w.-]+)", path)
    assert match, path
    assert match.group(1) in server["secrets"] and match.group(1) in compose["secrets"]
    assert "TELENTIR_MASTER_KEY" not in _environment(server), "the key is never written in the file"


def test_the_scale_out_profile_has_its_engines_two_nodes_and_nginx(compose: dict[str, Any]) -> None:
    services = _services(compose, SCALE_OUT)
    nodes = {name: s for name, s in _servers(services).items() if "TELENTIR_DATABASE_URL" in _environment(s)}
    assert len(nodes) == 2
    images = {name: str(s.get("image", "")) for name, s in services.items()}
    engines = {"postgres": "postgres:", "redis": "redis:", "s3": "minio/minio", "nginx": "nginx:"}
    for name, image in engines.items():
        assert images.get(name, "").startswith(image), (name, images.get(name))
    for name, node in nodes.items():
        env = _environment(node)
        assert "@postgres:5432/" in env["TELENTIR_DATABASE_URL"], name
        assert env["TELENTIR_BROKER_URL"].startswith("redis://redis:"), name
        assert env["TELENTIR_BLOB_URL"].startswith("s3://") and env["TELENTIR_S3_ENDPOINT_URL"] == "http://s3:9000"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
        _assert_key_is_a_secret(compose, node)  # one key for every node
        assert not set(node["depends_on"]) - set(services), name
    data = [next(v.split(":")[0] for v in node["volumes"] if v.endswith(":/data")) for node in nodes.values()]
    assert len(set(data)) == 2, "each node keeps its own local folder"
    # nginx sends to both nodes, with the event streams unbuffered.
    config = compose["configs"][services["nginx"]["configs"][0]["source"]]["content"]
    assert all(f"server {name}:8000;" in config for name in nodes)
    assert "proxy_buffering off;" in config
    assert set(services["nginx"]["depends_on"]) == set(nodes)
