"""The client against a real server: stores, encryption on the wire and at rest, publishing, events, jobs, errors."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tests.support import ServerProcess

from telentir_client import Event, EventStream, Telentir, TelentirError

# Written here against `cryptography` directly, the way the TypeScript SDK and the console do
# it, so that these tests prove the client speaks their format rather than its own.
OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
EVENT_WAIT = 30.0


def raw(client: Telentir, method: str, path: str, **kwargs: Any) -> requests.Response:
    """A request of the client's user, outside the client (what any other program sees)."""
    headers = {"Authorization": client._transport.session.headers["Authorization"]}
    return requests.request(method, client._transport.api + path, headers=headers, timeout=30, **kwargs)


def custodial_key(client: Telentir) -> rsa.RSAPrivateKey:
    """The user's custodial private key, read from the root as any client reads it."""
    text = raw(client, "GET", "/root").json()["servers"]["default"]["privateKey"]
    key = serialization.load_der_private_key(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def sdk_decrypt(client: Telentir, object_id: str, private_key: rsa.RSAPrivateKey | None = None) -> Any:
    """Read an object as the TypeScript SDK does: its key record, unwrapped, then AES-GCM over content + tag."""
    record = raw(client, "GET", f"/objects/{object_id}").json()
    key = raw(client, "GET", f"/keys/{record['key_id']}").json()
    aes = (private_key or custodial_key(client)).decrypt(bytes.fromhex(key["key"]), OAEP)
    plain = AESGCM(aes).decrypt(bytes.fromhex(key["iv"]), bytes.fromhex(record["content"] + record["auth_tag"]), None)
    return json.loads(plain)


def next_event(stream: EventStream, timeout: float = EVENT_WAIT) -> Event:
    """The stream's next event, or fail after `timeout` seconds (never hang the suite)."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(next, stream)
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            stream.close()
            raise AssertionError(f"no event within {timeout} s") from None


def data_files(server: ServerProcess) -> list[Path]:
    return [path for path in server.data_dir.rglob("*") if path.is_file()]


# --- connect ---------------------------------------------------------------------------------------


def test_connect_reads_the_root_and_exposes_every_store(telentir: Telentir) -> None:
    names = {
        "contacts": telentir.contacts,
        "calls": telentir.calls,
        "agents": telentir.agents,
        "tasks": telentir.tasks,
        "conversational-pathways": telentir.pathways,
        "campaigns": telentir.campaigns,
        "sms-messages": telentir.sms_messages,
        "performance-metrics": telentir.performance_metrics,
    }
    root = telentir.root["stores"]
    for name, repository in names.items():
        assert repository.name == name and repository.id == root[name]["id"]
        assert telentir.store(name) is repository
    assert telentir.store("pathways") is telentir.pathways and telentir.store("sms_messages") is telentir.sms_messages
    with pytest.raises(TelentirError) as caught:
        telentir.store("nonsense")
    assert caught.value.status == 404 and caught.value.code == "not_found"


def test_the_servers_url_without_api_works_too(new_user: Callable[..., dict[str, Any]], server: ServerProcess) -> None:
    with Telentir.connect(api_key=new_user()["api_key"], api=server.url + "/") as client:
        assert client._transport.api == server.url + "/api"
        object_id = client.contacts.create({"name": "Ada"})
        assert client.contacts.get(object_id)["name"] == "Ada"


def test_a_bad_api_key_is_a_401_at_connect(api_url: str) -> None:
    with pytest.raises(TelentirError) as caught:
        Telentir.connect(api_key="tlk_not-a-key", api=api_url)
    assert (caught.value.status, caught.value.code) == (401, "unauthorized") and caught.value.message


def test_connect_takes_its_defaults_from_the_environment(
    new_user: Callable[..., dict[str, Any]], api_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELENTIR_API_KEY", new_user()["api_key"])
    monkeypatch.setenv("TELENTIR_API", api_url)
    with Telentir.connect() as client:
        assert client.contacts.all() == []
    monkeypatch.delenv("TELENTIR_API_KEY")
    with pytest.raises(TelentirError) as caught:
        Telentir.connect(api=api_url)
    assert caught.value.status == 401


# --- the repositories ------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["contacts", "tasks"])
def test_create_get_update_all_delete(telentir: Telentir, store: str) -> None:
    repository = telentir.contacts if store == "contacts" else telentir.store("tasks")
    first = repository.create({"name": "Ada Lovelace", "tags": ["vip"], "score": 1.5, "note": "Zürich ✓"})
    second = repository.create({"name": "Charles Babbage"})
    assert first.startswith("obj_") and second != first
    assert repository.get(first) == {
        "name": "Ada Lovelace",
        "tags": ["vip"],
        "score": 1.5,
        "note": "Zürich ✓",
        "id": first,
    }

    repository.update(first, {"name": "Ada King", "id": "ignored"})
    assert repository.get(first) == {"name": "Ada King", "id": first}
    assert repository.all() == [{"name": "Ada King", "id": first}, {"name": "Charles Babbage", "id": second}]

    repository.delete(first)
    with pytest.raises(TelentirError) as caught:
        repository.get(first)
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    with pytest.raises(TelentirError) as caught:
        repository.update(first, {"name": "ghost"})
    assert caught.value.status == 404
    with pytest.raises(TelentirError) as caught:
        repository.delete(first)
    assert caught.value.status == 404
    assert repository.all() == [{"name": "Charles Babbage", "id": second}]


def test_an_item_of_another_store_is_not_found_in_this_one(telentir: Telentir) -> None:
    contact = telentir.contacts.create({"name": "Ada"})
    with pytest.raises(TelentirError) as caught:
        telentir.tasks.get(contact)
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    with pytest.raises(TelentirError):
        telentir.tasks.delete(contact)
    assert telentir.contacts.get(contact)["name"] == "Ada"


def test_one_user_never_reads_another_users_items(
    new_user: Callable[..., dict[str, Any]], connect_as: Callable[..., Telentir]
) -> None:
    alice, mallory = connect_as(new_user()), connect_as(new_user())
    secret = alice.contacts.create({"name": "Alice's contact"})
    for attempt in (mallory.contacts.get, mallory.contacts.delete, lambda i: mallory.contacts.update(i, {})):
        with pytest.raises(TelentirError) as caught:
            attempt(secret)
        assert caught.value.status == 404
    assert mallory.contacts.all() == [] and alice.contacts.get(secret)["name"] == "Alice's contact"


def test_iter_pages_through_a_store_in_order(telentir: Telentir) -> None:
    ids = [telentir.agents.create({"n": n}) for n in range(7)]
    assert [item["id"] for item in telentir.agents.iter(page_size=3)] == ids
    assert [item["n"] for item in telentir.agents.iter(page_size=1000)] == list(range(7))
    with pytest.raises(ValueError):
        list(telentir.agents.iter(page_size=0))


def _paths_sent(client: Telentir) -> list[str]:
    """The path and query of every request `client` sends from now on, in order."""
    sent: list[str] = []
    client._transport.session.hooks["response"].append(lambda response, *a, **k: sent.append(response.request.path_url))
    return sent


def test_reading_a_store_reads_its_keys_in_one_request(
    new_user: Callable[..., dict[str, Any]], connect_as: Callable[..., Telentir]
) -> None:
    user = new_user()
    ids = [connect_as(user).contacts.create({"n": n}) for n in range(5)]
    reader = connect_as(user)  # a fresh key cache: every item's key is read
    sent = _paths_sent(reader)
    assert [item["n"] for item in reader.contacts.all()] == list(range(5))
    key_reads = [path for path in sent if path.startswith("/api/keys")]
    assert len(key_reads) == 1 and key_reads[0].startswith("/api/keys?ids="), sent
    records = [raw(reader, "GET", f"/objects/{i}").json() for i in ids]
    assert sorted(key_reads[0].split("=", 1)[1].split("%2C")) == sorted(r["key_id"] for r in records)


@pytest.mark.parametrize(("status", "batch_reads_asked"), [(405, 1), (503, 2)])
def test_a_refused_batch_key_read_leaves_each_item_to_its_own_key_read(
    new_user: Callable[..., dict[str, Any]],
    connect_as: Callable[..., Telentir],
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    batch_reads_asked: int,
) -> None:
    """405 (the hosted service has no `GET /keys`): single key reads from then on, the batch read never asked again.

    503: this page's keys are read one by one (the page does not fail), and the next page asks
    the batch read again.
    """
    user = new_user()
    for n in range(3):
        connect_as(user).agents.create({"n": n})
    reader = connect_as(user)
    answer, batch_reads = reader._transport.json, []

    def batch_read_refused(method: str, path: str, body: Any = None, params: Any = None) -> Any:
        if path == "/keys" and method == "GET":
            batch_reads.append(path)
            raise TelentirError(status, "refused", "GET /keys is refused here.")
        return answer(method, path, body, params)

    monkeypatch.setattr(reader._transport, "json", batch_read_refused)
    sent = _paths_sent(reader)
    for _ in range(2):  # two pages, each with its keys to read
        reader.keyring._cache.clear()
        assert [item["n"] for item in reader.agents.all()] == [0, 1, 2]
    assert len([path for path in sent if path.startswith("/api/keys/key_")]) == 6, sent
    assert len(batch_reads) == batch_reads_asked


# --- encryption on the wire and at rest ----------------------------------------------------------


def test_the_server_holds_no_plaintext_and_every_write_has_its_own_key(
    telentir: Telentir, server: ServerProcess
) -> None:
    marker = "plaintext-marker-3f9c1a"
    first = telentir.contacts.create({"name": marker})
    second = telentir.contacts.create({"name": marker})
    records = [raw(telentir, "GET", f"/objects/{i}").json() for i in (first, second)]
    keys = [raw(telentir, "GET", f"/keys/{r['key_id']}").json() for r in records]
    # Two writes, two key records, two IVs: no key/IV pair is ever used twice.
    assert records[0]["key_id"] != records[1]["key_id"]
    assert keys[0]["iv"] != keys[1]["iv"] and keys[0]["key"] != keys[1]["key"]
    assert all(key["server"] == "default" for key in keys)
    assert records[0]["content"] != records[1]["content"]
    for record in records:
        assert marker not in json.dumps(record) and marker.encode().hex() not in record["content"]

    telentir.contacts.update(first, {"name": marker, "v": 2})
    updated = raw(telentir, "GET", f"/objects/{first}").json()
    assert updated["key_id"] not in {records[0]["key_id"], records[1]["key_id"]}
    # The old content's key, made by this client for it alone, is gone.
    assert raw(telentir, "GET", f"/keys/{records[0]['key_id']}").status_code == 404
    assert raw(telentir, "GET", f"/keys/{records[1]['key_id']}").status_code == 200

    # And at rest: no file of the server's data folder (database, WAL, ciphertext files) holds it.
    for path in data_files(server):
        assert marker.encode() not in path.read_bytes(), path


def test_what_the_client_writes_the_sdk_reads(telentir: Telentir) -> None:
    value = {"name": "Grace Hopper", "nested": {"list": [1, 2, None, True]}, "text": "naïve ☃"}
    object_id = telentir.campaigns.create(value)
    assert sdk_decrypt(telentir, object_id) == value
    record = raw(telentir, "GET", f"/objects/{object_id}").json()
    assert record["related_object_id"] == telentir.campaigns.id and len(bytes.fromhex(record["auth_tag"])) == 16


def test_what_the_sdk_writes_under_a_stores_default_key_the_client_reads(telentir: Telentir) -> None:
    """The TypeScript SDK's create(): AES-GCM under the store's default key and IV, PUT /objects, hex."""
    store = raw(telentir, "GET", "/root").json()["stores"]["calls"]
    key = raw(telentir, "GET", f"/keys/{store['defaultKey']}").json()
    aes = custodial_key(telentir).decrypt(bytes.fromhex(key["key"]), OAEP)
    sealed = AESGCM(aes).encrypt(bytes.fromhex(key["iv"]), json.dumps({"caller": "SDK", "n": 1}).encode(), None)
    body = {
        "keyId": key["id"],
        "content": sealed[:-16].hex(),
        "authTag": sealed[-16:].hex(),
        "related_object_id": store["id"],
    }
    created = raw(telentir, "PUT", "/objects", json=body).json()
    assert telentir.calls.get(created["id"]) == {"caller": "SDK", "n": 1, "id": created["id"]}
    assert telentir.calls.all() == [{"caller": "SDK", "n": 1, "id": created["id"]}]

    # The client's update moves it to a fresh key and never deletes the store's default key.
    telentir.calls.update(created["id"], {"caller": "client"})
    assert raw(telentir, "GET", f"/objects/{created['id']}").json()["key_id"] != key["id"]
    assert raw(telentir, "GET", f"/keys/{key['id']}").status_code == 200
    assert sdk_decrypt(telentir, created["id"]) == {"caller": "client"}


def test_what_the_console_writes_the_client_reads_and_retires(telentir: Telentir) -> None:
    """The console's write (telentir/console/crypto.js sealForServer, vault.js seal): a fresh key it wraps itself."""
    public_key = custodial_key(telentir).public_key()
    aes, iv = AESGCM.generate_key(bit_length=256), bytes(range(12))
    sealed = AESGCM(aes).encrypt(iv, json.dumps({"from": "console"}).encode(), None)
    key_body = {"server": "default", "key": public_key.encrypt(aes, OAEP).hex(), "iv": iv.hex(),
                "metadata": {"createdBy": "telentir-console"}}  # fmt: skip
    key = raw(telentir, "POST", "/keys", json=key_body).json()
    body = {
        "keyId": key["id"],
        "content": sealed[:-16].hex(),
        "authTag": sealed[-16:].hex(),
        "relatedId": telentir.tasks.id,
    }
    created = raw(telentir, "POST", "/objects", json=body).json()
    assert telentir.tasks.get(created["id"]) == {"from": "console", "id": created["id"]}

    telentir.tasks.update(created["id"], {"from": "client"})  # the console's key for the old content goes
    assert raw(telentir, "GET", f"/keys/{key['id']}").status_code == 404
    assert telentir.tasks.get(created["id"]) == {"from": "client", "id": created["id"]}


def test_documented_base64_writes_and_short_tags_are_read_too(telentir: Telentir) -> None:
    """A client of the published API reference: PUT, camelCase, base64; and a 12-byte GCM tag."""
    public_key = custodial_key(telentir).public_key()
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    aes, iv = AESGCM.generate_key(bit_length=256), bytes(12)
    key_id = raw(
        telentir,
        "PUT",
        "/keys",
        json={
            "server": "default",
            "key": base64.b64encode(public_key.encrypt(aes, OAEP)).decode(),
            "iv": base64.b64encode(iv).decode(),
        },
    ).json()
    encryptor = Cipher(algorithms.AES(aes), modes.GCM(iv)).encryptor()
    content = encryptor.update(b'{"short": "tag"}') + encryptor.finalize()
    body = {
        "keyId": key_id,
        "content": base64.b64encode(content).decode(),
        "authTag": base64.b64encode(encryptor.tag[:12]).decode(),
        "relatedId": telentir.contacts.id,
    }
    created = raw(telentir, "PUT", "/objects", json=body).json()
    assert telentir.contacts.get(created["id"]) == {"short": "tag", "id": created["id"]}


def test_tampered_ciphertext_is_refused(telentir: Telentir) -> None:
    object_id = telentir.contacts.create({"name": "Ada"})
    record = raw(telentir, "GET", f"/objects/{object_id}").json()
    flipped = bytes.fromhex(record["content"])
    flipped = bytes([flipped[0] ^ 1]) + flipped[1:]
    raw(telentir, "PATCH", f"/objects/{object_id}", json={"content": flipped.hex(), "authTag": record["auth_tag"]})
    with pytest.raises(TelentirError) as caught:
        telentir.contacts.get(object_id)
    assert caught.value.code == "cannot_decrypt"


# --- bring your own key ----------------------------------------------------------------------------


def test_byok_items_need_the_private_key_the_program_holds(
    new_user: Callable[..., dict[str, Any]], connect_as: Callable[..., Telentir]
) -> None:
    user = new_user()
    own = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = own.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = own.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    first = connect_as(user)
    first.request(
        "POST", "/servers", {"name": "Laptop", "mode": "upload_public", "publicKey": base64.b64encode(public).decode()}
    )

    holder = connect_as(user, private_keys={"Laptop": pem.decode()})
    object_id = holder.contacts.create({"name": "only mine"}, server="laptop")
    assert holder.contacts.get(object_id) == {"name": "only mine", "id": object_id}
    assert sdk_decrypt(holder, object_id, own) == {"name": "only mine"}
    assert (
        raw(holder, "GET", f"/keys/{raw(holder, 'GET', f'/objects/{object_id}').json()['key_id']}").json()["server"]
        == "laptop"
    )

    holder.contacts.update(object_id, {"name": "still mine"})  # stays with the server it was for
    assert sdk_decrypt(holder, object_id, own) == {"name": "still mine"}

    without = connect_as(user)  # the custodial key alone cannot read it
    with pytest.raises(TelentirError) as caught:
        without.contacts.get(object_id)
    assert caught.value.code == "cannot_decrypt" and "laptop" in caught.value.message

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong = stranger.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="not the private key"):
        connect_as(user, private_keys={"laptop": wrong})
    with pytest.raises(ValueError, match="no server named"):
        connect_as(user, private_keys={"desktop": pem})


# --- publishing -------------------------------------------------------------------------------------


def test_publish_re_encrypts_for_the_platform_and_unpublish_withdraws_it(telentir: Telentir) -> None:
    campaign = telentir.campaigns.create({"name": "Spring outreach"})
    copy = telentir.campaigns.publish(campaign)
    publications = raw(telentir, "GET", "/objects/publish/campaigns").json()
    assert [(p["related_id"], p["object_id"]) for p in publications] == [(campaign, copy)]
    platform = raw(telentir, "GET", "/server").json()["current"]
    copy_record = raw(telentir, "GET", f"/objects/{copy}").json()
    assert copy_record["related_object_id"] == campaign  # under the item, not in the store
    assert raw(telentir, "GET", f"/keys/{copy_record['key_id']}").json()["server"] == platform
    assert telentir.campaigns.all() == [{"name": "Spring outreach", "id": campaign}]

    again = telentir.campaigns.publish(campaign)  # a second publication replaces the first, copy and all
    assert raw(telentir, "GET", f"/objects/{copy}").status_code == 404
    assert [p["object_id"] for p in raw(telentir, "GET", "/objects/publish/campaigns").json()] == [again]

    telentir.campaigns.unpublish(campaign)
    assert raw(telentir, "GET", "/objects/publish/campaigns").json() == []
    assert raw(telentir, "GET", f"/objects/{again}").status_code == 404
    with pytest.raises(TelentirError) as caught:
        telentir.campaigns.unpublish(campaign)
    assert caught.value.status == 404
    assert telentir.campaigns.get(campaign)["name"] == "Spring outreach"


def test_deleting_a_published_item_removes_its_copy(telentir: Telentir) -> None:
    campaign = telentir.campaigns.create({"name": "Short-lived"})
    copy = telentir.campaigns.publish(campaign)
    telentir.campaigns.delete(campaign)
    assert raw(telentir, "GET", f"/objects/{copy}").status_code == 404
    assert raw(telentir, "GET", "/objects/publish/campaigns").json() == []


# --- events ----------------------------------------------------------------------------------------


def test_listen_yields_a_write_made_after_it_opened_decrypted(telentir: Telentir) -> None:
    with telentir.events.listen("object_created", {"relatedId": telentir.contacts.id}) as stream:
        object_id = telentir.contacts.create({"name": "Live Lead"})
        event = next_event(stream)
    assert event == {"name": "Live Lead", "id": object_id}
    assert event.type == "object_created" and event.decrypted and isinstance(event.event_id, int)
    assert event.record["related_object_id"] == telentir.contacts.id and event.record["id"] == object_id


def test_listen_passes_other_event_types_as_sent(telentir: Telentir) -> None:
    object_id = telentir.tasks.create({"v": 1})
    with telentir.events.listen("object_updated", {"objectId": object_id}) as updated:
        telentir.tasks.update(object_id, {"v": 2})
        event = next_event(updated)
    assert event.type == "object_updated" and event["object_id"] == object_id and not event.decrypted
    with pytest.raises(TelentirError) as caught:
        telentir.events.listen("object_created", {"objectid": "x"})  # a misspelt filter is refused, not widened
    assert caught.value.status == 400
    with pytest.raises(ValueError):
        telentir.events.listen("nonsense")


def test_listen_resumes_after_a_dropped_connection_without_losing_events(telentir: Telentir) -> None:
    with telentir.events.listen("object_created") as stream:
        first = telentir.contacts.create({"n": 1})
        assert next_event(stream)["id"] == first
        dropped = stream._response
        assert dropped is not None
        dropped.close()  # the connection drops
        missed = [telentir.contacts.create({"n": n}) for n in (2, 3)]
        resumed = [next_event(stream), next_event(stream)]
        assert stream._response is not None and stream._response is not dropped  # a new connection
    assert [event["id"] for event in resumed] == missed and [event["n"] for event in resumed] == [2, 3]
    assert resumed[0].event_id is not None and resumed[0].event_id > 0


def test_listen_follows_a_resync(telentir: Telentir) -> None:
    """A cursor the server cannot continue (ahead of its log): `resync` first, then the stream goes on live."""
    with telentir.events.listen("object_created", last_event_id=2**62) as stream:
        resync = next_event(stream)
        assert resync.type == "resync" and isinstance(resync["since"], int)
        assert stream.last_event_id == str(resync["since"] - 1)
        object_id = telentir.contacts.create({"after": "resync"})
        assert next_event(stream)["id"] == object_id


def test_listen_with_a_revoked_key_ends_with_a_401(
    new_user: Callable[..., dict[str, Any]], connect_as: Callable[..., Telentir], server_rt: Any
) -> None:
    from telentir.services import credentials

    user = new_user()
    client = connect_as(user)
    stream = client.events.listen("object_created")
    [key] = credentials.list_api_keys(server_rt, user["id"])
    credentials.revoke_api_key(server_rt, key["id"], user["id"])
    with pytest.raises(TelentirError) as caught:
        next_event(stream, timeout=60)
    assert caught.value.status == 401
    stream.close()


# --- credits, billing, ingestion ------------------------------------------------------------------


def test_credits_and_billing_state(
    new_user: Callable[..., dict[str, Any]], connect_as: Callable[..., Telentir]
) -> None:
    client = connect_as(new_user(balance=1234))
    assert client.credits.get_balance() == {"amount": 1234, "currency": "usd"}
    state = client.billing.get_state()
    assert state["plan"]["key"] == "tiny" and state["balance"] == {"currency": "usd", "amount": 1234}
    assert state["usage"]["leads"] == 0


def test_a_connect_job_runs_to_its_summary_and_its_records_decrypt(
    new_user: Callable[..., dict[str, Any]], connect_as: Callable[..., Telentir]
) -> None:
    client = connect_as(new_user(balance=10_000))
    summary = client.connect("contacts", "/get-leads", {"credits": 5, "tag": "client"})
    assert summary["status"] == "succeeded" and summary["created"] == 5 and summary["id"].startswith("job_")
    assert summary["credits"]["granted"] == 5 and summary["credits"]["allowance_used"] == 3
    leads = client.contacts.all()
    assert sorted(lead["name"] for lead in leads) == [f"Lead {n}" for n in range(5)]
    assert all(lead["tag"] == "client" for lead in leads)
    assert client.credits.get_balance()["amount"] == 10_000 - 2 * 25
    other = client.connect("sms_messages", "/messages", {"count": 2})
    assert (
        other["status"] == "succeeded" and other["repository"] == "sms-messages" and len(client.sms_messages.all()) == 2
    )


def test_a_refused_connect_is_a_telentir_error(telentir: Telentir) -> None:
    with pytest.raises(TelentirError) as caught:
        telentir.connect("contacts", "/../etc", {})
    assert caught.value.status == 400 and caught.value.code == "invalid_request"


def test_concurrent_writes_from_threads_each_get_their_own_key(telentir: Telentir) -> None:
    barrier = threading.Barrier(4)

    def write(n: int) -> str:
        barrier.wait(timeout=30)
        return telentir.performance_metrics.create({"n": n})

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(write, range(4)))
    keys = {raw(telentir, "GET", f"/objects/{i}").json()["key_id"] for i in ids}
    assert len(keys) == 4
    assert sorted(item["n"] for item in telentir.performance_metrics.all()) == [0, 1, 2, 3]
