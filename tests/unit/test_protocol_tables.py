"""docs/protocol.md's tables agree with the API's types: its prose is written by hand, its facts are checked here.

The aliases of §1.8, the event filters of §6 and the request limits of §10 are read from the
markdown and compared with the OpenAPI document the types generate (and the constants behind it).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask

from telentir.api import register_blueprints
from telentir.api.document import build_document
from telentir.api.types.data import MAX_BATCH
from telentir.streaming.feed import MAX_CURSOR

from ..support import ROOT

PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    app = Flask("protocol-tables", static_folder=None)
    register_blueprints(app)
    return build_document(app)


def _table(first_header: str) -> list[list[str]]:
    """The rows of the markdown table whose header row starts with `first_header`, cells stripped."""
    lines = PROTOCOL.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _names(cell: str) -> list[str]:
    return re.findall(r"`([A-Za-z_]+)`", cell)


def _body(doc: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    ref = doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return dict(doc["components"]["schemas"][ref.rsplit("/", 1)[1]])


def test_every_alias_of_the_table_is_a_field_of_its_body(doc: dict[str, Any]) -> None:
    bodies = {
        "objects": _body(doc, "/api/objects", "put"),
        "publish": _body(doc, "/api/objects/publish/{pub_type}/{related_id}", "put"),
        "servers": _body(doc, "/api/servers", "post"),
    }
    rows = _table("Canonical")
    assert rows
    for canonical, aliases in rows:
        names = [_names(canonical)[0], *_names(aliases)]
        where = "publish" if "publish" in canonical else "servers" if "/servers" in canonical else "objects"
        assert set(names) <= set(bodies[where]["properties"]), (names, where)


def test_the_event_filters_are_the_query_of_each_stream(doc: dict[str, Any]) -> None:
    rows = _table("type")
    assert len(rows) == len([path for path in doc["paths"] if path.startswith("/api/events/")])
    for event_type, filters, _ in rows:
        params = doc["paths"][f"/api/events/{_names(event_type)[0]}"]["get"]["parameters"]
        query = {param["name"] for param in params if param["in"] == "query"}
        assert set(_names(filters)) == query - {"userId", "since"}, event_type


def _limit(name: str) -> str:
    return next(row[1] for row in _table("Limit") if row[0].startswith(name))


def _numbers(text: str) -> list[int]:
    return [int(number.replace(",", "")) for number in re.findall(r"\d[\d,]*", text)]


def _query(doc: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    param = next(p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == name)
    return dict(param["schema"])


def test_the_limits_table_states_the_documented_bounds(doc: dict[str, Any]) -> None:
    limit = _query(doc, "/api/objects/{object_id}/related", "limit")
    assert _numbers(_limit("Related page size")) == [limit["minimum"], limit["maximum"], limit["default"]]
    assert _numbers(_limit("Key ids per")) == [1, MAX_BATCH]
    assert f"{{0,{MAX_BATCH - 1}}}" in _query(doc, "/api/keys", "ids")["pattern"]
    assert _numbers(_limit("Event filter value")) == [_query(doc, "/api/events/key_created", "keyId")["maxLength"]]
    assert _numbers(_limit("Event cursor")) == [0, 2, 63, 1] and MAX_CURSOR == 2**63 - 1
    connect = doc["components"]["schemas"]["Connect"]["properties"]
    assert _numbers(_limit("`POST /connect` `path`"))[0] == connect["path"]["maxLength"]
    credits = doc["components"]["schemas"]["ConnectParams"]["properties"]["credits"]
    assert _numbers(_limit("`params.credits`")) == [credits["minimum"], credits["maximum"]]
