"""The OpenAPI 3.1 document, generated from Flask's url_map and each view's `Operation` (api/registry.py).

Schemas come from the msgspec types of api/types/ (`msgspec.json.schema_components`), with
each Struct's `extra_schema` (rules across fields) merged into its component. Answers gunicorn
gives before the app is called (414, 417, 431, 501) are the same JSON error shape and not
repeated per operation. Served at GET /api/openapi.json; tests/test_fuzz.py runs Schemathesis on it.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from flask import Blueprint, Flask, Response, current_app, jsonify

from .registry import OPERATIONS, Answer, Header, Operation, operation
from .types.base import OPEN_TEXT, STRUCTS, Error
from .types.system import Document

bp = Blueprint("openapi", __name__, url_prefix="/api")

REF = "#/components/schemas/{name}"
STATUS_TEXT = {
    400: "Malformed or invalid input (the message names the field)",
    401: "Missing, unknown, revoked or expired credential",
    402: "Stripe declined the card (stripe_card_error), or not enough credits",
    403: "Phone not verified, forbidden, a refused sign-up, or a cookie write without X-Requested-With",
    404: "Not found (or not yours)",
    405: "Method not allowed on this path (see Allow)",
    409: "Conflict with existing state, or a per-user ceiling reached (too_many_api_keys, too_many_servers)",
    413: "Body or metadata too large, or past the user's storage quota (quota_exceeded)",
    415: "Body is not JSON",
    429: "Rate limited (see Retry-After)",
    502: "The SMS provider failed",
    503: "A dependency is unavailable (a storage engine away: see Retry-After), or the process is full",
    507: "No disk space left for the write (insufficient_storage); nothing was written",
}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "A session JWT or an API key (tlk_…)"},
    "cookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "token",
        "description": "The session JWT of a login or sign-up only (never an API key)",
    },
}


class _Schemas:
    """Schemas of msgspec types, their components collected for the document."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}
        self.bodies: set[str] = set()  # components read as request bodies: their unknown fields must be text

    def of(self, type_: Any) -> dict[str, Any]:
        (schema,), components = msgspec.json.schema_components((type_,), ref_template=REF)
        self.components.update(components)
        return schema

    def finished(self) -> dict[str, Any]:
        """The components, each Struct's rules across fields merged in."""
        for name, schema in self.components.items():
            struct = STRUCTS.get(name)
            if struct is not None:
                schema.update(struct.extra_schema)
            if name in self.bodies:
                schema.update(OPEN_TEXT)
        return dict(sorted(self.components.items()))


def build_document(app: Flask) -> dict[str, Any]:
    """The whole OpenAPI document of `app`'s routes."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, None] = {}  # in the order first met
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        view = app.view_functions[rule.endpoint]
        described = OPERATIONS.get(view)
        if described is None:
            raise LookupError(f"{rule.rule} ({rule.endpoint}) declares no @operation")
        route = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for path, operation_id, variant in described.variants(route):
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                paths.setdefault(path, {})[method.lower()] = _operation(variant, operation_id, schemas)
                tags.setdefault(described.tag, None)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Telentir data plane",
            "version": "1.0.0",
            "description": "Client-side encrypted objects, keys, publishing, event streams and ingestion. "
            "The wire contract in prose is docs/protocol.md. Every string a request carries, in a body at any "
            "depth, a query or a header, is text: no NUL, no lone surrogate (else 400, §1.1).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"cookie": []}],
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {"schemas": schemas.finished(), "securitySchemes": SECURITY_SCHEMES},
    }


def _operation(described: Operation, operation_id: str, schemas: _Schemas) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [described.tag],
        "summary": described.summary,
        "responses": {str(described.ok.status): _answer(described.ok, described.secret, schemas)},
    }
    error = {"$ref": REF.format(name="Error")}
    schemas.of(Error)
    for status in described.statuses():
        answer: dict[str, Any] = {
            "description": STATUS_TEXT[status],
            "content": {"application/json": {"schema": error}},
        }
        if status == 429:
            answer["headers"] = {"Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
        op["responses"][str(status)] = answer
    params = _parameters(described, schemas)
    if params:
        op["parameters"] = params
    if described.body is not None:
        media: dict[str, Any] = {"schema": schemas.of(described.body)}
        schemas.bodies.add(described.body.__name__)
        if described.body_example is not None:
            media["example"] = described.body_example
        op["requestBody"] = {"required": described.body_required, "content": {"application/json": media}}
    if described.auth is None:
        op["security"] = []
    return op


def _answer(answer: Answer, secret: bool, schemas: _Schemas) -> dict[str, Any]:
    described: dict[str, Any] = {"description": answer.description}
    if answer.type is not None:
        media: dict[str, Any] = {"schema": schemas.of(answer.type)}
        if answer.example is not None:
            media["example"] = answer.example
        described["content"] = {answer.media: media}
    headers = {header.name: _header(header, schemas) for header in answer.headers}
    if secret:
        headers["Cache-Control"] = {"required": True, "schema": {"const": "no-store"}, "description": "a secret"}
    if headers:
        described["headers"] = headers
    return described


def _header(header: Header, schemas: _Schemas) -> dict[str, Any]:
    described = {"required": header.required, "schema": schemas.of(header.type)}
    if header.description:
        described["description"] = header.description
    return described


def _parameters(described: Operation, schemas: _Schemas) -> list[dict[str, Any]]:
    params = [_param(name, "path", True, schemas.of(type_)) for name, type_ in described.path.items()]
    if described.query is not None:
        for field in msgspec.structs.fields(described.query):
            params.append(_param(field.encode_name, "query", field.required, schemas.of(field.type)))
    for header in described.headers:
        params.append(_param(header.name, "header", header.required, schemas.of(header.type)))
    return params


def _param(name: str, where: str, required: bool, schema: dict[str, Any]) -> dict[str, Any]:
    param = {"name": name, "in": where, "required": required, "schema": schema}
    if "description" in schema:
        param["description"] = schema["description"]
    if schema.get("examples"):
        param["example"] = schema["examples"][0]
    return param


@bp.get("/openapi.json")
@operation(
    "get_openapi_document",
    "System",
    "This document",
    ok=Answer(type=Document, example={"openapi": "3.1.0"}),
    auth=None,
)
def openapi() -> Response:
    """The OpenAPI 3.1 document of this API (built once per app)."""
    cache = current_app.extensions.setdefault("telentir_openapi", {})
    if "document" not in cache:
        cache["document"] = build_document(current_app)
    return jsonify(cache["document"])
