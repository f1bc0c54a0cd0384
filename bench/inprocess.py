"""The per-request cost of the app alone: Flask's test client in one thread, no sockets, no gunicorn.

    python -m bench.inprocess            # µs per noop, baseline, read and create request, and the ratios
    python -m bench.inprocess --json     # one JSON line: {"noop_us", "baseline_us", "read_us", "create_us"}
    python -m bench.inprocess --floor    # also what a create cannot cost less than (see below)

What the HTTP scenarios cannot separate (their load tool shares the box's two cores), this
does: the Python work one request costs. `noop` is a bare Flask route (no hooks, no auth) in
an app of its own, through the same test client in the same run: the floor that Flask and
the test client cost, so the ratios to it say what this server adds, whatever the box's load.
It uses only `create_app` and the services, so the same file runs against an older checkout
for a before/after (`cd old && python /path/to/bench/inprocess.py`); profile it with
`python -m cProfile -s tottime`.

`--floor` adds two lines that bound a create from below: `bare_put`, a bare route in the
noop's app that reads the same `PUT` (2 KiB of JSON) and answers it, through the same test
client; and `create_service`, the service call a create makes (`objects.create_object`: its
id, its transaction of three statements and its COMMIT), without HTTP. A create costs at
least their sum, whatever else it does (authentication, checking the body, hooks).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.getcwd())  # the checkout being measured, when run as a script from it

from flask import Flask, request

from telentir import close_app, create_app
from telentir.services import accounts, credentials, keyring, objects, roots

MASTER_KEY = "11" * 32
ROUNDS = 10  # the best of ten rounds: the box's other load only ever adds time
ORDER = ("noop", "baseline", "read", "create")
FLOOR = ("bare_put", "create_service")


def main(argv: list[str] | None = None) -> int:
    """Print µs per request for noop, baseline, read and create (the best of ROUNDS rounds), or one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per round")
    parser.add_argument("--json", action="store_true", help='print one JSON line {"noop_us", "baseline_us", …}')
    parser.add_argument("--floor", action="store_true", help="also time a bare PUT route and a create's service call")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    with tempfile.TemporaryDirectory() as folder:
        app = create_app({"data_dir": str(Path(folder) / "data"), "master_key": MASTER_KEY, "log_level": "WARNING"})
        try:
            requests = {"noop": _noop_request(), **_requests(app)}
            if args.floor:
                requests |= _floor_requests(app)
            micros = _measure(requests, args.requests)
        finally:
            close_app(app)
    names = ORDER + FLOOR if args.floor else ORDER
    if args.json:
        print(json.dumps({f"{name}_us": round(micros[name], 1) for name in names}))
    else:
        for name in names:
            print(f"{name:14} {micros[name]:7.0f} µs  {micros[name] / micros['noop']:5.2f}× noop")
    return 0


def _measure(requests: dict[str, Callable[[], None]], count: int) -> dict[str, float]:
    """µs per request of each, the best of ROUNDS rounds of `count`, after a warm-up of half as many.

    The rounds interleave the requests, so a burst of the box's other load lands on all of them
    alike and the ratios hold. Creates come first in each round: the reads pick among their objects.
    """
    order = ("create", "read", "baseline", "noop", *(name for name in FLOOR if name in requests))
    for name in order:
        _time(requests[name], max(1, count // 2))  # warm-up: caches, prepared statements
    rounds = [{name: _time(requests[name], count) for name in order} for _ in range(ROUNDS)]
    return {name: min(one[name] for one in rounds) * 1e6 for name in order}


def _noop_request() -> Callable[[], None]:
    """A bare route in an app of its own: no before/after hooks, no middleware, no auth."""
    app = Flask("noop")
    app.add_url_rule("/noop", "noop", lambda: {"ok": True})
    client = app.test_client()

    def noop() -> None:
        answer = client.get("/noop")
        assert answer.status_code == 200, answer.data

    return noop


def _create_body(key_id: str) -> dict[str, str]:
    return {"keyId": key_id, "content": "ab" * 1024, "authTag": "cd" * 16}  # 1 KiB of ciphertext


def _user_with_key(rt: Any, email: str, phone: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A fresh verified user with its root and one key, and that key."""
    user = accounts.create_user(rt, email, phone, verified=True)
    roots.ensure_root(rt, user["id"])
    return user, keyring.create_key(rt, user["id"], "default", None, None, "{}")


def _requests(app: Any) -> dict[str, Callable[[], None]]:
    """One callable per measured request, over a fresh user with a key and a store."""
    rt = app.extensions["telentir"]
    user, key = _user_with_key(rt, "bench@example.com", "+15555550100")
    headers = {"Authorization": f"Bearer {credentials.create_api_key(rt, user['id'], 'bench')['key']}"}
    body = _create_body(key["id"])
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


def _floor_requests(app: Any) -> dict[str, Callable[[], None]]:
    """`bare_put` and `create_service` (see the module's docstring), for a user of their own."""
    rt = app.extensions["telentir"]
    user, key = _user_with_key(rt, "floor@example.com", "+15555550101")
    body = _create_body(key["id"])
    content, tag = bytes.fromhex(body["content"]), bytes.fromhex(body["authTag"])
    bare = Flask("bare")
    bare.add_url_rule("/objects", "put", lambda: ({"id": "obj_0", **request.get_json()}, 201), methods=["PUT"])
    client = bare.test_client()

    def bare_put() -> None:
        answer = client.put("/objects", json=body)
        assert answer.status_code == 201, answer.data
        answer.get_json()

    def create_service() -> None:
        objects.create_object(rt, user["id"], key["id"], content, tag, None, "{}")

    return {"bare_put": bare_put, "create_service": create_service}


def _time(request: Callable[[], None], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        request()
    return (time.perf_counter() - started) / count


if __name__ == "__main__":
    sys.exit(main())
