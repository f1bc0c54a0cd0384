"""The OpenAPI 3.1 document of the API, served at GET /api/openapi.json.

Written by hand from the wire contract (docs/protocol.md) and kept exact: request schemas
with their required fields, patterns and bounds, every status a route can answer, response
schemas real answers satisfy, and an example per operation. `tests/unit/test_openapi.py` checks
that every route is here; `tests/dataplane/test_fuzz.py` runs Schemathesis against this document.

Each route is one `_op(...)` call in the `_…_paths()` function of its area: adding a route
is adding an entry there. Statuses every route shares are added by `_op` itself: 400 (query
strings and headers must be text, §1.1), 401 and 403 by the route's `auth`, 413 and 415 for
a JSON body. Answers gunicorn gives before the app is called (414, 417, 431, 501) are the
same JSON error shape and not repeated per operation.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from ..ids import PREFIXES
from ..money import MAX_LEADS_PER_JOB as MAX_CREDITS
from ..services.accounts import MAX_EMAIL, MAX_NAME, MAX_PASSWORD, MIN_PASSWORD
from ..services.credentials import MAX_KEY_NAME
from ..services.events import FILTERS
from ..services.roots import STORES
from ..streaming.feed import MAX_CURSOR, MAX_FILTER_LENGTH
from ..wire import MAX_PATH_CHARS

bp = Blueprint("openapi", __name__, url_prefix="/api")

EVENT_TYPES = list(FILTERS)
FILTER_NAMES = sorted({name for filters in FILTERS.values() for name, _ in filters})
MAX_PAGE = 1000  # GET /objects/{id}/related (api/objects.py)

_STATUS_TEXT = {
    400: "Malformed or invalid input (the message names the field)",
    401: "Missing, unknown, revoked or expired credential",
    402: "Stripe declined the card (stripe_card_error)",
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
NO_CONTENT = {"description": "Done (no body)"}
TIMESTAMP_EXAMPLE = "2026-11-29T07:31:56.123Z"
EXAMPLE_IDS = {prefix: f"{prefix}_3x9TQm2ZkW8pLr4VbN7cYd" for prefix in PREFIXES}


# --- building blocks ------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _id(prefix: str) -> dict[str, Any]:
    """A server-made id of one type (§1.4)."""
    return {"type": "string", "pattern": f"^{prefix}_[A-Za-z0-9]{{22}}$", "example": EXAMPLE_IDS[prefix]}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _string(min_length: int = 0, max_length: int | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", **extra}
    if min_length:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    return schema


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """An object schema: `required` properties must be present, `optional` ones may be."""
    schema: dict[str, Any] = {"type": "object", "properties": {**required, **(optional or {})}, **extra}
    if required:
        schema["required"] = list(required)
    return schema


def _json(schema: dict[str, Any], description: str = "OK", example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}}


def _error(status: int) -> dict[str, Any]:
    response = _json(_ref("Error"), _STATUS_TEXT[status])
    if status == 429:
        response["headers"] = {"Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
    return response


def _secret(ok: dict[str, Any]) -> dict[str, Any]:
    """An answer carrying a secret (a token, a private or wrapped key): `Cache-Control: no-store`."""
    no_store = {"required": True, "schema": {"const": "no-store"}, "description": "never cached: a secret"}
    return {**ok, "headers": {**ok.get("headers", {}), "Cache-Control": no_store}}


def _op(
    summary: str,
    ok: dict[str, Any],
    errors: tuple[int, ...] = (),
    *,
    auth: str | None = "verified",
    body: dict[str, Any] | None = None,
    body_required: bool = True,
    body_example: Any = None,
    params: list[dict[str, Any]] | None = None,
    ok_status: int = 200,
) -> dict[str, Any]:
    """One operation. `auth`: "verified" (401, 403), "user" (401) or None (no credential)."""
    statuses = {400, *errors}
    if auth is not None:
        statuses.add(401)
    if auth == "verified":
        statuses.add(403)
    if body is not None:
        statuses |= {413, 415}
    if auth is not None:
        statuses.add(503)  # every credential is looked up in the database, which may be away
    if auth == "verified" and body is not None:
        statuses.add(507)  # a data-plane write on a full disk
    operation: dict[str, Any] = {"summary": summary, "responses": {str(ok_status): ok}}
    for status in sorted(statuses):
        operation["responses"][str(status)] = _error(status)
    if body is not None:
        media: dict[str, Any] = {"schema": body}
        if body_example is not None:
            media["example"] = body_example
        operation["requestBody"] = {"required": body_required, "content": {"application/json": media}}
    if params:
        operation["parameters"] = params
    if auth is None:
        operation["security"] = []
    return operation


def _path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    param = {"name": name, "in": "path", "required": True, "schema": schema, "description": description}
    if "example" in schema:
        param["example"] = schema["example"]
    return param


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _header(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "schema": schema, "description": description}


# --- schemas --------------------------------------------------------------------------

TIMESTAMP = {
    "type": "string",
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
    "example": TIMESTAMP_EXAMPLE,
}
HEX = {"type": "string", "pattern": "^([0-9a-f]{2})*$", "description": "lowercase hex"}
B64URL = {"type": "string", "pattern": "^[A-Za-z0-9_-]+$", "description": "base64url DER, no padding"}
BINARY = {"type": "string", "description": "hex, or base64 (standard or URL-safe, padding optional) (§1.7)"}
KEY_MATERIAL = {**BINARY, "type": ["string", "null"], "description": BINARY["description"] + "; null: absent"}
METADATA = {"type": "object", "description": "any JSON object, at most 16 KiB as compact JSON, 32 levels deep"}
METADATA_IN = {"type": ["object", "null"], "description": "a JSON object (null: {}); 16 KiB at most (413)"}
ENCODING = {"enum": ["hex", "base64", None], "description": "overrides the encoding rule of §1.7"}
NAME = {
    "type": "string",
    "pattern": r"^\s*[A-Za-z0-9][A-Za-z0-9_-]{0,63}\s*$",
    "description": "trimmed and lowercased, then 1-64 of a-z 0-9 _ - (§1.5)",
    "example": "laptop",
}
STATUS = {"enum": ["ok", "phone_not_verified", "2fa_required"]}


def _record_schemas() -> dict[str, Any]:
    return {
        "Error": _object(
            {"error": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_]*$"}, "message": _string(1)},
            description="Every non-2xx answer; some add fields (login's status, /readyz's checks).",
        ),
        "Object": _object(
            {
                "id": _id("obj"),
                "user_id": _id("usr"),
                "key_id": _id("key"),
                "content": HEX,
                "auth_tag": HEX,
                "related_object_id": _nullable(_id("obj")),
                "metadata": METADATA,
                "created_at": TIMESTAMP,
                "updated_at": TIMESTAMP,
                "keyId": _id("key"),
                "authTag": HEX,
                "relatedId": _nullable(_id("obj")),
            }
        ),
        "Key": _object(
            {
                "id": _id("key"),
                "user_id": _id("usr"),
                "server": _string(1),
                "key": {**HEX, "description": "the wrapped key, lowercase hex"},
                "iv": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
                "metadata": METADATA,
                "created_at": TIMESTAMP,
                "updated_at": TIMESTAMP,
                "deprecated": {"type": "boolean"},
            }
        ),
        "Publication": _object(
            {"type": _string(1, 64), "related_id": _id("obj"), "object_id": _id("obj"), "created_at": TIMESTAMP}
        ),
        "Server": _object(
            {
                "name": _string(1, 64),
                "mode": {"enum": ["generate", "upload_public"]},
                "publicKey": B64URL,
                "deprecated": {"type": "boolean"},
                "created_at": TIMESTAMP,
            }
        ),
        "ApiKey": _object(
            {
                "id": _id("ak"),
                "name": _string(1, MAX_KEY_NAME),
                "last_used_at": _nullable(TIMESTAMP),
                "created_at": TIMESTAMP,
            },
            {"key": {"type": "string", "pattern": "^tlk_[A-Za-z0-9_-]+$", "description": "only when created"}},
        ),
        "AuthToken": _object({"status": STATUS, "token": _string(1)}),
        "Job": _job_schema(),
    }


def _billing_schemas() -> dict[str, Any]:
    number, integer = {"type": "number"}, {"type": "integer"}
    plan_fields = {
        "key": {"type": "string"},
        "name": {"type": "string"},
        "monthlyPriceUsd": number,
        "includedMinutes": number,
        "overageUsdPerMinute": number,
        "includedLeads": integer,
        "includedOutboundCalls": number,
        "includedInboundCalls": number,
        "outboundFixedUsd": number,
        "inboundFixedUsd": number,
        "leadOverageUsdPerLead": number,
    }
    usage = ("leads", "seconds_inbound", "seconds_outbound", "calls_inbound", "calls_outbound")
    failure = _object(
        {"invoice": _string(1), "amountDue": integer, "currency": _string(1), "at": {"type": "string"}},
        description="the newest subscription invoice, when its payment failed",
    )
    return {
        "BillingPlan": _object(plan_fields, description="The SDK's BillingPlan; call-related fields are 0 here."),
        "BillingState": _object(
            {
                "plan": _nullable(_ref("BillingPlan")),
                "usage": _object(dict.fromkeys(usage, integer)),
                "hasCard": {"type": "boolean"},
                "balance": _ref("Credits"),
                "paymentFailure": _nullable(failure),
            }
        ),
        "Credits": _object({"amount": {"type": "integer", "description": "minor units"}, "currency": {"const": "usd"}}),
        "StripeUrl": _object({"url": _string(1, description="a Stripe-hosted page (or returnTo after an upgrade)")}),
    }


def _job_schema() -> dict[str, Any]:
    count = {"type": "integer", "minimum": 0}
    credits = _object(
        dict.fromkeys(("requested", "granted", "allowance_used", "reserved", "used", "charged", "refunded"), count)
        | {"settlement": {"enum": ["open", "settled", "refund_pending", "reserve_unknown"]}}
    )
    return _object(
        {
            "id": _id("job"),
            "status": {"enum": ["reserving", "running", "succeeded", "failed", "cancelled", "interrupted"]},
            "repository": {"enum": list(STORES)},
            "path": _string(1, MAX_PATH_CHARS, pattern="^/"),
            "created": count,
            "skipped": count,
            "credits": credits,
            "error": _nullable({"type": "string"}),
            "started_at": _nullable(TIMESTAMP),
            "finished_at": _nullable(TIMESTAMP),
        }
    )


def _request_schemas() -> dict[str, Any]:
    return {
        "ObjectCreate": {
            **_object(
                {"content": BINARY},
                _object_write_fields(),
                description="Aliases: keyId=key_id, authTag=auth_tag, relatedId=relatedObjectId=related_object_id.",
            ),
            "allOf": [
                {"anyOf": [{"required": ["keyId"]}, {"required": ["key_id"]}]},
                {"anyOf": [{"required": ["authTag"]}, {"required": ["auth_tag"]}]},
            ],
        },
        "ObjectPatch": _object(
            {},
            {"content": BINARY, **_object_write_fields()},
            description="Any of keyId, metadata, relatedId (null detaches), content+authTag together.",
            minProperties=1,
        ),
        "KeyWrite": _object(
            {"server": _string(1, example="default")},
            {"key": KEY_MATERIAL, "iv": KEY_MATERIAL, "metadata": METADATA_IN, "encoding": ENCODING},
            dependentRequired={"key": ["iv"], "iv": ["key"]},
        ),
        "KeyPatch": _object(
            {},
            {
                "metadata": METADATA_IN,
                "deprecated": {"type": "boolean"},
                "key": KEY_MATERIAL,
                "iv": KEY_MATERIAL,
                "encoding": ENCODING,
            },
            dependentRequired={"key": ["iv"], "iv": ["key"]},
            minProperties=1,
        ),
    }


def _object_write_fields() -> dict[str, Any]:
    related = _nullable(_id("obj"))
    return {
        "keyId": _id("key"),
        "key_id": _id("key"),
        "authTag": BINARY,
        "auth_tag": BINARY,
        "relatedId": related,
        "relatedObjectId": related,
        "related_object_id": related,
        "metadata": METADATA_IN,
        "encoding": ENCODING,
    }


# --- examples -------------------------------------------------------------------------

TAG_HEX = "000102030405060708090a0b0c0d0e0f"
OBJECT_EXAMPLE: dict[str, Any] = {
    "id": EXAMPLE_IDS["obj"],
    "user_id": EXAMPLE_IDS["usr"],
    "key_id": EXAMPLE_IDS["key"],
    "content": "abcdef1234567890",
    "auth_tag": TAG_HEX,
    "related_object_id": None,
    "metadata": {},
    "created_at": TIMESTAMP_EXAMPLE,
    "updated_at": TIMESTAMP_EXAMPLE,
    "keyId": EXAMPLE_IDS["key"],
    "authTag": TAG_HEX,
    "relatedId": None,
}
KEY_EXAMPLE = {
    "id": EXAMPLE_IDS["key"],
    "user_id": EXAMPLE_IDS["usr"],
    "server": "default",
    "key": "9f" * 256,
    "iv": "00112233445566778899aabb",
    "metadata": {},
    "created_at": TIMESTAMP_EXAMPLE,
    "updated_at": TIMESTAMP_EXAMPLE,
    "deprecated": False,
}
SERVER_EXAMPLE = {
    "name": "laptop",
    "mode": "generate",
    "publicKey": "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",
    "deprecated": False,
    "created_at": TIMESTAMP_EXAMPLE,
}
PUBLICATION_EXAMPLE = {
    "type": "campaigns",
    "related_id": EXAMPLE_IDS["obj"],
    "object_id": EXAMPLE_IDS["obj"],
    "created_at": TIMESTAMP_EXAMPLE,
}
API_KEY_EXAMPLE = {"id": EXAMPLE_IDS["ak"], "name": "CI", "last_used_at": None, "created_at": TIMESTAMP_EXAMPLE}
TOKEN_EXAMPLE = {"status": "ok", "token": "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlbGVudGlyIn0.e30.c2ln"}


BILLING_EXAMPLE = {
    "plan": {
        "key": "starter",
        "name": "Starter",
        "monthlyPriceUsd": 0,
        "includedMinutes": 0,
        "overageUsdPerMinute": 0,
        "includedLeads": 100,
        "includedOutboundCalls": 0,
        "includedInboundCalls": 0,
        "outboundFixedUsd": 0,
        "inboundFixedUsd": 0,
        "leadOverageUsdPerLead": 0.25,
    },
    "usage": {"leads": 0, "seconds_inbound": 0, "seconds_outbound": 0, "calls_inbound": 0, "calls_outbound": 0},
    "hasCard": False,
    "balance": {"currency": "usd", "amount": 0},
    "paymentFailure": None,
}


# --- paths ----------------------------------------------------------------------------


def _system_paths() -> dict[str, Any]:
    health = _object({"status": {"const": "ok"}, "pid": {"type": "integer"}})
    checks = _object({name: {"type": "boolean"} for name in ("database", "blobs", "broker", "disk")})
    ready = _object({"status": {"const": "ok"}, "checks": checks})
    return {
        "/healthz": {
            "get": _op("The process is alive", _json(health, example={"status": "ok", "pid": 12345}), auth=None)
        },
        "/readyz": {
            "get": _op(
                "Database writable, blob store and broker reachable, disk not full (503 names what is not)",
                _json(
                    ready,
                    example={"status": "ok", "checks": {"database": True, "blobs": True, "broker": True, "disk": True}},
                ),
                (503,),
                auth=None,
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics: needs Authorization: Bearer <TELENTIR_METRICS_TOKEN>; 404 while that is unset",
                {
                    "description": "Prometheus text format",
                    "content": {
                        "text/plain": {
                            "schema": {"type": "string"},
                            "example": 'telentir_http_requests_total{method="GET",route="/healthz",status="200"} 3.0\n',
                        }
                    },
                },
                (401, 404),
                auth=None,
            )
        },
        "/api/openapi.json": {
            "get": _op(
                "This document",
                _json(
                    _object({"openapi": {"type": "string"}, "paths": {"type": "object"}}), example={"openapi": "3.1.0"}
                ),
                auth=None,
            )
        },
    }


def _auth_paths() -> dict[str, Any]:
    cookie = {"Set-Cookie": {"required": True, "schema": {"type": "string", "pattern": "^token="}}}
    token = {**_json(_ref("AuthToken"), example=TOKEN_EXAMPLE), "headers": cookie}
    profile = _object(
        {
            "status": STATUS,
            "auth": _object(
                {
                    "id": _id("usr"),
                    "email": _string(1),
                    "firstName": {"type": "string"},
                    "lastName": {"type": "string"},
                    "phoneVerified": {"type": "boolean"},
                    "twoFactorEnabled": {"type": "boolean"},
                }
            ),
            "usage": _object(
                {
                    "bytes": {"type": "integer", "minimum": 0, "description": "ciphertext stored by the user"},
                    "quotaBytes": _nullable({"type": "integer", "minimum": 1}),
                }
            ),
        }
    )
    register_fields = {
        "email": _string(1, description="a valid address, unique case-insensitively", example="ada@example.com"),
        "phone": _string(7, description="7-15 digits, optionally starting with +; spaces . - ( ) removed"),
        "password": _string(MIN_PASSWORD, MAX_PASSWORD),
        "confirmPassword": _string(MIN_PASSWORD, MAX_PASSWORD, description="equal to password"),
    }
    names = {name: _nullable(_string(0, MAX_NAME)) for name in ("firstName", "lastName")}
    # A string with TELENTIR_SIGNUP=invite (a wrong or missing one is a 403); ignored, whatever it is, otherwise.
    names["invite"] = {"description": "the single-use code of `telentir invites create` (TELENTIR_SIGNUP=invite)"}
    signup = {
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": "ada@example.com",
        "phone": "+44 20 7946 0958",
        "password": "correct horse battery",
        "confirmPassword": "correct horse battery",
    }
    credentials = _object(
        {"email": _string(0, MAX_EMAIL), "password": _string(0, MAX_PASSWORD)},
        {"remember": {"description": "any truthy JSON value: the 30-day lifetime"}},
    )
    status = _object({"status": {"type": "string"}})
    return {
        "/api/auth/register": {
            "post": _op(
                "Create an account (sets the token cookie) if TELENTIR_SIGNUP allows it: else 403 signup_closed, "
                "invite_required or invite_invalid; 429 past the sign-ups of one address in an hour",
                _secret({**token, "description": "Created"}),
                (403, 409, 429),
                auth=None,
                ok_status=201,
                body=_object(register_fields, names),
                body_example=signup,
            )
        },
        "/api/auth/login": {
            "post": _op(
                "Log in (sets the token cookie); with two-factor sign-in on, status 2fa_required and a "
                "limited token for POST /api/auth/2fa/verify instead (no cookie)",
                _secret({**token, "headers": {"Set-Cookie": {**cookie["Set-Cookie"], "required": False}}}),
                (401, 429),
                auth=None,
                body=credentials,
                body_example={"email": "ada@example.com", "password": "correct horse battery", "remember": True},
            )
        },
        "/api/auth": {
            "get": _op(
                "The caller's profile",
                _json(
                    profile,
                    example={
                        "status": "ok",
                        "auth": {
                            "id": EXAMPLE_IDS["usr"],
                            "email": "ada@example.com",
                            "firstName": "Ada",
                            "lastName": "Lovelace",
                            "phoneVerified": True,
                            "twoFactorEnabled": False,
                        },
                        "usage": {"bytes": 182_304, "quotaBytes": None},
                    },
                ),
                auth="user",
            )
        },
        "/api/auth/logout": {
            "get": _op(
                "Log out: revoke the session tokens of the header and cookie, clear the cookie "
                "(with the cookie alone, X-Requested-With is needed: else 403 csrf_header_missing)",
                _json(_object({"status": {"const": "logout"}}), example={"status": "logout"}),
                (403,),
                auth=None,
            )
        },
        "/api/auth/phone/send": {
            "post": _op(
                "Send a one-time code by SMS",
                _json(_object({"status": {"const": "sent"}}), example={"status": "sent"}),
                (409, 429, 502),
                auth="user",
            )
        },
        "/api/auth/phone/verify": {
            "post": _op(
                "Verify the phone with the code",
                _json(status, example={"status": "ok"}),
                (429,),
                auth="user",
                body=_object({"code": _string(1, pattern=r"\S")}),
                body_example={"code": "123456"},
            )
        },
        **_two_factor_paths(),
        **_password_paths(),
        "/api/api-keys": {
            "put": _op(
                "Create an API key (the only time `key` is shown); 409 too_many_api_keys past the ceiling",
                _secret(
                    {
                        **_json(_ref("ApiKey"), example={**API_KEY_EXAMPLE, "key": "tlk_Zm9vYmFy"}),
                        "description": "Created",
                    }
                ),
                (409,),
                auth="user",
                ok_status=201,
                body=_object({}, {"name": _nullable(_string(1, MAX_KEY_NAME, pattern=r"\S"))}),
                body_required=False,
                body_example={"name": "CI"},
            ),
            "get": _op(
                "The caller's live API keys, oldest first",
                _json({"type": "array", "items": _ref("ApiKey")}, example=[API_KEY_EXAMPLE]),
                auth="user",
            ),
        },
        "/api/api-keys/{key_id}": {
            "delete": _op(
                "Revoke an API key at once",
                NO_CONTENT,
                (404,),
                auth="user",
                ok_status=204,
                params=[_path("key_id", _id("ak"), "ak_ id; anything else is a 404")],
            )
        },
    }


CODE = _string(1, 64, pattern=r"\S", description="a 6-digit TOTP code, or (where allowed) a recovery code")


def _two_factor_paths() -> dict[str, Any]:
    cookie = {"Set-Cookie": {"required": True, "schema": {"type": "string", "pattern": "^token="}}}
    example_base32 = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    setup_example = {
        "secret": example_base32,
        "otpauthUrl": f"otpauth://totp/Telentir:ada@example.com?secret={example_base32}&issuer=Telentir",
    }
    setup = _object({"secret": _string(32, pattern="^[A-Z2-7]+$"), "otpauthUrl": _string(1)})
    recovery = _object({"recoveryCodes": {"type": "array", "items": _string(8), "minItems": 10, "maxItems": 10}})
    ok = _object({"status": {"const": "ok"}})
    verified = _object({"status": {"const": "ok"}, "token": _string(1)})
    return {
        "/api/auth/2fa/setup": {
            "post": _op(
                "A new pending TOTP secret and its otpauth URL (a session, not an API key: else 403 "
                "session_required); 409 2fa_already_enabled",
                _secret(_json(setup, example=setup_example)),
                (403, 409),
                auth="user",
            )
        },
        "/api/auth/2fa/enable": {
            "post": _op(
                "Turn two-factor sign-in on with a code of the pending secret: ten single-use recovery codes, "
                "shown this once; 400 invalid_code; 409 2fa_not_set_up",
                _secret(_json(recovery, example={"recoveryCodes": ["K7QD-M2XA-P9TF-WR3H"] * 10})),
                (403, 409, 429),
                auth="user",
                body=_object({"code": CODE}),
                body_example={"code": "123456"},
            )
        },
        "/api/auth/2fa/verify": {
            "post": _op(
                "Exchange the limited token of a login and a TOTP or recovery code for a full session (sets the "
                "token cookie); 400 invalid_code; 409 2fa_not_required for a full session or an API key",
                _secret({**_json(verified, example=TOKEN_EXAMPLE), "headers": cookie}),
                (409, 429),
                auth="user",
                body=_object({"code": CODE}),
                body_example={"code": "123456"},
            )
        },
        "/api/auth/2fa/disable": {
            "post": _op(
                "Turn two-factor sign-in off with a current code (a session); 400 invalid_code; 409 2fa_not_enabled",
                _json(ok, example={"status": "ok"}),
                (403, 409, 429),
                auth="user",
                body=_object({"code": CODE}),
                body_example={"code": "123456"},
            )
        },
    }


def _password_paths() -> dict[str, Any]:
    cookie = {"Set-Cookie": {"required": True, "schema": {"type": "string", "pattern": "^token="}}}
    password = _string(MIN_PASSWORD, MAX_PASSWORD)
    verified = _object({"status": {"const": "ok"}, "token": _string(1)})
    email = _string(0, MAX_EMAIL)
    return {
        "/api/auth/password": {
            "post": _op(
                "Change the password (a session): every session of the user is revoked and the answer carries a "
                "new one (sets the token cookie); API keys stay; 400 invalid_password",
                _secret({**_json(verified, example=TOKEN_EXAMPLE), "headers": cookie}),
                (403, 429),
                auth="user",
                body=_object({"currentPassword": _string(0, MAX_PASSWORD), "newPassword": password}),
                body_example={"currentPassword": "correct horse battery", "newPassword": "a brand new passphrase"},
            )
        },
        "/api/auth/password/reset": {
            "post": _op(
                "Text a one-time reset code to the account's verified phone; 202 whether or not the account exists",
                _json(_object({"status": {"const": "accepted"}}), "Accepted", example={"status": "accepted"}),
                auth=None,
                ok_status=202,
                body=_object({"email": email}),
                body_example={"email": "ada@example.com"},
            )
        },
        "/api/auth/password/reset/confirm": {
            "post": _op(
                "Set a new password with the texted code: every session revoked; 400 invalid_code; 429 past the "
                "sign-in attempts",
                _json(_object({"status": {"const": "ok"}}), example={"status": "ok"}),
                (429,),
                auth=None,
                body=_object({"email": email, "code": CODE, "newPassword": password}),
                body_example={"email": "ada@example.com", "code": "123456", "newPassword": "a brand new passphrase"},
            )
        },
    }


def _server_paths() -> dict[str, Any]:
    jwk = _object({"kty": {"const": "RSA"}, "n": B64URL, "e": B64URL})
    platform_key = _object({"application/pkix-spki": B64URL, "application/jwk+json": jwk})
    platform = _object({"current": _string(1), "keys": {"type": "object", "additionalProperties": platform_key}})
    store = _object({"id": _id("obj"), "defaultKey": _id("key")})
    root_server = _object({"publicKey": B64URL, "deprecated": {"type": "boolean"}}, {"privateKey": B64URL})
    root = _object(
        {
            "stores": _object(dict.fromkeys(STORES, store)),
            "servers": _object({"default": root_server}, additionalProperties=root_server),
        }
    )
    created = _object({"name": _string(1, 64), "publicKey": B64URL, "privateKey": _nullable(B64URL)})
    return {
        "/api/server": {
            "get": _op(
                "Platform server name and public keys (SPKI + JWK)",
                _json(platform, example={"current": "telentir", "keys": {}}),
            )
        },
        "/api/root": {
            "get": _op(
                "The caller's root: stores, default keys, servers",
                _secret(_json(root, example={"stores": {}, "servers": {}})),
            )
        },
        "/api/servers": {
            "get": _op(
                "Registered servers, oldest first",
                _json({"type": "array", "items": _ref("Server")}, example=[SERVER_EXAMPLE]),
            ),
            "post": _op(
                "Register a server (generate a keypair, or upload_public an RSA public key); "
                "409 too_many_servers past the ceiling, 429 past the hourly key generations",
                _secret(
                    {
                        **_json(created, example={"name": "laptop", "publicKey": "MIIB", "privateKey": None}),
                        "description": "Created",
                    }
                ),
                (409, 429),
                ok_status=201,
                body=_object(
                    {"name": NAME, "mode": {"enum": ["generate", "upload_public"]}},
                    {"publicKey": KEY_MATERIAL, "public_key": KEY_MATERIAL},
                ),
                body_example={"name": "laptop", "mode": "generate"},
            ),
        },
        "/api/servers/{name}": {
            "patch": _op(
                "Deprecate (or un-deprecate) a registered server",
                _json(_ref("Server"), example=SERVER_EXAMPLE),
                (404,),
                params=[_path("name", {"type": "string", "example": "laptop"}, "a registered server's name")],
                body=_object({"deprecated": {"type": "boolean"}}),
                body_example={"deprecated": True},
            )
        },
    }


def _key_paths() -> dict[str, Any]:
    key_id = [_path("key_id", _id("key"), "key_ id; anything else is a 404")]
    one_id = _id("key")["pattern"].strip("^$")
    batch_ids = {"type": "string", "pattern": f"^{one_id}(,{one_id}){{0,99}}$", "example": EXAMPLE_IDS["key"]}
    write_example = {"server": "default", "metadata": {"label": "contacts 2026"}}
    return {
        "/api/keys": {
            "get": _op(
                "Up to 100 key records at once, in the order asked; ids that are not the caller's are left out "
                "(without `ids`, 405 as before this batch read existed)",
                _json({"type": "array", "items": _ref("Key")}, example=[KEY_EXAMPLE]),
                (405,),
                params=[{**_query("ids", batch_ids, "1 to 100 key ids, separated by commas"), "required": True}],
            ),
            "put": _op(
                "Create a key (as documented): answers its id",
                {**_json(_id("key"), example=EXAMPLE_IDS["key"]), "description": "Created"},
                (409,),
                ok_status=201,
                body=_ref("KeyWrite"),
                body_example=write_example,
            ),
            "post": _op(
                "Create a key (as the SDK calls it): answers the record",
                _secret({**_json(_ref("Key"), example=KEY_EXAMPLE), "description": "Created"}),
                (409,),
                ok_status=201,
                body=_ref("KeyWrite"),
                body_example=write_example,
            ),
        },
        "/api/keys/{key_id}": {
            "get": _op("A key record", _secret(_json(_ref("Key"), example=KEY_EXAMPLE)), (404,), params=key_id),
            "patch": _op(
                "Change metadata or deprecated, or re-wrap (key and iv together)",
                _secret(_json(_ref("Key"), example=KEY_EXAMPLE)),
                (404, 409),
                params=key_id,
                body=_ref("KeyPatch"),
                body_example={"deprecated": True},
            ),
            "delete": _op(
                "Delete a key record (objects under it stay)", NO_CONTENT, (404, 409), ok_status=204, params=key_id
            ),
        },
    }


def _object_paths() -> dict[str, Any]:
    obj_id = [_path("object_id", _id("obj"), "obj_ id; anything else is a 404")]
    create_example = {"keyId": EXAMPLE_IDS["key"], "content": "q83vEjRWeJA=", "authTag": "AAECAwQFBgcICQoLDA0ODw=="}
    cascade = _query(
        "cascade",
        {"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$", "example": "true"},
        "true/false/1/0 in any case: remove the whole subtree",
    )
    page = [
        _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "page size (100 with only after)"),
        _query("after", {"type": "string"}, "X-Next-Cursor of the previous page"),
    ]
    next_cursor = {
        "X-Next-Cursor": {"required": False, "schema": _id("obj")},
        "X-Total-Count": {"required": False, "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    }
    # true/false (any case) or 1/0, as api/objects.py reads it.
    flag = {"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$"}
    count = _query("count", flag, "true: the number of children in X-Total-Count")
    children = {
        **_json({"type": "array", "items": _ref("Object")}, example=[OBJECT_EXAMPLE]),
        "headers": next_cursor,
    }
    return {
        "/api/objects": {
            method: _op(
                summary,
                {**_json(_ref("Object"), example=OBJECT_EXAMPLE), "description": "Created"},
                (404,),
                ok_status=201,
                body=_ref("ObjectCreate"),
                body_example=create_example,
            )
            for method, summary in (("put", "Create an object (as documented)"), ("post", "Create an object (SDK)"))
        },
        "/api/objects/{object_id}": {
            "get": _op("An object", _json(_ref("Object"), example=OBJECT_EXAMPLE), (404,), params=obj_id),
            "patch": _op(
                "Replace fields of an object in place",
                _json(_ref("Object"), example=OBJECT_EXAMPLE),
                (404, 409),
                params=obj_id,
                body=_ref("ObjectPatch"),
                body_example={"metadata": {"starred": True}},
            ),
            "delete": _op(
                "Delete an object; children detached, or removed with cascade",
                NO_CONTENT,
                (404, 409),
                ok_status=204,
                params=[*obj_id, cascade],
            ),
        },
        "/api/objects/{object_id}/related": {
            "get": _op(
                "Children, oldest first (all, streamed; or a page with X-Next-Cursor); count=true adds X-Total-Count",
                children,
                (404,),
                params=[*obj_id, *page, count],
            )
        },
        **_publish_paths(),
    }


def _publish_paths() -> dict[str, Any]:
    pub_type = _path("pub_type", {**NAME, "example": "campaigns"}, "a name (§1.5), e.g. a store name; else 400")
    related = _path("related_id", _id("obj"), "obj_ id; anything else is a 404")
    object_id = _id("obj")
    return {
        "/api/objects/publish/{pub_type}": {
            "get": _op(
                "The caller's publications of a type, oldest first",
                _json({"type": "array", "items": _ref("Publication")}, example=[PUBLICATION_EXAMPLE]),
                params=[pub_type],
            )
        },
        "/api/objects/publish/{pub_type}/{related_id}": {
            "put": _op(
                "Publish an object for a related object (replaces an earlier one)",
                _json(_ref("Publication"), example=PUBLICATION_EXAMPLE),
                (404,),
                params=[pub_type, related],
                body={
                    **_object({}, {"objectId": object_id, "object_id": object_id}),
                    "anyOf": [{"required": ["objectId"]}, {"required": ["object_id"]}],
                },
                body_example={"objectId": EXAMPLE_IDS["obj"]},
            ),
            "delete": _op(
                "Unpublish (the ciphertext stays)", NO_CONTENT, (404,), ok_status=204, params=[pub_type, related]
            ),
        },
    }


def _event_params() -> list[dict[str, Any]]:
    params = [_path("event_type", {"enum": EVENT_TYPES, "example": "object_created"}, "one of the seven; else 404")]
    params += [
        _query(name, _string(0, MAX_FILTER_LENGTH), "a filter of the event type (§6): exact match; else 400")
        for name in FILTER_NAMES
    ]
    params.append(_query("userId", _id("usr"), "your own id only (403 otherwise)"))
    # Empty is no cursor (a fresh stream).
    cursor = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_CURSOR}, {"const": ""}]}
    params.append(_query("since", cursor, "resume after this event id (Last-Event-ID wins)"))
    params.append(_header("Last-Event-ID", cursor, "resume after this event id"))
    return params


def _sse_event() -> dict[str, Any]:
    """One frame of an event stream (the schema of each event, as OpenAPI 3.1 reads it)."""
    payload = {"type": "string", "contentMediaType": "application/json", "contentSchema": {"type": "object"}}
    return _object(
        {},
        {
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "event": {"enum": [*EVENT_TYPES, "resync"]},
            "data": payload,
            "retry": {"type": "integer", "minimum": 0},
        },
    )


def _event_paths() -> dict[str, Any]:
    sse = {
        "description": "text/event-stream: `retry:`, then `id`/`event`/`data` frames and `: keep-alive` comments; "
        "`event: resync` first when the cursor is older than what is kept or ahead of the newest id",
        "content": {"text/event-stream": {"schema": _sse_event(), "example": "retry: 3000\n\n"}},
    }
    handshake = [
        _header("Sec-WebSocket-Version", {"const": "13"}, "the WebSocket version", required=True),
        _header("Sec-WebSocket-Key", _string(1), "the handshake key", required=True),
    ]
    return {
        "/api/events/{event_type}": {
            "get": _op("Server-Sent Events of one type", sse, (404, 429, 503), params=_event_params())
        },
        "/api/ws/events/{event_type}": {
            "get": _op(
                "WebSocket mirror: each event a JSON text message {id, event, data}",
                {"description": "Switching protocols (WebSocket)"},
                (404, 429, 503),
                params=[*_event_params(), *handshake],
                ok_status=101,
            )
        },
    }


def _connect_paths() -> dict[str, Any]:
    body = _object(
        {
            "repository": {"enum": list(STORES)},
            "path": _string(
                2,
                MAX_PATH_CHARS,
                pattern="^(/[A-Za-z0-9_-]+)+$",
                description="a plain path on SCRAPER_HOSTNAME: segments of A-Z a-z 0-9 - _ joined by single / (§7)",
            ),
        },
        {
            "params": {
                "type": "object",
                "description": f"forwarded as JSON; /get-leads needs `credits`, 0-{MAX_CREDITS} (leads)",
            }
        },
    )
    done = {
        "description": "The job has ended; X-Connect-Job names it",
        "headers": {"X-Connect-Job": {"required": True, "schema": _id("job")}},
    }
    return {
        "/api/connect": {
            "post": _op(
                "Ingest records from the scraper into a store; answers when the job has ended",
                done,
                (402, 429, 502, 503),
                body=body,
                body_example={"repository": "contacts", "path": "/get-leads", "params": {"credits": 20}},
                ok_status=204,
            )
        },
        "/api/connect/jobs/{job_id}": {
            "get": _op(
                "An ingestion job's summary",
                _json(_ref("Job")),
                (404,),
                params=[_path("job_id", _id("job"), "job_ id; anything else is a 404")],
            )
        },
        "/api/credits": {
            "get": _op(
                "Prepaid balance in minor units",
                _json(_ref("Credits"), example={"amount": 875, "currency": "usd"}),
                (402, 503),
            )
        },
        "/api/billing/state": {
            "get": _op(
                "Plan, this month's usage, card on file, balance, a failed payment",
                _json(_ref("BillingState"), example=BILLING_EXAMPLE),
                (402, 503),
            )
        },
    }


def _billing_paths() -> dict[str, Any]:
    return_to = [
        _query(
            "returnTo",
            _string(1, 2048),
            "where Stripe sends the customer back; its origin must be in TELENTIR_RETURN_ORIGINS "
            "(default: the first of them)",
        )
    ]
    url = _json(_ref("StripeUrl"), example={"url": "https://checkout.stripe.com/c/pay/cs_test_a1"})
    plan_body = _object({"plan": _string(1, description="a key of the plan catalog")}, {"mode": {"const": "upgrade"}})
    signature = _header(
        "Stripe-Signature",
        _string(1),
        "t=<unix time>,v1=<HMAC-SHA256 of `t.body` under STRIPE_WEBHOOK_SECRET>",
        required=True,
    )
    received = _object(
        {"received": {"const": True}, "id": _string(1), "status": {"enum": ["applied", "ignored", "replayed"]}}
    )
    stripe_errors = (402, 409, 503)
    return {
        "/api/credits/add": {
            "post": _op(
                "A Stripe Checkout URL for a credit top-up (409 stripe_not_configured without Stripe)",
                url,
                stripe_errors,
                params=return_to,
            )
        },
        "/api/billing/plan": {
            "post": _op(
                "A Stripe Checkout URL for a plan, or (mode upgrade) the subscription changed with proration",
                url,
                stripe_errors,
                params=return_to,
                body=plan_body,
                body_example={"plan": "pro"},
            )
        },
        "/api/billing/portal": {"get": _op("A Stripe customer-portal URL", url, stripe_errors, params=return_to)},
        "/api/stripe/webhook": {
            "post": _op(
                "Stripe's events, verified by signature (tolerance 300 s) and applied once; a replay is a 200",
                _json(received, example={"received": True, "id": "evt_1PxYz", "status": "applied"}),
                (409, 503),
                auth=None,
                body=_object({}, description="a Stripe event, exactly as Stripe sent it"),
                params=[signature],
            )
        },
    }


def _console_paths() -> dict[str, Any]:
    html = {"schema": {"type": "string"}, "example": "<!doctype html>"}
    page = {"description": "The console's page", "content": {"text/html": html}}
    file = {"schema": {"type": "string"}, "example": "export function start() {}"}
    asset = {"description": "A console file (script, style)", "content": {"*/*": file}}
    config = _json(
        _object({"stripe": {"type": "boolean"}}), "Whether Stripe top-ups are configured", example={"stripe": False}
    )
    name = [_path("name", _string(1), "a file of the console, e.g. app.js; anything else is a 404")]
    return {
        "/console": {"get": _op("The browser console", page, auth=None)},
        "/console/": {"get": _op("The browser console", page, auth=None)},
        "/console/config.json": {"get": _op("What the console needs to know of this server", config, auth=None)},
        "/console/{name}": {"get": _op("A console file", asset, (404,), params=name, auth=None)},
    }


def build_document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Telentir data plane",
            "version": "1.0.0",
            "description": "Client-side encrypted objects, keys, publishing, event streams and ingestion. "
            "The wire contract in prose is docs/protocol.md.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"cookie": []}],
        "components": {
            "schemas": {**_record_schemas(), **_request_schemas(), **_billing_schemas()},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A session JWT or an API key (tlk_…)"},
                "cookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "token",
                    "description": "The session JWT of a login or sign-up only (never an API key)",
                },
            },
        },
        "paths": {
            **_system_paths(),
            **_auth_paths(),
            **_server_paths(),
            **_key_paths(),
            **_object_paths(),
            **_event_paths(),
            **_connect_paths(),
            **_billing_paths(),
            **_console_paths(),
        },
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document of this API."""
    return jsonify(build_document())
