"""JSON answers (telentir/api/answers.py): msgspec encodes them, and they read back as the standard encoder's did."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask, jsonify
from markupsafe import Markup

from telentir.api.answers import AnswerJSONProvider


@pytest.fixture
def app() -> Flask:
    flask_app = Flask(__name__)
    flask_app.json = AnswerJSONProvider(flask_app)
    return flask_app


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [1, 2.5, None, True], "é": "naïve ☃ 🚀", "nested": {"x": {"y": []}}},
        {"big": 2**63 - 1, "neg": -(2**53), "float": 0.1, "exp": 1e300, "empty": ""},
        [],
        "text",
    ],
)
def test_an_answer_reads_back_as_the_standard_encoder_wrote_it(app: Flask, value: Any) -> None:
    with app.app_context():
        answer = jsonify(value)
    assert answer.mimetype == "application/json"
    assert answer.get_data().endswith(b"\n")
    assert json.loads(answer.get_data()) == json.loads(json.dumps(value))
    assert list(json.loads(answer.get_data())) == list(value)  # the order of keys as built


def test_what_msgspec_cannot_encode_goes_to_the_default_provider(app: Flask) -> None:
    with app.app_context():
        assert json.loads(jsonify({"n": 2**70}).get_data()) == {"n": 2**70}  # past 64 bits
        assert json.loads(jsonify({"html": Markup("<b>")}).get_data()) == {"html": "<b>"}  # __html__
        assert app.json.dumps({"d": Decimal("1.5")}) == '{"d":"1.5"}'
        assert app.json.dumps({"b": 1, "a": 2}, sort_keys=True) == '{"a": 2, "b": 1}'  # options: the default path
