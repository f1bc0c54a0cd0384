"""Across languages: JavaScript (the console's crypto.js; node:crypto as the SDK's NodeCrypto uses it) and the client.

What the client writes, both JavaScript implementations decrypt; what each of them seals,
stored the way the console (`POST /keys` with the wrapped key, then `POST /objects`) and the
SDK do it, the client reads, and so is what node:crypto seals under a store's default key (the
SDK's create()). Node.js runs the JavaScript (the console's module needs no browser: WebCrypto,
atob and btoa are Node's too). The SDK itself is not on npm: this stands in for it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from telentir_client import Telentir

HERE = Path(__file__).resolve().parent
CONSOLE_CRYPTO = HERE.parents[2] / "telentir" / "console" / "crypto.js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed (apt-get install nodejs)")


def api(client: Telentir, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": client._transport.session.headers["Authorization"]}
    response = requests.request(method, client._transport.api + path, json=body, headers=headers, timeout=30)
    response.raise_for_status()
    return response.json()


def javascript(tmp_path: Path, document: dict[str, Any]) -> dict[str, Any]:
    """Run js_envelope.mjs (with the console's crypto.js beside it, as an ES module) over `document`."""
    shutil.copy(HERE / "js_envelope.mjs", tmp_path / "js_envelope.mjs")
    shutil.copy(CONSOLE_CRYPTO, tmp_path / "console_crypto.mjs")
    assert NODE is not None
    done = subprocess.run(
        [NODE, str(tmp_path / "js_envelope.mjs")],
        input=json.dumps(document),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_javascript_reads_what_the_client_writes_and_the_client_reads_what_javascript_seals(
    telentir: Telentir, tmp_path: Path
) -> None:
    values = [{"name": "Ada Lovelace", "tags": ["vip"]}, {"text": 'naïve ☃ \u2028 "quoted"', "n": 1.25}]
    ids = [telentir.contacts.create(value) for value in values]
    telentir.contacts.update(ids[1], {**values[1], "updated": True})
    values[1]["updated"] = True
    opened = []
    for object_id in ids:
        record = api(telentir, "GET", f"/objects/{object_id}")
        key = api(telentir, "GET", f"/keys/{record['key_id']}")
        opened.append(
            {"key": key["key"], "iv": key["iv"], "content": record["content"], "auth_tag": record["auth_tag"]}
        )
    default = telentir.root["servers"]["default"]
    default_key = api(telentir, "GET", f"/keys/{telentir.calls.default_key}")
    document = {
        "privateKey": default["privateKey"],
        "publicKey": default["publicKey"],
        "open": opened,
        "seal": json.dumps({"from": "javascript", "list": [1, None]}),
        "defaultKey": {"key": default_key["key"], "iv": default_key["iv"]},
    }
    result = javascript(tmp_path, document)

    for side in ("console", "sdk"):
        assert [json.loads(text) for text in result[side]["opened"]] == values, side
        sealed = result[side]["sealed"]
        metadata = {"createdBy": "telentir-console"} if side == "console" else {}
        key = api(
            telentir,
            "POST",
            "/keys",
            {"server": "default", "key": sealed["key"], "iv": sealed["iv"], "metadata": metadata},
        )
        body = {
            "keyId": key["id"],
            "content": sealed["content"],
            "authTag": sealed["authTag"],
            "relatedId": telentir.tasks.id,
        }
        created = api(telentir, "POST" if side == "console" else "PUT", "/objects", body)
        assert telentir.tasks.get(created["id"]) == {"from": "javascript", "list": [1, None], "id": created["id"]}

    # The SDK's create() into a store, under the store's default key: the client reads it.
    under_default = result["sdk"]["sealedUnderDefault"]
    body = {**under_default, "keyId": telentir.calls.default_key, "relatedId": telentir.calls.id}
    created = api(telentir, "PUT", "/objects", body)
    assert telentir.calls.get(created["id"]) == {"from": "javascript", "list": [1, None], "id": created["id"]}
    assert telentir.calls.all() == [telentir.calls.get(created["id"])]
