"""Schemathesis against the served OpenAPI document: no 5xx, and every answer as documented.

One real server (gunicorn), one verified user with an API key, the test scraper behind
`/api/connect`. Every operation gets the document's examples, the coverage phase's edge
cases (missing fields, wrong types, bounds) and a bounded number of generated cases, from a
fixed seed, derandomized: the same requests on every run.

The checks (CHECKS): no 5xx; status, content type, headers and body as documented; a
request that violates the document refused (so the document is no stricter than the
server) and a request it allows accepted; 401 without credentials; 405 with a true `Allow` for undocumented methods.
`positive_data_acceptance`: a request the document allows is not refused (no 400), except on the
operations of STATE_RULES, where a rule rests on the server's state or a secret (a texted code, the
caller's servers, an RSA key that must parse), which JSON Schema cannot say.

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
from flask import Flask
from schemathesis.config import SchemathesisConfig

from telentir.api import register_blueprints
from telentir.api.document import build_document
from telentir.config import load_config
from telentir.wiring import build_runtime

from .conftest import make_user
from .scraper_fixture import TestScraper
from .support import FIXED_MASTER_KEY, ServerProcess

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
    "positive_data_acceptance",
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


# Operations whose documented 400 a request valid by the document may still get, for a rule that
# depends on the server's state or on a secret, which no JSON Schema can say: each with its reason.
STATE_RULES = {
    "register": "confirmPassword must equal password; the email must be a deliverable address",
    "verify_phone": "the code is the one the server texted",
    "confirm_password_reset": "the code is the one the server texted",
    "enable_two_factor": "the code is one of the pending TOTP secret",
    "disable_two_factor": "the code is one of the user's TOTP secret",
    "verify_two_factor": "the code is one of the user's TOTP secret",
    "create_key": "server is one of the caller's servers; a wrapped key has its server's modulus length",
    "create_key_id": "server is one of the caller's servers; a wrapped key has its server's modulus length",
    "update_key": "a wrapped key has its server's modulus length",
    "register_server": "an uploaded publicKey must parse as an RSA key",
}
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # Schemathesis' default
STATE_STATUSES = {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "400"]}}
# A WebSocket handshake the document allows is answered 101, then the fuzzer hangs up.
HANDSHAKE = {
    "not_a_server_error": {"expected-statuses": ["101", "2xx", "3xx", "4xx"]},
    "positive_data_acceptance": {"expected-statuses": ["101", *ACCEPTED]},
}
# 402: not enough credits, a state of the account, not of the request.
PAYING = {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "402"]}}

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "cache": {"enabled": False},
        "output": {"sanitization": {"enabled": False}},
        # The document says every string refuses NUL (patterns, JsonText), but the coverage phase fills a
        # free-form JSON value (metadata, an unknown field) with any text, whatever its schema says.
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "mode": "all", "allow-x00": False},
        "phases": {"stateful": {"enabled": False}},
        "checks": {"enabled": False} | {name: {"enabled": True} for name in CHECKS},
        "max-stream-events": 1,
        "request-timeout": 10,
        "operations": [
            {"include-path-regex": "^/api/events/", "request-timeout": STREAM_SECONDS},
            # A handshake answers at once (101 or an error): no stream to cut short, the usual timeout.
            {"include-path-regex": "^/api/ws/events/", "checks": HANDSHAKE},
            *({"include-operation-id": name, "checks": STATE_STATUSES} for name in STATE_RULES),
            {"include-operation-id": "connect", "checks": PAYING},
        ],
    }
)


def _document() -> dict[str, Any]:
    app = Flask("telentir", static_folder=None)
    register_blueprints(app)
    return build_document(app)


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(_document(), config=CONFIG)  # it resolves the document in place


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in DOCUMENT["paths"].items() for method, op in ops.items()]


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
    assert served.status_code == 200 and served.json() == DOCUMENT


@schema.parametrize()
def test_every_operation_answers_as_documented(case: Any, fuzz_server: ServerProcess, api_key: str) -> None:
    case.call_and_validate(base_url=fuzz_server.url, headers={"Authorization": f"Bearer {api_key}"})
