"""The OpenAPI 3.1 document of the API, served at GET /api/openapi.json.

Written by hand from the wire contract; a test fails when a registered route is missing.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

bp = Blueprint("openapi", __name__, url_prefix="/api")

ERROR = {"$ref": "#/components/schemas/Error"}
STORES = [
    "contacts",
    "calls",
    "agents",
    "tasks",
    "conversational-pathways",
    "campaigns",
    "sms-messages",
    "performance-metrics",
]
EVENT_TYPES = [
    "key_created",
    "key_deleted",
    "object_created",
    "object_updated",
    "object_deleted",
    "publish",
    "unpublish",
]
BINARY = {"type": "string", "description": "hex, or base64 (standard or URL-safe, padding optional)"}
_STATUS_TEXT = {
    400: "Malformed or invalid input",
    401: "Missing, unknown, revoked or expired credential",
    402: "Stripe declined the card (stripe_card_error)",
    403: "Phone not verified, or forbidden",
    404: "Not found (or not yours)",
    409: "Conflict",
    413: "Body or object too large",
    415: "Body is not JSON",
    429: "Rate limited (see Retry-After)",
    502: "An upstream failed",
    503: "Unavailable (with Retry-After when trying again may help)",
    504: "An upstream timed out",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: dict[str, Any],
    errors: tuple[int, ...] = (400, 401, 403, 404),
    *,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    auth: bool = True,
    ok_status: int = 200,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {str(ok_status): ok}}
    for status in errors:
        operation["responses"][str(status)] = _json(ERROR, _STATUS_TEXT[status])
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        operation["parameters"] = params
    if not auth:
        operation["security"] = []
    return operation


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


NO_CONTENT = {"description": "Done (no body)"}


def _schemas() -> dict[str, Any]:
    obj = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "user_id": {"type": "string"},
            "key_id": {"type": "string"},
            "content": {"type": "string", "description": "hex"},
            "auth_tag": {"type": "string", "description": "hex"},
            "related_object_id": {"type": ["string", "null"]},
            "metadata": {"type": "object"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "keyId": {"type": "string"},
            "authTag": {"type": "string"},
            "relatedId": {"type": ["string", "null"]},
        },
    }
    key = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "user_id": {"type": "string"},
            "server": {"type": "string"},
            "key": {"type": "string", "description": "wrapped key, hex"},
            "iv": {"type": "string", "description": "hex"},
            "metadata": {"type": "object"},
            "created_at": {"type": "string"},
            "updated_at": {"type": "string"},
            "deprecated": {"type": "boolean"},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
        },
        "Object": obj,
        "Key": key,
        "ObjectWrite": {
            "type": "object",
            "description": "Aliases: keyId=key_id, authTag=auth_tag, relatedId=relatedObjectId=related_object_id.",
            "properties": {
                "keyId": {"type": "string"},
                "content": BINARY,
                "authTag": BINARY,
                "relatedId": {"type": ["string", "null"]},
                "metadata": {"type": "object"},
                "encoding": {"enum": ["hex", "base64"]},
            },
        },
        "KeyWrite": {
            "type": "object",
            "required": ["server"],
            "properties": {
                "server": {"type": "string"},
                "key": BINARY,
                "iv": BINARY,
                "metadata": {"type": "object"},
                "encoding": {"enum": ["hex", "base64"]},
            },
        },
        "Publication": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "related_id": {"type": "string"},
                "object_id": {"type": "string"},
                "created_at": {"type": "string"},
            },
        },
        "Server": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "mode": {"enum": ["generate", "upload_public"]},
                "publicKey": {"type": "string"},
                "deprecated": {"type": "boolean"},
                "created_at": {"type": "string"},
            },
        },
        "ApiKey": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "key": {"type": "string", "description": "only when created"},
                "last_used_at": {"type": ["string", "null"]},
                "created_at": {"type": "string"},
            },
        },
        "AuthToken": {
            "type": "object",
            "properties": {"status": {"enum": ["ok", "phone_not_verified"]}, "token": {"type": "string"}},
        },
        **_billing_schemas(),
        "Job": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "status": {"type": "string"},
                "repository": {"enum": STORES},
                "path": {"type": "string"},
                "created": {"type": "integer"},
                "skipped": {"type": "integer"},
                "credits": {"type": "object"},
                "error": {"type": ["string", "null"]},
                "started_at": {"type": ["string", "null"]},
                "finished_at": {"type": ["string", "null"]},
            },
        },
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
    failure = {
        "invoice": {"type": "string"},
        "amountDue": integer,
        "currency": {"type": "string"},
        "at": {"type": "string", "format": "date-time"},
    }
    return {
        "BillingPlan": {
            "type": "object",
            "description": "The SDK's BillingPlan; the call-related fields are always 0 on this server.",
            "required": list(plan_fields),
            "properties": plan_fields,
        },
        "BillingState": {
            "type": "object",
            "required": ["plan", "usage", "hasCard", "balance", "paymentFailure"],
            "properties": {
                "plan": {"oneOf": [_ref("BillingPlan"), {"type": "null"}]},
                "usage": {"type": "object", "required": list(usage), "properties": dict.fromkeys(usage, integer)},
                "hasCard": {"type": "boolean"},
                "balance": _ref("Credits"),
                "paymentFailure": {
                    "oneOf": [{"type": "object", "required": list(failure), "properties": failure}, {"type": "null"}],
                    "description": "the newest subscription invoice, when its payment failed",
                },
            },
        },
        "Credits": {
            "type": "object",
            "required": ["amount", "currency"],
            "properties": {"amount": {"type": "integer", "description": "minor units"}, "currency": {"enum": ["usd"]}},
        },
        "StripeUrl": {
            "type": "object",
            "required": ["url"],
            "properties": {"url": {"type": "string", "format": "uri", "description": "a Stripe-hosted page"}},
        },
    }


def _auth_paths() -> dict[str, Any]:
    token = _json(_ref("AuthToken"))
    return {
        "/api/auth/register": {
            "post": _op(
                "Create an account (if TELENTIR_SIGNUP allows: 403 signup_closed, invite_required or invite_invalid)",
                token,
                (400, 403, 409, 415),
                ok_status=201,
                auth=False,
                body={
                    "type": "object",
                    "required": ["email", "phone", "password", "confirmPassword"],
                    "properties": {
                        **{
                            k: {"type": "string"}
                            for k in ("firstName", "lastName", "email", "phone", "password", "confirmPassword")
                        },
                        "invite": {"type": "string", "description": "the single-use code (TELENTIR_SIGNUP=invite)"},
                    },
                },
            )
        },
        "/api/auth/login": {
            "post": _op(
                "Log in",
                token,
                (400, 401, 429),
                auth=False,
                body={
                    "type": "object",
                    "properties": {
                        "email": {"type": "string"},
                        "password": {"type": "string"},
                        "remember": {"type": "boolean"},
                    },
                },
            )
        },
        "/api/auth": {"get": _op("The caller's profile", _json({"type": "object"}), (401,))},
        "/api/auth/logout": {
            "get": _op("Log out: revoke the session token, clear the cookie", _json({"type": "object"}), (), auth=False)
        },
        "/api/auth/phone/send": {
            "post": _op("Send a one-time code by SMS", _json({"type": "object"}), (401, 409, 429, 502))
        },
        "/api/auth/phone/verify": {
            "post": _op(
                "Verify the phone with the code",
                _json({"type": "object"}),
                (400, 401, 429),
                body={"type": "object", "properties": {"code": {"type": "string"}}},
            )
        },
        "/api/api-keys": {
            "put": _op(
                "Create an API key (shown once)",
                _json(_ref("ApiKey")),
                (400, 401),
                ok_status=201,
                body={"type": "object", "properties": {"name": {"type": "string"}}},
            ),
            "get": _op("List API keys", _json({"type": "array", "items": _ref("ApiKey")}), (401,)),
        },
        "/api/api-keys/{key_id}": {
            "delete": _op(
                "Revoke an API key", NO_CONTENT, (401, 404), ok_status=204, params=[_path_param("key_id", "ak_ id")]
            )
        },
    }


def _plane_paths() -> dict[str, Any]:
    obj_id = [_path_param("object_id", "obj_ id")]
    key_id = [_path_param("key_id", "key_ id")]
    pub = [_path_param("pub_type", "logical type, e.g. a store name"), _path_param("related_id", "obj_ id")]
    return {
        "/api/server": {
            "get": _op("Platform server name and public keys (SPKI + JWK)", _json({"type": "object"}), (401, 403))
        },
        "/api/root": {
            "get": _op("The caller's root: stores, default keys, servers", _json({"type": "object"}), (401, 403))
        },
        "/api/servers": {
            "get": _op("Registered servers", _json({"type": "array", "items": _ref("Server")}), (401, 403)),
            "post": _op(
                "Register a server (generate or upload_public)",
                _json({"type": "object"}),
                (400, 401, 403, 409),
                ok_status=201,
                body={
                    "type": "object",
                    "required": ["name", "mode"],
                    "properties": {
                        "name": {"type": "string"},
                        "mode": {"enum": ["generate", "upload_public"]},
                        "publicKey": {"type": "string"},
                    },
                },
            ),
        },
        "/api/servers/{name}": {
            "patch": _op(
                "Deprecate a server",
                _json(_ref("Server")),
                (400, 401, 403, 404),
                params=[_path_param("name", "server name")],
                body={"type": "object", "properties": {"deprecated": {"type": "boolean"}}},
            )
        },
        "/api/keys": {
            "put": _op(
                "Create a key; answers its id",
                _json({"type": "string"}),
                (400, 401, 403, 409),
                ok_status=201,
                body=_ref("KeyWrite"),
            ),
            "post": _op(
                "Create a key; answers the record",
                _json(_ref("Key")),
                (400, 401, 403, 409),
                ok_status=201,
                body=_ref("KeyWrite"),
            ),
        },
        "/api/keys/{key_id}": {
            "get": _op("A key record", _json(_ref("Key")), params=key_id),
            "patch": _op(
                "Change metadata/deprecated or re-wrap (key+iv)",
                _json(_ref("Key")),
                params=key_id,
                body={"type": "object"},
            ),
            "delete": _op("Delete a key record", NO_CONTENT, (401, 403, 404, 409), ok_status=204, params=key_id),
        },
        "/api/objects": {
            "put": _op(
                "Create an object",
                _json(_ref("Object")),
                (400, 401, 403, 404, 413, 415),
                ok_status=201,
                body=_ref("ObjectWrite"),
            ),
            "post": _op(
                "Create an object (SDK)",
                _json(_ref("Object")),
                (400, 401, 403, 404, 413, 415),
                ok_status=201,
                body=_ref("ObjectWrite"),
            ),
        },
        "/api/objects/{object_id}": {
            "get": _op("An object", _json(_ref("Object")), params=obj_id),
            "patch": _op(
                "Replace fields of an object",
                _json(_ref("Object")),
                (400, 401, 403, 404, 409, 413),
                params=obj_id,
                body=_ref("ObjectWrite"),
            ),
            "delete": _op(
                "Delete an object",
                NO_CONTENT,
                (400, 401, 403, 404, 409),
                ok_status=204,
                params=[*obj_id, _query("cascade", {"type": "boolean"}, "remove children too")],
            ),
        },
        "/api/objects/{object_id}/related": {
            "get": _op(
                "Children, oldest first (all streamed, or paged with X-Next-Cursor)",
                _json({"type": "array", "items": _ref("Object")}),
                params=[
                    *obj_id,
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size"),
                    _query("after", {"type": "string"}, "X-Next-Cursor of the previous page"),
                    _query("count", {"type": "boolean"}, "answer the number of children in X-Total-Count"),
                ],
            )
        },
        "/api/objects/publish/{pub_type}": {
            "get": _op(
                "The caller's publications of a type",
                _json({"type": "array", "items": _ref("Publication")}),
                params=[_path_param("pub_type", "logical type")],
            )
        },
        "/api/objects/publish/{pub_type}/{related_id}": {
            "put": _op(
                "Publish an object",
                _json(_ref("Publication")),
                params=pub,
                body={"type": "object", "required": ["objectId"], "properties": {"objectId": {"type": "string"}}},
            ),
            "delete": _op("Unpublish", NO_CONTENT, ok_status=204, params=pub),
        },
    }


def _event_paths() -> dict[str, Any]:
    params = [{"name": "event_type", "in": "path", "required": True, "schema": {"enum": EVENT_TYPES}}]
    params += [
        _query(name, {"type": "string"}, "filter (glob-escaped; never widens)")
        for name in ("keyId", "objectId", "relatedId", "type", "userId")
    ]
    params += [_query("since", {"type": "integer"}, "resume after this event id (or send Last-Event-ID)")]
    sse = {
        "description": "text/event-stream: `retry:`, then frames `id`/`event`/`data`, `: keep-alive` "
        "comments, and `event: resync` when the cursor is older than what is kept",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
    return {
        "/api/events/{event_type}": {
            "get": _op("Server-Sent Events of one type", sse, (400, 401, 403, 404, 429, 503), params=params)
        },
        "/api/ws/events/{event_type}": {
            "get": _op(
                "WebSocket mirror: each event a JSON text message {id, event, data}",
                {"description": "Switching protocols (WebSocket)"},
                (401, 403),
                params=params,
                ok_status=101,
            )
        },
    }


def _connect_paths() -> dict[str, Any]:
    body = {
        "type": "object",
        "required": ["repository", "path"],
        "properties": {
            "repository": {"enum": STORES},
            "path": {"type": "string", "description": "a path on SCRAPER_HOSTNAME"},
            "params": {"type": "object", "description": "forwarded as JSON; `credits` (leads) for /get-leads"},
        },
    }
    done = {
        "description": "The job has ended; X-Connect-Job names it",
        "headers": {"X-Connect-Job": {"schema": {"type": "string"}}},
    }
    return {
        "/api/connect": {
            "post": _op(
                "Ingest records from the scraper into a store",
                done,
                (400, 401, 402, 403, 415, 429, 503),
                body=body,
                ok_status=204,
            )
        },
        "/api/connect/jobs/{job_id}": {
            "get": _op("An ingestion job's summary", _json(_ref("Job")), params=[_path_param("job_id", "job_ id")])
        },
        "/api/credits": {"get": _op("Prepaid balance", _json(_ref("Credits")), (400, 401, 402, 403, 503))},
        "/api/billing/state": {
            "get": _op(
                "Plan, usage, card, balance, failed payment", _json(_ref("BillingState")), (400, 401, 402, 403, 503)
            )
        },
        **_billing_paths(),
    }


def _billing_paths() -> dict[str, Any]:
    return_to = [
        _query(
            "returnTo",
            {"type": "string", "format": "uri", "maxLength": 2048},
            "where Stripe sends the customer back; its origin must be in TELENTIR_RETURN_ORIGINS "
            "(default: the first of them)",
        )
    ]
    url = _json(_ref("StripeUrl"))
    plan_body = {
        "type": "object",
        "required": ["plan"],
        "properties": {
            "plan": {"type": "string", "description": "a key of the plan catalog"},
            "mode": {"enum": ["upgrade"]},
        },
    }
    signature = {
        "name": "Stripe-Signature",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "t=<unix time>,v1=<HMAC-SHA256 of `t.body` under STRIPE_WEBHOOK_SECRET>",
    }
    received = {
        "type": "object",
        "required": ["received", "id", "status"],
        "properties": {
            "received": {"const": True},
            "id": {"type": "string"},
            "status": {"enum": ["applied", "ignored", "replayed"]},
        },
    }
    return {
        "/api/credits/add": {
            "post": _op(
                "A Stripe Checkout URL for a credit top-up (409 stripe_not_configured without Stripe)",
                url,
                (400, 401, 403, 409, 502, 503),
                params=return_to,
            )
        },
        "/api/billing/plan": {
            "post": _op(
                "A Stripe Checkout URL for a plan, or (mode upgrade) the subscription changed with proration",
                url,
                (400, 401, 403, 409, 415, 502, 503),
                params=return_to,
                body=plan_body,
            )
        },
        "/api/billing/portal": {
            "get": _op("A Stripe customer-portal URL", url, (400, 401, 403, 409, 502, 503), params=return_to)
        },
        "/api/stripe/webhook": {
            "post": _op(
                "Stripe's events, verified by signature (tolerance 300 s) and applied once; a replay is a 200",
                _json(received),
                (400, 409, 413, 503),
                body={"type": "object", "description": "a Stripe event, as Stripe sent it"},
                params=[signature],
                auth=False,
            )
        },
    }


def _system_paths() -> dict[str, Any]:
    return {
        "/healthz": {"get": _op("The process is alive", _json({"type": "object"}), (), auth=False)},
        "/readyz": {
            "get": _op("Database writable and broker reachable", _json({"type": "object"}), (503,), auth=False)
        },
        "/api/openapi.json": {"get": _op("This document", _json({"type": "object"}), (), auth=False)},
        "/metrics": {
            "get": _op(
                "Prometheus metrics: needs Authorization: Bearer <TELENTIR_METRICS_TOKEN>; 404 when it is unset",
                {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
                (401, 404),
                auth=False,
            )
        },
    }


def _console_paths() -> dict[str, Any]:
    page = {"description": "The console's page", "content": {"text/html": {"schema": {"type": "string"}}}}
    asset = {"description": "A console file (script, style, image)", "content": {"*/*": {"schema": {"type": "string"}}}}
    config = _json(
        {"type": "object", "properties": {"stripe": {"type": "boolean"}}},
        "Whether Stripe top-ups are configured",
    )
    name = [_path_param("name", "A file of the console, e.g. app.js")]
    return {
        "/console": {"get": _op("The browser console", page, (), auth=False)},
        "/console/": {"get": _op("The browser console", page, (), auth=False)},
        "/console/config.json": {"get": _op("What the console needs to know of this server", config, (), auth=False)},
        "/console/{name}": {"get": _op("A console file", asset, (404,), params=name, auth=False)},
    }


def build_document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Telentir data plane",
            "version": "1.0.0",
            "description": "Client-side encrypted objects, keys, publishing, event streams and ingestion.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"cookie": []}],
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Session JWT or API key"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "token"},
            },
        },
        "paths": {
            **_system_paths(),
            **_auth_paths(),
            **_plane_paths(),
            **_event_paths(),
            **_connect_paths(),
            **_console_paths(),
        },
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document of this API."""
    return jsonify(build_document())
