"""Objects, keys, publications, servers and the root: the data plane's shapes (docs/protocol.md §2-§5)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from msgspec import UNSET, Meta, UnsetType

from ...services.roots import STORES
from ...wire import TAG_MAX, TAG_MIN
from .base import (
    EXAMPLE_IDS,
    B64Url,
    Binary,
    Encoding,
    Flag,
    Hex,
    KeyId,
    Metadata,
    MetadataIn,
    Name,
    ObjId,
    Schema,
    Text,
    Timestamp,
    UserId,
    alias_rule,
    body_rule,
    one_alias_at_most,
)

MAX_PAGE = 1000  # GET /objects/{id}/related?limit=
DEFAULT_PAGE = 100
MAX_BATCH = 100  # GET /keys?ids=: 100 ids of 26 characters keep the request line under 3 KB
KEY_ALIASES = ("keyId", "key_id")
TAG_ALIASES = ("authTag", "auth_tag")
RELATED_ALIASES = ("relatedId", "relatedObjectId", "related_object_id")
# content and authTag share one encoding (§1.7): `encoding`, else hex when the tag is 12-16 bytes of hex.
_HEX_TAG = f"^([0-9a-fA-F]{{2}}){{{TAG_MIN},{TAG_MAX}}}$"
_B64 = "[A-Za-z0-9+/_-]"
_B64_TAIL = f"({_B64}{{2}}(==)?|{_B64}{{3}}=?)"
_B64_TAG = f"^{_B64}{{{4 * (TAG_MIN // 3)}}}({_B64_TAIL}|{_B64}{{4}}|{_B64}{{4}}{_B64}{{2}}(==)?)?$"
_B64_CONTENT = f"^({_B64}{{4}})*{_B64_TAIL}?$"


def _ciphertext(content: str, tag: dict[str, Any], encoding: list[str | None]) -> dict[str, Any]:
    """One way the ciphertext may be encoded: `encoding` among `encoding`, content and tag as given."""
    fields = {"content": {"pattern": content}, **dict.fromkeys(TAG_ALIASES, tag)}
    return {"properties": {**fields, "encoding": {"enum": encoding}}}


CIPHERTEXT_ENCODINGS = {
    "anyOf": [
        _ciphertext("^([0-9a-fA-F]{2})*$", {"pattern": _HEX_TAG}, ["hex", None]),
        _ciphertext(_B64_CONTENT, {"pattern": _B64_TAG}, ["base64"]),
        _ciphertext(_B64_CONTENT, {"pattern": _B64_TAG, "not": {"pattern": _HEX_TAG}}, [None]),
    ]
}
# A binary field whose encoding another field decides (§1.7): what is sent may still be a 400.
KeyMaterial = Annotated[str | None, Meta(description="hex, or base64 (§1.7); null: absent")]
# key and iv: both absent (or null), or both strings (docs/protocol.md §3).
_KEY_IV_RULE = {
    "anyOf": [
        {"properties": {"key": {"type": "null"}, "iv": {"type": "null"}}},
        {"required": ["key", "iv"], "properties": {"key": {"type": "string"}, "iv": {"type": "string"}}},
    ]
}
_KEY_IV_TOGETHER = body_rule(_KEY_IV_RULE)


class ObjectRecord(Schema):
    """An object as every read and write answers it: hex, snake_case plus camelCase aliases."""

    id: ObjId
    user_id: UserId
    key_id: KeyId
    content: Hex
    auth_tag: Hex
    related_object_id: ObjId | None
    metadata: Metadata
    created_at: Timestamp
    updated_at: Timestamp
    keyId: KeyId
    authTag: Hex
    relatedId: ObjId | None


class ObjectFields(Schema):
    """What a create and a patch of an object share (aliases: keyId=key_id, authTag=auth_tag, relatedId=…)."""

    keyId: KeyId | UnsetType = UNSET
    key_id: KeyId | UnsetType = UNSET
    authTag: Binary | UnsetType = UNSET
    auth_tag: Binary | UnsetType = UNSET
    relatedId: ObjId | UnsetType | None = UNSET
    relatedObjectId: ObjId | UnsetType | None = UNSET
    related_object_id: ObjId | UnsetType | None = UNSET
    metadata: MetadataIn | UnsetType = UNSET
    encoding: Encoding | UnsetType = UNSET


class ObjectCreate(ObjectFields, kw_only=True):
    """A new object: content, authTag and keyId (any spelling) are required."""

    content: Binary
    extra_schema: ClassVar[dict[str, Any]] = {
        **one_alias_at_most(RELATED_ALIASES),
        "allOf": [*alias_rule(KEY_ALIASES, TAG_ALIASES)["allOf"], CIPHERTEXT_ENCODINGS],
    }


PATCHED_FIELDS = (*KEY_ALIASES, "metadata", *RELATED_ALIASES, "content", *TAG_ALIASES)


class ObjectPatch(ObjectFields, kw_only=True):
    """Any of keyId, metadata, relatedId (null detaches), content+authTag together."""

    content: Binary | UnsetType = UNSET
    extra_schema: ClassVar[dict[str, Any]] = {
        "minProperties": 1,
        **one_alias_at_most(KEY_ALIASES, TAG_ALIASES, RELATED_ALIASES),
        **body_rule(
            {
                "allOf": [
                    {
                        "anyOf": [
                            {"not": {"anyOf": [{"required": [name]} for name in ("content", *TAG_ALIASES)]}},
                            {"allOf": [alias_rule(("content",), TAG_ALIASES), CIPHERTEXT_ENCODINGS]},
                        ]
                    },
                    # What the route changes; anything else alone ("encoding", an unknown field) is a 400.
                    {"anyOf": [{"required": [name]} for name in PATCHED_FIELDS]},
                ]
            }
        ),
    }


class RelatedQuery(Schema):
    """GET /objects/{id}/related: all children (streamed), or a page with limit/after."""

    limit: Annotated[int, Meta(ge=1, le=MAX_PAGE, description=f"page size ({DEFAULT_PAGE} with only after)")] = (
        DEFAULT_PAGE
    )
    after: Annotated[Text, Meta(description="X-Next-Cursor of the previous page")] | UnsetType = UNSET
    count: Annotated[Flag, Meta(description="true: the number of children in X-Total-Count")] | UnsetType = UNSET


class DeleteQuery(Schema):
    """DELETE /objects/{id}."""

    cascade: Annotated[Flag, Meta(description="true/false/1/0 in any case: remove the whole subtree")] | UnsetType = (
        UNSET
    )


class Publication(Schema):
    """A published object for a related object."""

    type: Annotated[str, Meta(min_length=1, max_length=64)]
    related_id: ObjId
    object_id: ObjId
    created_at: Timestamp


class PublishBody(Schema):
    """PUT /objects/publish/{type}/{related_id}: the object to publish (objectId or object_id, equal if both)."""

    objectId: ObjId | UnsetType = UNSET
    object_id: ObjId | UnsetType = UNSET
    extra_schema: ClassVar[dict[str, Any]] = alias_rule(("objectId", "object_id"))


class KeyRecord(Schema):
    """The key record of GET/POST/PATCH /keys."""

    id: KeyId
    user_id: UserId
    server: Annotated[str, Meta(min_length=1)]
    key: Annotated[Hex, Meta(description="the wrapped key, lowercase hex")]
    iv: Annotated[str, Meta(pattern="^[0-9a-f]{24}$")]
    metadata: Metadata
    created_at: Timestamp
    updated_at: Timestamp
    deprecated: bool


class KeyWrite(Schema):
    """A new key: under `server` (one of the caller's or a platform server), wrapped by the client or the server."""

    server: Annotated[Text, Meta(min_length=1, examples=["default"])]
    key: KeyMaterial | UnsetType = UNSET
    iv: KeyMaterial | UnsetType = UNSET
    metadata: MetadataIn | UnsetType = UNSET
    encoding: Encoding | UnsetType = UNSET
    extra_schema: ClassVar[dict[str, Any]] = _KEY_IV_TOGETHER


class KeyPatch(Schema):
    """Change metadata or deprecated, or re-wrap (key and iv together)."""

    metadata: MetadataIn | UnsetType = UNSET
    deprecated: bool | UnsetType = UNSET
    key: KeyMaterial | UnsetType = UNSET
    iv: KeyMaterial | UnsetType = UNSET
    encoding: Encoding | UnsetType = UNSET
    # What the route changes: metadata, deprecated, or a key (with its iv); anything else alone is a 400.
    extra_schema: ClassVar[dict[str, Any]] = {
        "minProperties": 1,
        **body_rule(
            {
                "allOf": [
                    _KEY_IV_RULE,
                    {
                        "anyOf": [
                            {"required": ["metadata"]},
                            {"required": ["deprecated"]},
                            {"required": ["key"], "properties": {"key": {"type": "string"}}},
                        ]
                    },
                ]
            }
        ),
    }


KeyIds = Annotated[
    str,
    Meta(
        pattern=f"^key_[A-Za-z0-9]{{22}}(,key_[A-Za-z0-9]{{22}}){{0,{MAX_BATCH - 1}}}$",
        description=f"1 to {MAX_BATCH} key ids, separated by commas",
        examples=[EXAMPLE_IDS["key"]],
    ),
]


class KeysQuery(Schema):
    """GET /keys?ids= (without ids: 405, as before this batch read existed)."""

    ids: KeyIds


ServerMode = Literal["generate", "upload_public"]


class ServerRecord(Schema):
    """A registered server."""

    name: Annotated[str, Meta(min_length=1, max_length=64)]
    mode: ServerMode
    publicKey: B64Url
    deprecated: bool
    created_at: Timestamp


class ServerCreate(Schema):
    """POST /servers: `generate` a keypair, or `upload_public` an RSA public key (publicKey or public_key)."""

    name: Name
    mode: ServerMode
    publicKey: KeyMaterial | UnsetType = UNSET
    public_key: KeyMaterial | UnsetType = UNSET
    extra_schema: ClassVar[dict[str, Any]] = {
        "if": {"properties": {"mode": {"const": "upload_public"}}},
        "then": {
            "anyOf": [
                {"required": [alias], "properties": {alias: {"type": "string"}}}
                for alias in ("publicKey", "public_key")
            ]
        },
    }


class ServerCreated(Schema):
    """A new server: the private key once, for `generate`."""

    name: Annotated[str, Meta(min_length=1, max_length=64)]
    publicKey: B64Url
    privateKey: B64Url | None


class ServerPatch(Schema):
    """PATCH /servers/{name}."""

    deprecated: bool


class Jwk(Schema):
    """An RSA public key as a JWK."""

    kty: Literal["RSA"]
    n: B64Url
    e: B64Url


class PlatformKey(Schema, rename={"spki": "application/pkix-spki", "jwk": "application/jwk+json"}):
    """One platform key in both forms."""

    spki: B64Url
    jwk: Jwk


class PlatformServers(Schema):
    """GET /api/server: the platform's current server and public keys."""

    current: Annotated[str, Meta(min_length=1)]
    keys: dict[str, PlatformKey]


class Store(Schema):
    """A store of the root: its object and default key."""

    id: ObjId
    defaultKey: KeyId


class RootServer(Schema):
    """A server of the root (the custodial private key for generated ones)."""

    publicKey: B64Url
    deprecated: bool
    privateKey: B64Url | UnsetType = UNSET


RootStores = Annotated[
    dict[str, Store],
    Meta(
        extra_json_schema={
            "required": list(STORES),
            "properties": {store: {"$ref": "#/components/schemas/Store"} for store in STORES},
        }
    ),
]


class RootDocument(Schema):
    """GET /api/root: the caller's stores, default keys and servers."""

    stores: RootStores
    servers: Annotated[dict[str, RootServer], Meta(extra_json_schema={"required": ["default"]})]
