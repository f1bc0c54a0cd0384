"""Examples of the API's records, shown in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from .base import EXAMPLE_IDS, TIMESTAMP_EXAMPLE

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
