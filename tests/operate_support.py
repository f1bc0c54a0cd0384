"""Helpers for the operations tests: the CLI as a child process, and a user who writes objects."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from .support import ROOT, server_env


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

    def __init__(self, base_url: str, api_key: str) -> None:
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url
        root = self.get("/api/root").json()
        self.key_id = root["stores"]["contacts"]["defaultKey"]
        self.store_id = root["stores"]["contacts"]["id"]

    def get(self, path: str) -> requests.Response:
        """GET a path of the server."""
        return self.session.get(self.base_url + path, timeout=30)

    def create(self, size: int) -> Stored:
        """PUT /api/objects with `size` random bytes; the answer must be 201."""
        body = {
            "keyId": self.key_id,
            "content": secrets.token_bytes(size).hex(),
            "authTag": secrets.token_bytes(16).hex(),
            "relatedId": self.store_id,
        }
        resp = self.session.put(self.base_url + "/api/objects", json=body, timeout=30)
        assert resp.status_code == 201, resp.text[:300]
        return Stored(resp.json()["id"], body["content"], body["authTag"])

    def replace(self, object_id: str, size: int) -> None:
        """PATCH new content (the old file is deleted after the commit)."""
        body = {"content": secrets.token_bytes(size).hex(), "authTag": secrets.token_bytes(16).hex()}
        resp = self.session.patch(self.base_url + f"/api/objects/{object_id}", json=body, timeout=30)
        assert resp.status_code == 200, resp.text[:300]

    def delete(self, object_id: str) -> None:
        """DELETE an object (its file goes after the commit)."""
        resp = self.session.delete(self.base_url + f"/api/objects/{object_id}", timeout=30)
        assert resp.status_code == 204, resp.text[:300]

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()
