"""Helpers for the operations tests: the CLI as a child process, and a user who writes objects."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from telentir.services import accounts, credentials

from .support import FIXED_MASTER_KEY, ROOT, runtime_over, server_env


def verified_user(data_dir: Path, master_key: str = FIXED_MASTER_KEY) -> tuple[str, str]:
    """A new phone-verified user in the data folder: (user id, API key)."""
    rt = runtime_over(data_dir, master_key=master_key)
    try:
        user = accounts.create_user(rt, f"ops{time.monotonic_ns()}@example.com", "+15555550100", verified=True)
        return user["id"], str(credentials.create_api_key(rt, user["id"], "ops")["key"])
    finally:
        rt.close()


def run_cli(
    data_dir: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m telentir ARGS` over `data_dir`, as an operator runs it (output captured, not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "telentir", *args],
        cwd=ROOT,
        env=server_env(data_dir, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class Stored:
    """An object as acknowledged by the server: what must come back byte for byte."""

    id: str
    content: str
    auth_tag: str


class ObjectWriter:
    """Creates objects for one user over HTTP, under the user's `contacts` store key."""

    def __init__(self, base_url: str, api_key: str, verify: str | bool = True) -> None:
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        # A CA file, for a server behind a TLS proxy; given per request, since requests lets
        # REQUESTS_CA_BUNDLE in the environment override a session's own setting.
        self.verify = verify
        self.base_url = base_url
        root = self.get("/api/root").json()
        self.key_id = root["stores"]["contacts"]["defaultKey"]
        self.store_id = root["stores"]["contacts"]["id"]

    def get(self, path: str) -> requests.Response:
        """GET a path of the server."""
        return self.session.get(self.base_url + path, timeout=30, verify=self.verify)

    def create(self, size: int) -> Stored:
        """PUT /api/objects with `size` random bytes; the answer must be 201."""
        body = {
            "keyId": self.key_id,
            "content": secrets.token_bytes(size).hex(),
            "authTag": secrets.token_bytes(16).hex(),
            "relatedId": self.store_id,
        }
        resp = self.session.put(self.base_url + "/api/objects", json=body, timeout=30, verify=self.verify)
        assert resp.status_code == 201, resp.text[:300]
        return Stored(resp.json()["id"], body["content"], body["authTag"])

    def replace(self, object_id: str, size: int) -> None:
        """PATCH new content (the old file is deleted after the commit)."""
        body = {"content": secrets.token_bytes(size).hex(), "authTag": secrets.token_bytes(16).hex()}
        resp = self.session.patch(
            self.base_url + f"/api/objects/{object_id}", json=body, timeout=30, verify=self.verify
        )
        assert resp.status_code == 200, resp.text[:300]

    def delete(self, object_id: str) -> None:
        """DELETE an object (its file goes after the commit)."""
        resp = self.session.delete(self.base_url + f"/api/objects/{object_id}", timeout=30, verify=self.verify)
        assert resp.status_code == 204, resp.text[:300]

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()
