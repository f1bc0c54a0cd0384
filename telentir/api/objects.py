"""Objects, relations and publishing: /api/objects (docs/protocol.md §4, §5)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from flask import Response, jsonify, request, stream_with_context
from msgspec import Meta

from ..errors import BadRequest, NotFound
from ..ids import is_id
from ..services import objects, publishing
from ..wire import decode_ciphertext, has_any, id_field, metadata_value, name_value, optional_id_field, pick
from .common import json_body, runtime
from .guard import DataPlaneBlueprint, data_plane_user
from .registry import Answer, Header, operation
from .types.base import EXAMPLE_IDS, Name, ObjId
from .types.data import (
    DEFAULT_PAGE,
    KEY_ALIASES,
    MAX_PAGE,
    RELATED_ALIASES,
    TAG_ALIASES,
    DeleteQuery,
    ObjectCreate,
    ObjectPatch,
    ObjectRecord,
    Publication,
    PublishBody,
    RelatedQuery,
)
from .types.examples import OBJECT_EXAMPLE, PUBLICATION_EXAMPLE

bp = DataPlaneBlueprint("objects", __name__)

OBJECT_PATH = {"object_id": Annotated[ObjId, Meta(description="obj_ id; anything else is a 404")]}
PUBLISH_PATH = {
    "pub_type": Annotated[Name, Meta(description="a name (§1.5), e.g. a store name; else 400", examples=["campaigns"])],
    "related_id": Annotated[ObjId, Meta(description="obj_ id; anything else is a 404")],
}
CREATE_EXAMPLE = {"keyId": EXAMPLE_IDS["key"], "content": "q83vEjRWeJA=", "authTag": "AAECAwQFBgcICQoLDA0ODw=="}
CREATED = Answer(status=201, type=ObjectRecord, description="Created", example=OBJECT_EXAMPLE)
NO_CONTENT = Answer(status=204, description="Done (no body)")
PAGE_HEADERS = (
    Header("X-Next-Cursor", ObjId, required=False),
    Header("X-Total-Count", Annotated[str, Meta(pattern="^[0-9]+$")], required=False),
)


def _create() -> dict[str, Any]:
    body = json_body()
    key_id = id_field(pick(body, *KEY_ALIASES), "keyId", "key")
    content, tag = decode_ciphertext(body)
    related_id = optional_id_field(pick(body, *RELATED_ALIASES), "relatedId", "obj")
    metadata = metadata_value(body.get("metadata"), runtime().config.max_metadata_bytes)
    return objects.create_object(runtime(), data_plane_user()["id"], key_id, content, tag, related_id, metadata)


@bp.put("/objects")
@operation(
    "create_object",
    "Objects",
    "Create an object (as documented)",
    ok=CREATED,
    errors=(404,),
    body=ObjectCreate,
    body_example=CREATE_EXAMPLE,
)
def put_object() -> tuple[Response, int]:
    """Create an object (as documented)."""
    return jsonify(_create()), 201


@bp.post("/objects")
@operation(
    "create_object_sdk",
    "Objects",
    "Create an object (as the SDK calls it)",
    ok=CREATED,
    errors=(404,),
    body=ObjectCreate,
    body_example=CREATE_EXAMPLE,
)
def post_object() -> tuple[Response, int]:
    """Create an object (as the SDK calls it)."""
    return jsonify(_create()), 201


@bp.get("/objects/<object_id>")
@operation(
    "get_object",
    "Objects",
    "An object",
    ok=Answer(type=ObjectRecord, example=OBJECT_EXAMPLE),
    errors=(404,),
    path=OBJECT_PATH,
)
def get_object(object_id: str) -> Response:
    """An object with its ciphertext in hex."""
    return jsonify(objects.get_object(runtime(), data_plane_user()["id"], object_id))


def _patch_changes(body: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if has_any(body, *KEY_ALIASES):
        changes["key_id"] = id_field(pick(body, *KEY_ALIASES), "keyId", "key")
    if "metadata" in body:
        changes["metadata"] = metadata_value(body["metadata"], runtime().config.max_metadata_bytes)
    if has_any(body, *RELATED_ALIASES):
        changes["related_id"] = optional_id_field(pick(body, *RELATED_ALIASES), "relatedId", "obj")
    if "content" in body or has_any(body, *TAG_ALIASES):
        changes["content"], changes["auth_tag"] = decode_ciphertext(body)
    if not changes:
        raise BadRequest("Nothing to change: send keyId, metadata, relatedId, or content with authTag.")
    return changes


@bp.patch("/objects/<object_id>")
@operation(
    "update_object",
    "Objects",
    "Replace fields of an object in place",
    ok=Answer(type=ObjectRecord, example=OBJECT_EXAMPLE),
    errors=(404, 409),
    path=OBJECT_PATH,
    body=ObjectPatch,
    body_example={"metadata": {"starred": True}},
)
def patch_object(object_id: str) -> Response:
    """Replace fields of an object in place."""
    user_id = data_plane_user()["id"]
    return jsonify(objects.update_object(runtime(), user_id, object_id, _patch_changes(json_body())))


@bp.delete("/objects/<object_id>")
@operation(
    "delete_object",
    "Objects",
    "Delete an object; children detached, or removed with cascade",
    ok=NO_CONTENT,
    errors=(404, 409),
    path=OBJECT_PATH,
    query=DeleteQuery,
)
def delete_object(object_id: str) -> tuple[str, int]:
    """Delete an object; its children are detached, or removed with ?cascade=true."""
    cascade = request.args.get("cascade", "false").lower()
    if cascade not in ("true", "false", "1", "0"):
        raise BadRequest("cascade must be true or false.")
    objects.delete_object(runtime(), data_plane_user()["id"], object_id, cascade in ("true", "1"))
    return "", 204


def _page_limit() -> int | None:
    if "limit" not in request.args and "after" not in request.args:
        return None
    raw = request.args.get("limit", str(DEFAULT_PAGE))
    # isascii: str.isdigit() also accepts "²" and "٣", which int() then rejects or reads as digits.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE}.")
    return int(raw)


@bp.get("/objects/<object_id>/related")
@operation(
    "list_related_objects",
    "Objects",
    "Children, oldest first (all, streamed; or a page with X-Next-Cursor); count=true adds X-Total-Count",
    ok=Answer(type=list[ObjectRecord], example=[OBJECT_EXAMPLE], headers=PAGE_HEADERS),
    errors=(404,),
    path=OBJECT_PATH,
    query=RelatedQuery,
)
def related(object_id: str) -> Response:
    """Children of an object, oldest first: all (streamed) or a page with X-Next-Cursor; X-Total-Count on request."""
    user_id, limit, count = data_plane_user()["id"], _page_limit(), _wants_count()
    if limit is None:
        records = objects.iter_related(runtime(), user_id, object_id)
        response = Response(stream_with_context(_json_array(records)), mimetype="application/json")
    else:
        page, cursor = objects.related_page(runtime(), user_id, object_id, limit, request.args.get("after"))
        response = jsonify(page)
        if cursor is not None:
            response.headers["X-Next-Cursor"] = cursor
    if count:
        response.headers["X-Total-Count"] = str(objects.count_related(runtime(), user_id, object_id))
    return response


def _wants_count() -> bool:
    raw = request.args.get("count", "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise BadRequest("count must be true or false.")
    return raw in ("true", "1")


def _json_array(records: Iterator[dict[str, Any]]) -> Iterator[str]:
    yield "["
    for index, record in enumerate(records):
        yield ("," if index else "") + json.dumps(record, separators=(",", ":"))
    yield "]"


@bp.put("/objects/publish/<pub_type>/<related_id>")
@operation(
    "publish_object",
    "Publishing",
    "Publish an object for a related object (replaces an earlier one)",
    ok=Answer(type=Publication, example=PUBLICATION_EXAMPLE),
    errors=(404,),
    path=PUBLISH_PATH,
    body=PublishBody,
    body_example={"objectId": EXAMPLE_IDS["obj"]},
)
def publish(pub_type: str, related_id: str) -> Response:
    """Publish `objectId` for `related_id` under a logical type (replaces an earlier one)."""
    body = json_body()
    object_id = id_field(pick(body, "objectId", "object_id"), "objectId", "obj")
    related = _path_object_id(related_id)
    return jsonify(
        publishing.publish(runtime(), data_plane_user()["id"], name_value(pub_type, "type"), related, object_id)
    )


@bp.delete("/objects/publish/<pub_type>/<related_id>")
@operation(
    "unpublish_object",
    "Publishing",
    "Unpublish (the ciphertext stays)",
    ok=NO_CONTENT,
    errors=(404,),
    path=PUBLISH_PATH,
)
def unpublish(pub_type: str, related_id: str) -> tuple[str, int]:
    """Remove a publication; the ciphertext stays."""
    publishing.unpublish(runtime(), data_plane_user()["id"], name_value(pub_type, "type"), _path_object_id(related_id))
    return "", 204


@bp.get("/objects/publish/<pub_type>")
@operation(
    "list_publications",
    "Publishing",
    "The caller's publications of a type, oldest first",
    ok=Answer(type=list[Publication], example=[PUBLICATION_EXAMPLE]),
    path={"pub_type": PUBLISH_PATH["pub_type"]},
)
def list_publications(pub_type: str) -> Response:
    """The caller's publications of one type."""
    return jsonify(publishing.list_publications(runtime(), data_plane_user()["id"], name_value(pub_type, "type")))


def _path_object_id(value: str) -> str:
    if not is_id(value, "obj"):
        raise NotFound("No such object.")
    return value
