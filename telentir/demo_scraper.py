"""A local stand-in for the scraper service, for development: realistic fake leads over SSE.

`POST /get-leads {"credits": N}` streams exactly N leads (never more); `POST /<anything>
{"count": N}` streams N generic records. `delayMs` slows each frame down.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

import click
from flask import Flask, Response, jsonify, request

MAX_RECORDS = 1_000_000
FIRST = ["Ada", "Grace", "Alan", "Katherine", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Radia"]
LAST = ["Lovelace", "Hopper", "Turing", "Johnson", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson", "Perlman"]
COMPANIES = ["Acme Corp", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries", "Wayne Enterprises"]
TITLES = ["CEO", "CTO", "Head of Sales", "Operations Manager", "Founder", "VP Marketing"]
CITIES = ["Austin", "Berlin", "Lagos", "Lisbon", "Melbourne", "Toronto", "Singapore"]


def fake_lead(rng: random.Random, n: int) -> dict[str, Any]:
    """One plausible lead."""
    first, last, company = rng.choice(FIRST), rng.choice(LAST), rng.choice(COMPANIES)
    domain = company.lower().replace(" ", "") + ".example"
    return {
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{n}@{domain}",
        "phone": f"+1555{rng.randrange(10**7):07d}",
        "company": company,
        "title": rng.choice(TITLES),
        "city": rng.choice(CITIES),
        "source": "demo-scraper",
    }


def _count(params: dict[str, Any], name: str, default: int) -> int:
    value = params.get(name, default)
    return max(0, min(int(value), MAX_RECORDS)) if isinstance(value, int) and not isinstance(value, bool) else default


def _frames(count: int, delay: float, seed: int) -> Iterator[str]:
    rng = random.Random(seed)  # noqa: S311 - fake leads, reproducible by seed: no secret here
    yield ": demo scraper\n\n"
    for n in range(count):
        if delay:
            time.sleep(delay)
        yield f"data: {json.dumps(fake_lead(rng, n))}\n\n"


def create_demo_scraper() -> Flask:
    """The demo scraper's WSGI app."""
    app = Flask("telentir-demo-scraper", static_folder=None)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.post("/<path:path>")
    def stream(path: str) -> Response:
        params = request.get_json(silent=True) or {}
        count = _count(params, "credits", 0) if path == "get-leads" else _count(params, "count", 10)
        delay = _count(params, "delayMs", 0) / 1000
        body = _frames(count, delay, seed=_count(params, "seed", 1))
        return Response(body, mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def serve_demo_scraper(host: str, port: int) -> None:
    """Serve the demo scraper (threaded) until interrupted."""
    from werkzeug.serving import make_server

    server = make_server(host, port, create_demo_scraper(), threaded=True)
    click.echo(f"Demo scraper on http://{host}:{port} (set SCRAPER_HOSTNAME to this)")
    server.serve_forever()
