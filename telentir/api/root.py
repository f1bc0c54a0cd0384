"""Root and servers: /api/root, /api/servers (docs/protocol.md §2)."""

from __future__ import annotations

from typing import Annotated

from flask import Response, jsonify
from msgspec import Meta

from ..errors import BadRequest
from ..services import keyring, roots
from ..wire import bool_value, name_value
from .common import json_body, no_store, runtime
from .guard import DataPlaneBlueprint, data_plane_user
from .registry import Answer, operation
from .types.data import RootDocument, ServerCreate, ServerCreated, ServerPatch, ServerRecord
from .types.examples import SERVER_EXAMPLE

ServerName = Annotated[str, Meta(description="a registered server's name", examples=["laptop"])]

bp = DataPlaneBlueprint("root", __name__)


@bp.get("/root")
@operation(
    "get_root",
    "Servers",
    "The caller's root: stores, default keys, servers",
    ok=Answer(type=RootDocument, example={"stores": {}, "servers": {}}),
    secret=True,
)
@no_store
def get_root() -> Response:
    """The caller's stores, default keys and servers (custodial private key included)."""
    return jsonify(roots.root_document(runtime(), data_plane_user()["id"]))


@bp.get("/servers")
@operation(
    "list_servers",
    "Servers",
    "Registered servers, oldest first",
    ok=Answer(type=list[ServerRecord], example=[SERVER_EXAMPLE]),
)
def list_servers() -> Response:
    """The servers the caller registered."""
    return jsonify(keyring.list_servers(runtime(), data_plane_user()["id"]))


@bp.post("/servers")
@operation(
    "register_server",
    "Servers",
    "Register a server (generate a keypair, or upload_public an RSA public key); "
    "409 too_many_servers past the ceiling, 429 past the hourly key generations",
    ok=Answer(
        status=201,
        type=ServerCreated,
        description="Created",
        example={"name": "laptop", "publicKey": "MIIB", "privateKey": None},
    ),
    errors=(409, 429),
    body=ServerCreate,
    body_example={"name": "laptop", "mode": "generate"},
    secret=True,
)
@no_store
def register_server() -> tuple[Response, int]:
    """Register a server: `generate` a keypair (private key returned once) or `upload_public`."""
    body = json_body()
    name = name_value(body.get("name"), "name")
    for alias in ("publicKey", "public_key"):  # the one ignored (`generate`, or an alias) is still input
        if body.get(alias) is not None and not isinstance(body[alias], str):
            raise BadRequest(f"{alias} must be a string (base64 SPKI DER).")
    public_key = body.get("publicKey", body.get("public_key"))
    record = keyring.register_server(runtime(), data_plane_user()["id"], name, body.get("mode"), public_key)
    return jsonify(record), 201


@bp.patch("/servers/<name>")
@operation(
    "update_server",
    "Servers",
    "Deprecate (or un-deprecate) a registered server",
    ok=Answer(type=ServerRecord, example=SERVER_EXAMPLE),
    errors=(404,),
    path={"name": ServerName},
    body=ServerPatch,
    body_example={"deprecated": True},
)
def update_server(name: str) -> Response:
    """Deprecate (or un-deprecate) a registered server."""
    deprecated = bool_value(json_body().get("deprecated"), "deprecated")
    return jsonify(keyring.set_server_deprecated(runtime(), data_plane_user()["id"], name.lower(), deprecated))
