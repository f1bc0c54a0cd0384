"""Schemathesis against the served OpenAPI document: no 5xx, and every answer as documented.

One real server (gunicorn), one verified user with an API key, the test scraper behind
`/api/connect`. Every operation gets the document's examples, the coverage phase's edge
cases (missing fields, wrong types, bounds) and a bounded number of generated cases, from a
fixed seed, derandomized: the same requests on every run.

The checks (CHECKS): no 5xx; status, content type, headers and body as documented; a
request that violates the document refused (so the document is no stricter than the
server); 401 without credentials; 405 with a true `Allow` for undocumented methods.
`positive_data_acceptance` is off: some rules cannot be written in JSON Schema (a key's
`server` must be one of the caller's servers, an uploaded RSA key must parse, a binary
field's encoding is decided by another field), so a request the schema allows may get the
documented 400.

Event streams never end by themselves: the client reads at most one event or until
STREAM_SECONDS of silence, which is enough to check the status, headers and framing. The
WebSocket route is fuzzed up to its handshake, where all of its checks happen.

More examples, locally: `FUZZ_EXAMPLES=200 .venv/bin/python -m pytest tests/test_fuzz.py`
(`FUZZ_SEED` picks another seed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis.config import SchemathesisConfig

from telentir.api.openapi import build_document
from telentir.config import load_config
from telentir.wiring import build_runtime

from ..conftest import make_user
from ..scraper_fixture import TestScraper
from ..support import FIXED_MASTER_KEY, ServerProcess

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("FUZZ_SEED", "20261201"))
STREAM_SECONDS = 0.5
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "ignored_auth",
    "unsupported_method",
    "allow_header_conformance",
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose ingestion jobs end quickly whatever the fuzzer sends the scraper."""
    with TestScraper() as scraper:
        env = {
            "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY,
            "SCRAPER_HOSTNAME": scraper.url,
            "TELENTIR_CONNECT_MAX_RECORDS": "3",
            "TELENTIR_CONNECT_READ_TIMEOUT": "2",
            "TELENTIR_CONNECT_MAX_SECONDS": "3",
            "TELENTIR_SSE_HEARTBEAT_SECONDS": "1",
            # Sign-up open on a branch that has the setting (ignored where it does not exist).
            "TELENTIR_SIGNUP": "open",
        }
        server = ServerProcess(tmp_path_factory.mktemp("fuzz") / "data", env).start()
        yield server
        server.stop()


@pytest.fixture(scope="module")
def api_key(fuzz_server: ServerProcess) -> str:
    """The API key of a verified user on the fuzzed server."""
    rt = build_runtime(load_config({"data_dir": fuzz_server.data_dir, "master_key": FIXED_MASTER_KEY}, environ={}))
    try:
        return str(make_user(rt)["api_key"])
    finally:
        rt.close()


CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "cache": {"enabled": False},
        "output": {"sanitization": {"enabled": False}},
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "mode": "all"},
        "phases": {"stateful": {"enabled": False}},
        "checks": {"enabled": False} | {name: {"enabled": True} for name in CHECKS},
        "max-stream-events": 1,
        "request-timeout": 10,
        "operations": [{"include-path-regex": "/events/", "request-timeout": STREAM_SECONDS}],
    }
)
schema = schemathesis.openapi.from_dict(build_document(), config=CONFIG)


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in build_document()["paths"].items() for method, op in ops.items()]


@pytest.mark.parametrize("method, path, op", _operations(), ids=lambda v: v if isinstance(v, str) else "")
def test_each_operation_has_an_example_and_the_statuses_every_route_shares(
    method: str, path: str, op: dict[str, Any]
) -> None:
    examples = [media.get("example") for media in op.get("requestBody", {}).get("content", {}).values()]
    examples += [media.get("example") for r in op["responses"].values() for media in r.get("content", {}).values()]
    examples += [param.get("example") for param in op.get("parameters", [])]
    assert any(example is not None for example in examples), "no example"
    statuses = set(op["responses"])
    assert "400" in statuses  # query strings and headers must be text, on every route
    if op.get("security") != []:
        assert "401" in statuses
    if "requestBody" in op:
        assert {"413", "415"} <= statuses
    for param in op.get("parameters", []):
        if param["in"] == "path" and param["name"].endswith("_id"):
            assert param["schema"]["pattern"].startswith("^"), param


def test_the_fuzzed_document_is_the_served_one(fuzz_server: ServerProcess) -> None:
    served = requests.get(fuzz_server.url + "/api/openapi.json", timeout=10)
    assert served.status_code == 200 and served.json() == build_document()


@schema.parametrize()
def test_every_operation_answers_as_documented(case: Any, fuzz_server: ServerProcess, api_key: str) -> None:
    case.call_and_validate(base_url=fuzz_server.url, headers={"Authorization": f"Bearer {api_key}"})
