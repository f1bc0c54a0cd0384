"""The document's PATCH bodies say what the routes change: a body that changes nothing is no valid body.

Found by schemathesis (`positive_data_acceptance`): `{"encoding": null, "x": {}}` satisfied
`minProperties: 1`, and the route answered 400 "Nothing to change".
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from jsonschema import Draft202012Validator

from telentir.api import register_blueprints
from telentir.api.document import build_document


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    app = Flask("patch-bodies", static_folder=None)
    register_blueprints(app)
    return build_document(app)


def _valid(doc: dict[str, Any], schema: str, body: dict[str, Any]) -> bool:
    validator = Draft202012Validator({"$ref": f"#/components/schemas/{schema}", "components": doc["components"]})
    return validator.is_valid(body)


@pytest.mark.parametrize(
    "body, valid",
    [
        ({"encoding": None, "x": {}}, False),
        ({"unknown": 1}, False),
        ({"encoding": "hex"}, False),
        ({"metadata": {"a": 1}}, True),
        ({"keyId": "key_" + "a" * 22, "x": 1}, True),
        ({"relatedId": None}, True),
        ({"content": "abcd", "authTag": "ab" * 16}, True),
    ],
)
def test_an_object_patch_must_change_something(doc: dict[str, Any], body: dict[str, Any], valid: bool) -> None:
    assert _valid(doc, "ObjectPatch", body) is valid


@pytest.mark.parametrize(
    "body, valid",
    [
        ({"x": 1}, False),
        ({"key": None, "iv": None}, False),
        ({"encoding": "hex"}, False),
        ({"deprecated": True}, True),
        ({"metadata": {}}, True),
        ({"key": "ab" * 16, "iv": "cd" * 12}, True),
    ],
)
def test_a_key_patch_must_change_something(doc: dict[str, Any], body: dict[str, Any], valid: bool) -> None:
    assert _valid(doc, "KeyPatch", body) is valid
