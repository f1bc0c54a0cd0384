"""Store keys: /api/keys (docs/protocol.md §3)."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from ..errors import BadRequest
from ..services import keyring
from ..wire import bool_value, decode_key_material, metadata_value
from .common import json_body, no_store, runtime
from .guard import DataPlaneBlueprint, data_plane_user

bp = DataPlaneBlueprint("keys", __name__)


def _create() -> dict[str, Any]:
    body = json_body()
    key, iv = decode_key_material(body)
    metadata = metadata_value(body.get("metadata"), runtime().config.max_metadata_bytes)
    return keyring.create_key(runtime(), data_plane_user()["id"], body.get("server"), key, iv, metadata)


@bp.put("/keys")
def put_key() -> tuple[Response, int]:
    """Create a key (as documented): answers the new key id as a JSON string."""
    return jsonify(_create()["id"]), 201


@bp.post("/keys")
@no_store
def post_key() -> tuple[Response, int]:
    """Create a key (as the SDK calls it): answers the key record."""
    return jsonify(_create()), 201


@bp.get("/keys/<key_id>")
@no_store
def get_key(key_id: str) -> Response:
    """A key record: the wrapped key and IV in hex."""
    return jsonify(keyring.get_key(runtime(), data_plane_user()["id"], key_id))


@bp.patch("/keys/<key_id>")
@no_store
def patch_key(key_id: str) -> Response:
    """Change metadata, deprecation, or re-wrap with key+iv."""
    body = json_body()
    changes: dict[str, Any] = {}
    if "metadata" in body:
        changes["metadata"] = metadata_value(body["metadata"], runtime().config.max_metadata_bytes)
    if "deprecated" in body:
        changes["deprecated"] = int(bool_value(body["deprecated"], "deprecated"))
    key, iv = decode_key_material(body)
    if key is not None:
        changes.update(key=key, iv=iv)
    if not changes:
        raise BadRequest("Nothing to change: send metadata, deprecated, or key and iv.")
    return jsonify(keyring.update_key(runtime(), data_plane_user()["id"], key_id, changes))


@bp.delete("/keys/<key_id>")
def delete_key(key_id: str) -> tuple[str, int]:
    """Delete a key record (objects under it stay)."""
    keyring.delete_key(runtime(), data_plane_user()["id"], key_id)
    return "", 204
