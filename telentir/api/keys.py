"""Store keys: /api/keys (docs/protocol.md §3)."""

from __future__ import annotations

from typing import Any

import werkzeug.exceptions
from flask import Response, jsonify, request

from ..errors import BadRequest
from ..ids import is_id
from ..services import keyring
from ..wire import bool_value, decode_key_material, metadata_value
from .common import json_body, no_store, runtime
from .guard import DataPlaneBlueprint, data_plane_user

bp = DataPlaneBlueprint("keys", __name__)
# GET /keys?ids=: 100 ids of 26 characters keep the request line under 3 KB, within any proxy's limit.
MAX_BATCH = 100


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


@bp.get("/keys")
def get_keys() -> Response:
    """Up to 100 key records at once (`ids`, comma-separated): the caller's, in the order asked."""
    if "ids" not in request.args:
        # Before this route, GET /keys was a 405: a client that has no batch in mind still sees that.
        raise werkzeug.exceptions.MethodNotAllowed(valid_methods=["PUT", "POST", "OPTIONS"])
    response = jsonify(keyring.get_keys(runtime(), data_plane_user()["id"], _batch_ids(request.args.get("ids"))))
    response.headers["Cache-Control"] = "no-store"  # wrapped keys: nothing for a cache to keep
    return response


def _batch_ids(raw: str | None) -> list[str]:
    """The distinct key ids of `?ids=`, in order; 400 unless 1 to MAX_BATCH well-formed key ids."""
    ids = list(dict.fromkeys(raw.split(","))) if raw else []
    if not 1 <= len(ids) <= MAX_BATCH or not all(is_id(key_id, "key") for key_id in ids):
        raise BadRequest(f"ids must be 1 to {MAX_BATCH} key ids (key_…), separated by commas.")
    return ids


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
