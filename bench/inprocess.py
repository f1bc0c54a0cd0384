"""The per-request cost of the app alone: Flask's test client in one thread, no sockets, no gunicorn.

    python -m bench.inprocess            # microseconds per create, read and baseline request

What the HTTP scenarios cannot separate (their load tool shares the box's two cores), this
does: the Python work one request costs. It uses only `create_app` and the services, so the
same file runs against an older checkout for a before/after (`cd old && python
/path/to/bench/inprocess.py`); profile it with `python -m cProfile -s tottime`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.getcwd())  # the checkout being measured, when run as a script from it

from telentir import close_app, create_app
from telentir.services import accounts, credentials, keyring, roots

MASTER_KEY = "11" * 32
ROUNDS = 3  # the best of three rounds: the box's other load only ever adds time


def main(argv: list[str] | None = None) -> int:
    """Print µs per request for create, read and the baseline, the best of three rounds each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per round")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        app = create_app({"data_dir": str(Path(folder) / "data"), "master_key": MASTER_KEY, "log_level": "WARNING"})
        try:
            for name, request in _requests(app).items():
                _time(request, args.requests // 2)  # warm-up: caches, prepared statements
                best = min(_time(request, args.requests) for _ in range(ROUNDS))
                print(f"{name:9} {best * 1e6:7.0f} µs")
        finally:
            close_app(app)
    return 0


def _requests(app: Any) -> dict[str, Callable[[], None]]:
    """One callable per measured request, over a fresh user with a key and a store."""
    rt = app.extensions["telentir"]
    user = accounts.create_user(rt, "bench@example.com", "+15555550100", verified=True)
    headers = {"Authorization": f"Bearer {credentials.create_api_key(rt, user['id'], 'bench')['key']}"}
    roots.ensure_root(rt, user["id"])
    key = keyring.create_key(rt, user["id"], "default", None, None, "{}")
    body = {"keyId": key["id"], "content": "ab" * 1024, "authTag": "cd" * 16}  # 1 KiB of ciphertext
    client = app.test_client()
    ids: list[str] = []

    def create() -> None:
        answer = client.put("/api/objects", json=body, headers=headers)
        assert answer.status_code == 201, answer.data
        ids.append(answer.get_json()["id"])

    def read() -> None:
        answer = client.get(f"/api/objects/{ids[len(ids) // 2]}", headers=headers)
        assert answer.status_code == 200, answer.data

    def baseline() -> None:
        answer = client.get("/api/server", headers=headers)
        assert answer.status_code == 200, answer.data

    return {"create": create, "read": read, "baseline": baseline}


def _time(request: Callable[[], None], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        request()
    return (time.perf_counter() - started) / count


if __name__ == "__main__":
    sys.exit(main())
