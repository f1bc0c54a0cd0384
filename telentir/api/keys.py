"""Store keys: /api/keys (docs/protocol.md §3)."""

from __future__ import annotations

from typing import Annotated, Any

import werkzeug.exceptions
from flask import Response, jsonify, request
from msgspec import Meta

from ..errors import BadRequest
from ..ids import is_id
from ..services import keyring
from ..wire import bool_value, decode_key_material, metadata_value
from .common import json_body, no_store, runtime
from .guard import DataPlaneBlueprint, data_plane_user
from .registry import Answer, operation
from .types.base import KeyId
from .types.data import MAX_BATCH, KeyPatch, KeyRecord, KeysQuery, KeyWrite
from .types.examples import EXAMPLE_IDS, KEY_EXAMPLE

KEY_PATH = {"key_id": Annotated[KeyId, Meta(description="key_ id; anything else is a 404")]}
WRITE_EXAMPLE = {"server": "default", "metadata": {"label": "contacts 2026"}}

bp = DataPlaneBlueprint("keys", __name__)


def _create() -> dict[str, Any]:
    body = json_body()
    key, iv = decode_key_material(body)
    metadata = metadata_value(body.get("metadata"), runtime().config.max_metadata_bytes)
    return keyring.create_key(runtime(), data_plane_user()["id"], body.get("server"), key, iv, metadata)


@bp.put("/keys")
@operation(
    "create_key_id",
    "Keys",
    "Create a key (as documented): answers its id",
    ok=Answer(status=201, type=KeyId, description="Created", example=EXAMPLE_IDS["key"]),
    errors=(409,),
    body=KeyWrite,
    body_example=WRITE_EXAMPLE,
)
def put_key() -> tuple[Response, int]:
    """Create a key (as documented): answers the new key id as a JSON string."""
    return jsonify(_create()["id"]), 201


@bp.post("/keys")
@operation(
    "create_key",
    "Keys",
    "Create a key (as the SDK calls it): answers the record",
    ok=Answer(status=201, type=KeyRecord, description="Created", example=KEY_EXAMPLE),
    errors=(409,),
    body=KeyWrite,
    body_example=WRITE_EXAMPLE,
    secret=True,
)
@no_store
def post_key() -> tuple[Response, int]:
    """Create a key (as the SDK calls it): answers the key record."""
    return jsonify(_create()), 201


@bp.get("/keys")
@operation(
    "get_keys",
    "Keys",
    f"Up to {MAX_BATCH} key records at once, in the order asked; ids that are not the caller's are left out "
    "(without `ids`, 405 as before this batch read existed)",
    ok=Answer(type=list[KeyRecord], example=[KEY_EXAMPLE]),
    errors=(405,),
    query=KeysQuery,
)
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
@operation(
    "get_key",
    "Keys",
    "A key record",
    ok=Answer(type=KeyRecord, example=KEY_EXAMPLE),
    errors=(404,),
    path=KEY_PATH,
    secret=True,
)
@no_store
def get_key(key_id: str) -> Response:
    """A key record: the wrapped key and IV in hex."""
    return jsonify(keyring.get_key(runtime(), data_plane_user()["id"], key_id))


@bp.patch("/keys/<key_id>")
@operation(
    "update_key",
    "Keys",
    "Change metadata or deprecated, or re-wrap (key and iv together)",
    ok=Answer(type=KeyRecord, example=KEY_EXAMPLE),
    errors=(404, 409),
    path=KEY_PATH,
    body=KeyPatch,
    body_example={"deprecated": True},
    secret=True,
)
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
@operation(
    "delete_key",
    "Keys",
    "Delete a key record (objects under it stay)",
    ok=Answer(status=204, description="Done (no body)"),
    errors=(404, 409),
    path=KEY_PATH,
)
def delete_key(key_id: str) -> tuple[str, int]:
    """Delete a key record (objects under it stay)."""
    keyring.delete_key(runtime(), data_plane_user()["id"], key_id)
    return "", 204
