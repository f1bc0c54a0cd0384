"""The OpenAPI document describes every registered route."""

import re

from flask import Flask

from telentir.services.events import EVENT_TYPES


def _routes(app: Flask) -> set[tuple[str, str]]:
    """Every (path, method) of the app; an event route once per event type, as the document has it."""
    routes = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        paths = [path.replace("{event_type}", name) for name in EVENT_TYPES] if "{event_type}" in path else [path]
        routes |= {(each, method.lower()) for each in paths for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def test_every_route_is_documented(app, client):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    missing = _routes(app) - documented
    assert not missing, f"routes missing from the OpenAPI document: {sorted(missing)}"
    stale = documented - _routes(app)
    assert not stale, f"documented routes that do not exist: {sorted(stale)}"


def test_operations_declare_responses_and_errors(client):
    doc = client.get("/api/openapi.json").get_json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["summary"], (path, method)
            assert any(code[0] in "12" for code in op["responses"]), (path, method)
            for code, response in op["responses"].items():
                if code[0] in "45":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, code)


def test_operations_are_named_and_tagged_once(client):
    doc = client.get("/api/openapi.json").get_json()
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert all(re.fullmatch("[a-z][a-z0-9_]*", i) for i in ids), ids
    tags = {tag["name"] for tag in doc["tags"]}
    for ops in doc["paths"].values():
        for op in ops.values():
            assert len(op["tags"]) == 1 and op["tags"][0] in tags, op["operationId"]


def test_integer_limits_are_integers(client):
    """A bound written as a float (2**63 as 9.223372036854776e+18) is one generators round."""
    text = client.get("/api/openapi.json").get_data(as_text=True)
    bounds = re.findall(r'"(?:minimum|maximum|minLength|maxLength|minItems|maxItems)":\s*([^,}]+)', text)
    assert bounds and all(re.fullmatch("[0-9]+", bound) for bound in bounds), bounds
