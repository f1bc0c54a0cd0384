"""The console in a real browser: Debian's Chromium driven by Playwright against a real server (gunicorn).

Every test signs in as a person would, types into the page and reads what the page shows;
what the page stored is then read back through the API and decrypted in Python, so a page
that only pretended to encrypt would fail. Every page is watched for CSP violations and
uncaught script errors, and must raise none.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from telentir.runtime import Runtime
from telentir.services import accounts, credentials, keyring, objects

from ..console_support import (
    PASSWORD,
    ids_in_list,
    item,
    item_json,
    open_plaintext,
    phone_code,
    sign_in_with_api_key,
    sign_in_with_password,
    wait_until_live,
)
from ..dataplane_support import encrypt, load_public, wrap
from ..scraper_fixture import TestScraper
from ..support import FIXED_MASTER_KEY, ROOT, Api, ServerProcess, runtime_over

pytestmark = pytest.mark.timeout(180)
SCREENSHOT_ENV = "TELENTIR_CONSOLE_SCREENSHOT"  # set to docs/console.png to refresh the README's picture


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, scraper: TestScraper) -> Iterator[ServerProcess]:
    """A real server; streams ask clients to come back after 500 ms, so reconnection tests stay short."""
    env = {
        "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY,
        "SCRAPER_HOSTNAME": scraper.url,
        "TELENTIR_SSE_RETRY_MS": "500",
        "TELENTIR_LOG_LEVEL": "WARNING",  # the log SMS sender writes codes at WARNING
    }
    process = ServerProcess(tmp_path_factory.mktemp("console") / "data", env).start()
    yield process
    scraper.stopping.set()
    process.discard()


def create_item(page: Page, value: dict[str, Any]) -> str:
    """Create an item of the open store through the editor; returns its id once the page shows it decrypted."""
    before = set(ids_in_list(page))
    page.get_by_role("button", name="New item").click()
    page.get_by_label("Content (JSON)").fill(json.dumps(value))
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#editor")).not_to_be_visible()
    # Functions, not expressions: Playwright evaluates a bare expression with eval(), which the CSP forbids.
    page.wait_for_function("n => document.querySelectorAll('#items .item').length > n", arg=len(before))
    (new_id,) = set(ids_in_list(page)) - before
    assert item_json(page, new_id) == value
    return new_id


# --- sign-in, create, live, edit, delete, nothing in clear ------------------------------------


def test_a_contact_made_in_the_page_is_stored_encrypted_and_arrives_live_elsewhere(
    server: ServerProcess, person: dict[str, Any], api: Api, open_page: Any
) -> None:
    first = open_page()
    sign_in_with_password(first.page, server.url, person["email"])
    expect(first.page.locator("#store-name")).to_have_text("Items of contacts")
    second = open_page()  # another browser, signed in with an API key: another client
    sign_in_with_api_key(second.page, server.url, person["api_key"])

    contact = {"name": "Grace Hopper", "email": "grace@navy.example", "note": "COBOL-ZX81"}
    object_id = create_item(first.page, contact)
    assert item_json(second.page, object_id) == contact  # arrived live, decrypted there too
    expect(second.page.locator('[data-store="contacts"] .store-count')).to_have_text("1")

    root = api.get("/root").json()
    record = api.get(f"/objects/{object_id}").json()
    assert record["related_object_id"] == root["stores"]["contacts"]["id"]
    assert record["key_id"] != root["stores"]["contacts"]["defaultKey"]  # a fresh key per object
    assert open_plaintext(api, root, object_id) == contact

    edited = {**contact, "note": "Nanoseconds-QW77"}
    item(first.page, object_id).get_by_role("button", name="Open").click()
    first.page.get_by_role("dialog", name=f"Item {object_id}").get_by_role("button", name="Edit").click()
    first.page.get_by_label("Content (JSON)").fill(json.dumps(edited))
    first.page.get_by_role("button", name="Save").click()
    expect(first.page.locator("#detail-json")).to_contain_text("Nanoseconds-QW77")
    first.page.get_by_role("button", name="Close").click()
    expect(item(second.page, object_id)).to_contain_text("Nanoseconds-QW77")  # the table's note column
    assert item_json(first.page, object_id) == edited
    updated = api.get(f"/objects/{object_id}").json()
    assert updated["key_id"] != record["key_id"]  # re-encrypted under a new key and IV, not the old pair
    assert api.get(f"/keys/{record['key_id']}").status_code == 404  # the console's old key is gone
    assert open_plaintext(api, root, object_id) == edited

    item(first.page, object_id).get_by_role("button", name="Open").click()
    first.page.get_by_role("dialog", name=f"Item {object_id}").get_by_role("button", name="Delete").click()
    first.page.get_by_role("button", name="Delete for good").click()
    expect(item(first.page, object_id)).to_have_count(0)
    expect(item(second.page, object_id)).to_have_count(0)  # gone live there too
    expect(second.page.locator('[data-store="contacts"] .store-count')).to_have_text("0")
    assert api.get(f"/objects/{object_id}").status_code == 404
    assert api.get(f"/keys/{updated['key_id']}").status_code == 404

    typed = ["Grace Hopper", "grace@navy.example", "COBOL-ZX81", "Nanoseconds-QW77"]
    sent = first.sent_text() + second.sent_text()
    assert [value for value in typed if value in sent] == []
    assert any("/api/objects" in request.url and request.method == "POST" for request in first.requests)


def test_an_item_written_by_another_program_appears_live_and_undecryptable_ones_say_so(
    server: ServerProcess, person: dict[str, Any], api: Api, open_page: Any
) -> None:
    watched = open_page()
    sign_in_with_api_key(watched.page, server.url, person["api_key"])
    root = api.get("/root").json()
    store = root["stores"]["contacts"]["id"]
    # Under the store's default key, with a tag that does not authenticate: the page says so and goes on.
    tampered = api.post(
        "/objects",
        json={
            "keyId": root["stores"]["contacts"]["defaultKey"],
            "content": "00" * 8,
            "authTag": "11" * 16,
            "relatedId": store,
        },
    ).json()
    row = item(watched.page, tampered["id"])
    expect(row).to_have_attribute("data-state", "undecryptable")
    expect(row).to_contain_text("Cannot decrypt: the ciphertext does not authenticate")
    expect(watched.page.locator("#store-error")).to_be_hidden()


def test_signing_in_with_a_phone_to_verify_then_out(server: ServerProcess, server_rt: Runtime, open_page: Any) -> None:
    phone = "+15555550177"
    user = accounts.create_user(server_rt, f"phone-{os.getpid()}@example.com", phone, password=PASSWORD)
    watched = open_page()
    page = watched.page
    page.goto(server.url + "/console")
    page.get_by_label("Email").fill(user["email"])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_role("button", name="Send a code").click()
    expect(page.locator("#signin-error")).to_have_text("A code is on its way to your phone.")
    code = phone_code(server.log(), phone)  # logged before the send answered
    assert code is not None, server.log()[-2000:]
    page.get_by_label("Code").fill(code)
    page.get_by_role("button", name="Verify").click()
    wait_until_live(page)
    expect(page.locator("#who")).to_have_text(user["email"])
    cookie = next(c for c in page.context.cookies() if c["name"] == "token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert [c for c in page.context.cookies() if c["name"] == "token"] == []
    revoked = Api(server.url, cookie["value"])
    assert revoked.get("/auth").status_code == 401  # the session token was revoked, not only forgotten
    revoked.close()


def test_the_console_is_usable_with_the_keyboard_alone(
    server: ServerProcess, person: dict[str, Any], api: Api, open_page: Any
) -> None:
    page = open_page().page
    page.goto(server.url + "/console")
    expect(page.get_by_label("Email")).to_be_focused()  # the sign-in form takes the focus
    page.keyboard.type(person["email"])
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    wait_until_live(page)
    page.get_by_role("button", name="New item").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Content (JSON)")).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type('{"name": "Keyboard Person"}')
    page.keyboard.press("Tab")  # the server choice
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Save")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#items .item")).to_contain_text("Keyboard Person")
    outline = page.evaluate(
        "() => { const b = document.querySelector('#new-item'); b.focus(); return getComputedStyle(b).outlineStyle; }"
    )
    assert outline != "none"


def test_at_phone_width_nothing_overflows_sideways(
    server: ServerProcess, person: dict[str, Any], open_page: Any
) -> None:
    page = open_page(viewport={"width": 375, "height": 740}, is_mobile=True).page
    sign_in_with_api_key(page, server.url, person["api_key"])
    for tab in ("Stores", "Keys and servers", "Ingestion and credits"):
        page.get_by_role("button", name=tab, exact=True).click()
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (tab, overflow)


# --- live: resuming after a dropped connection --------------------------------------------------


def test_after_a_dropped_connection_the_page_resumes_from_its_last_event(
    server: ServerProcess, server_rt: Runtime, person: dict[str, Any], api: Api, open_page: Any
) -> None:
    watched = open_page()
    page = watched.page
    sign_in_with_api_key(page, server.url, person["api_key"])
    first = create_item(page, {"name": "Before the drop"})
    store = api.get("/root").json()["stores"]["contacts"]["id"]
    last_seen = server_rt.db.query_value(
        "SELECT MAX(id) FROM events WHERE user_id = ? AND type = 'object_created'", (person["id"],)
    )
    page.evaluate(
        """() => { const status = document.querySelector('#live-status'); window.liveStates = [];
        new MutationObserver(() => window.liveStates.push(status.textContent))
            .observe(status, {childList: true, characterData: true, subtree: true}); }"""
    )

    # The workers die: every stream drops at once; gunicorn starts others on the same socket.
    for pid in server.worker_pids():
        os.kill(pid, signal.SIGKILL)
    # Written while the page cannot hear: a fresh stream would never replay it, a resumed one must.
    key = keyring.create_key(server_rt, person["id"], "default", None, None, "{}")
    missed = objects.create_object(server_rt, person["id"], key["id"], b"\0" * 4, b"\1" * 16, store, "{}")
    expect(item(page, missed["id"])).to_have_count(1)
    expect(page.locator("#live-status")).to_have_text("Live")
    assert "Reconnecting…" in page.evaluate("window.liveStates")
    assert ids_in_list(page) == [first, missed["id"]]
    resumed = [r for r in watched.requests if "/api/events/object_created" in r.url and "last-event-id" in r.headers]
    assert resumed, "the page reconnected without Last-Event-ID"
    assert int(resumed[0].headers["last-event-id"]) == last_seen


# --- keys and servers: BYOK ---------------------------------------------------------------------


def test_a_byok_server_generated_in_the_page_decrypts_items_written_for_it(
    server: ServerProcess, person: dict[str, Any], api: Api, open_page: Any, tmp_path: Path
) -> None:
    watched = open_page()
    page = watched.page
    sign_in_with_password(page, server.url, person["email"])
    page.get_by_role("button", name="Keys and servers").click()
    expect(page.locator("#store-keys tbody tr")).to_have_count(8)
    expect(page.locator("#store-keys tbody")).to_contain_text("decrypts here")
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Generate a key pair and register").click()
    expect(page.locator('#servers tr[data-server="laptop"] .held')).to_have_text("yes")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the private key of laptop").click()
    pem_path = tmp_path / "laptop.pem"
    download.value.save_as(pem_path)
    pem = pem_path.read_text()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")

    # Only the public half reached the server: it answers no private key, and nothing the page sent holds it.
    (registered,) = [s for s in api.get("/servers").json() if s["name"] == "laptop"]
    assert registered["mode"] == "upload_public"
    der_b64 = "".join(pem.strip().splitlines()[1:-1])
    assert der_b64[:60] not in watched.sent_text()

    # Another program writes an item for `laptop` with the public key only.
    root = api.get("/root").json()
    store = root["stores"]["campaigns"]["id"]
    aes, iv = os.urandom(32), os.urandom(12)
    wrapped = wrap(load_public(registered["publicKey"]), aes)
    key = api.post("/keys", json={"server": "laptop", "key": wrapped.hex(), "iv": iv.hex()}).json()
    secret = {"campaign": "Spring launch", "budget": 1200}
    content, tag = encrypt(aes, iv, json.dumps(secret).encode())
    created = api.post(
        "/objects", json={"keyId": key["id"], "content": content.hex(), "authTag": tag.hex(), "relatedId": store}
    ).json()

    page.get_by_role("button", name="Stores").click()
    page.locator('[data-store="campaigns"]').click()
    assert item_json(page, created["id"]) == secret
    item(page, created["id"]).get_by_role("button", name="Open").click()
    expect(page.locator("#detail-meta")).to_contain_text("encrypted for server laptop")
    page.get_by_role("button", name="Close").click()

    # A reload forgets the private key; the item says why it cannot be read, until the key is given back.
    page.reload()
    wait_until_live(page)
    page.locator('[data-store="campaigns"]').click()
    row = item(page, created["id"])
    expect(row).to_have_attribute("data-state", "undecryptable")
    expect(row).to_contain_text("whose private key is not in this page")
    page.get_by_role("button", name="Keys and servers").click()
    page.get_by_label("or pick a file").set_input_files(str(pem_path))
    page.get_by_role("button", name="Use this private key").click()
    expect(page.locator("#private-key-status")).to_contain_text("laptop")
    page.get_by_role("button", name="Stores").click()
    assert item_json(page, created["id"]) == secret

    # A key that belongs to another server is refused.
    page.get_by_role("button", name="Keys and servers").click()
    page.get_by_label("Name").fill("desk")
    page.get_by_role("button", name="Generate a key pair and register").click()
    expect(page.locator('#servers tr[data-server="desk"] .held')).to_have_text("yes")
    page.reload()
    wait_until_live(page)
    page.get_by_role("button", name="Keys and servers").click()
    page.get_by_label("Server", exact=True).select_option("desk")
    page.get_by_label("Private key (PEM or base64 PKCS#8)").fill(pem)
    page.get_by_role("button", name="Use this private key").click()
    expect(page.locator("#servers-error")).to_have_text("This private key does not belong to server desk.")

    # Deprecate: the state changes on the server, and the editor no longer offers the server.
    page.locator('#servers tr[data-server="laptop"]').get_by_role("button", name="Deprecate").click()
    expect(page.locator('#servers tr[data-server="laptop"] .state')).to_have_text("deprecated")
    (after,) = [s for s in api.get("/servers").json() if s["name"] == "laptop"]
    assert after["deprecated"] is True
    page.get_by_role("button", name="Stores").click()
    page.get_by_role("button", name="New item").click()
    assert page.locator("#editor-server option").all_inner_texts() == ["default", "desk"]


def test_an_item_can_be_written_for_a_byok_server_from_the_page(
    server: ServerProcess, person: dict[str, Any], api: Api, open_page: Any
) -> None:
    page = open_page().page
    sign_in_with_api_key(page, server.url, person["api_key"])
    page.get_by_role("button", name="Keys and servers").click()
    page.get_by_label("Name").fill("phone")
    page.get_by_role("button", name="Generate a key pair and register").click()
    expect(page.locator('#servers tr[data-server="phone"] .held')).to_have_text("yes")
    page.get_by_role("button", name="Stores").click()
    page.get_by_role("button", name="New item").click()
    page.get_by_label("Content (JSON)").fill('{"task": "call back"}')
    page.get_by_label("Encrypt for server").select_option("phone")
    page.get_by_role("button", name="Save").click()
    row = page.locator("#items .item").last
    expect(row).to_contain_text("call back")
    object_id = row.get_attribute("data-id")
    row.get_by_role("button", name="Open").click()
    expect(page.locator("#detail-meta")).to_contain_text("encrypted for server phone")
    key = api.get(f"/keys/{api.get(f'/objects/{object_id}').json()['key_id']}").json()
    assert key["server"] == "phone"
    assert key["metadata"] == {"createdBy": "telentir-console"}


# --- ingestion and credits ----------------------------------------------------------------------


def test_a_connect_job_fills_the_store_live_and_shows_its_summary(
    server: ServerProcess, person: dict[str, Any], api: Api, open_page: Any
) -> None:
    page = open_page().page
    sign_in_with_password(page, server.url, person["email"])
    page.get_by_role("button", name="Ingestion and credits").click()
    expect(page.locator("#billing")).to_contain_text("Starter")
    expect(page.locator("#topup")).to_be_hidden()  # no Stripe on this server
    page.get_by_label("Store", exact=True).select_option("tasks")
    page.get_by_label("Credits (leads to buy)").fill("6")
    page.get_by_label("More parameters (JSON object, optional)").fill('{"mode": "slow", "delay_ms": 400}')
    page.get_by_role("button", name="Start the job").click()

    expect(page.locator("#store-name")).to_have_text("Items of tasks")  # the page shows the store it fills
    # Items arrive while the job still runs: the store fills live, not at the end.
    page.wait_for_function(
        "() => document.querySelector('#job-panel').dataset.state === 'running'"
        " && document.querySelectorAll('#items .item[data-state=decrypted]').length >= 1"
    )
    expect(page.locator("#job-panel")).to_have_attribute("data-state", "succeeded", timeout=30_000)
    expect(page.locator("#job-status")).to_contain_text("6 created")
    expect(page.locator("#job-summary")).to_contain_text("6 / 6 / 6")
    expect(page.locator("#items .item[data-state=decrypted]")).to_have_count(6)
    expect(page.locator('[data-store="tasks"] .store-count')).to_have_text("6")
    assert item_json(page, ids_in_list(page)[0])["name"] == "Lead 0"  # the scraper's first record, decrypted
    page.get_by_role("button", name="Ingestion and credits").click()
    expect(page.locator("#billing")).to_contain_text("Leads used this month6")


def test_the_top_up_button_shows_when_the_server_has_stripe(tmp_path: Path, open_page: Any) -> None:
    env = {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, "STRIPE_SECRET_KEY": "sk_test_console"}
    stripe_server = ServerProcess(tmp_path / "data", env).start()
    rt = runtime_over(stripe_server.data_dir)
    try:
        user = accounts.create_user(rt, "stripe@example.com", "+15555550100", verified=True)
        key = credentials.create_api_key(rt, user["id"], "test")["key"]
        page = open_page().page
        sign_in_with_api_key(page, stripe_server.url, key)
        page.get_by_role("button", name="Ingestion and credits").click()
        expect(page.get_by_role("button", name="Top up with Stripe")).to_be_visible()
        page.context.close()  # its streams would hold the server's graceful stop
    finally:
        rt.close()
        stripe_server.stop()


# --- the README's screenshot --------------------------------------------------------------------


def test_the_readme_screenshot(server: ServerProcess, server_rt: Runtime, open_page: Any, tmp_path: Path) -> None:
    """The README's picture, taken into tmp_path (the README says how to refresh docs/console.png)."""
    accounts.create_user(server_rt, "ada@example.com", "+15555550100", password=PASSWORD, verified=True)
    page = open_page(viewport={"width": 1200, "height": 760}).page
    sign_in_with_password(page, server.url, "ada@example.com")
    people = [
        ("Ada Lovelace", "ada@example.com", "Analytical Engines", ["math", "engines"], "London"),
        ("Alan Turing", "alan@example.com", "Bletchley Park", ["enigma"], "Wilmslow"),
        ("Grace Hopper", "grace@example.com", "US Navy", ["cobol", "compilers"], "Arlington"),
        ("Edsger Dijkstra", "edsger@example.com", "Eindhoven", ["algorithms"], "Nuenen"),
        ("Barbara Liskov", "barbara@example.com", "MIT", ["abstraction"], "Cambridge"),
        ("Donald Knuth", "don@example.com", "Stanford", ["tex", "taocp"], "Stanford"),
        ("Frances Allen", "fran@example.com", "IBM", ["optimisation"], "Peru, NY"),
        ("Tony Hoare", "tony@example.com", "Oxford", ["quicksort", "csp"], "Cambridge"),
    ]
    contacts = [
        {"name": name, "email": email, "company": company, "tags": tags, "address": {"city": city}}
        for name, email, company, tags, city in people
    ]
    (tmp_path / "people.json").write_text(json.dumps(contacts))
    page.locator("#import-file").set_input_files(str(tmp_path / "people.json"))
    expect(page.locator("#import-status")).to_have_text(f"Imported {len(contacts)} items")
    page.locator("#items").get_by_role("button", name="name", exact=True).click()
    expect(page.locator("#items tbody tr")).to_have_count(len(contacts))
    target = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "console.png")
    target = target if target.is_absolute() else ROOT / target
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000
