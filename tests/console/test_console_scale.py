"""The console over a store of 10,000 items: the first page at once, the whole store decrypted in the
background for search, each keystroke's filter quick, one page in the DOM; importing 1,000 rows and
exporting 10,000.

The items are written through the services layer into the server's data folder before it
starts (each under its own key, wrapped for the user's custodial server, as ingestion
writes them), so the browser decrypts 10,000 distinct envelopes: 10,000 RSA-OAEP unwraps.

The figures are printed (`pytest -s`); docs and the README quote a run. The bounds asserted are
looser than the targets (first page 1 s, decrypt 10 s, keystroke 300 ms, import 60 s, export 10 s):
the box these tests run on is shared and often loaded, and a bound that fails on load proves nothing.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from telentir import crypto
from telentir.config import load_config
from telentir.services import accounts, credentials, keyring, objects, roots
from telentir.wiring import build_runtime

from ..console_support import item_json, sign_in_with_api_key, watch
from ..support import FIXED_MASTER_KEY, Api, ServerProcess

pytestmark = pytest.mark.timeout(420)
ITEMS = 10_000
PAGE = 100
IMPORTED = 1_000
# Targets of the issue, and the (looser) bounds asserted on a shared 2-core box.
FIRST_PAGE_S = 4.0  # target 1 s
DECRYPT_S = 40.0  # target 10 s
KEYSTROKE_MS = 1000  # target 300 ms
IMPORT_S = 150.0  # target 60 s
EXPORT_S = 30.0  # target 10 s
PAGE_TURN_MS = 1000  # pages of a decrypted store are turned in memory
# The whole document while a page of 100 items shows: a page that rendered the store would hold 100 times more.
MAX_ELEMENTS = 3000

# Milliseconds from a click on `selector` until the table's page is ready (shown and decrypted).
NAVIGATE = """async (selector) => {
  const table = document.querySelector('#items');
  const start = performance.now();
  document.querySelector(selector).click();
  await new Promise((resolve) => {
    const check = () => (table.dataset.state === 'ready' ? resolve() : setTimeout(check, 5));
    check();
  });
  return performance.now() - start;
}"""

# From a click on a store: [milliseconds until its first page is ready (shown and decrypted), milliseconds
# until the whole store is decrypted (the progress gone, the count final)].
OPEN_STORE = """async ([store, total]) => {
  const table = document.querySelector('#items');
  const start = performance.now();
  document.querySelector(`#store-list [data-store="${store}"]`).click();
  const until = (done) => new Promise((resolve) => {
    const check = () => (done() ? resolve(performance.now() - start) : setTimeout(check, 5));
    setTimeout(check, 0);
  });
  const firstPage = await until(() => table.dataset.state === 'ready');
  const whole = await until(() => document.querySelector('#decrypt-panel').hidden
    && document.querySelector('#search-status').textContent === total);
  return [firstPage, whole];
}"""

# Typing `text` one key at a time: for each keystroke, [the filter and the table's new page, as the input
# event runs them (the page measures it), the time until the next frame is painted].
TYPE = """async (text) => {
  const box = document.querySelector('#store-search');
  const times = [];
  for (let i = 1; i <= text.length; i += 1) {
    const start = performance.now();
    box.value = text.slice(0, i);
    box.dispatchEvent(new Event('input', { bubbles: true }));
    const filter = Number(document.querySelector('#items').dataset.filterMs);
    await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
    times.push([filter, performance.now() - start]);
  }
  return times;
}"""


def contact(n: int) -> dict[str, object]:
    return {"n": n, "name": f"Contact {n}", "email": f"contact{n}@example.org", "company": f"Company {n % 97}"}


def seed(data_dir: Path) -> tuple[str, str, list[str]]:
    """A user with ITEMS contacts, each under a fresh key; (user id, API key, object ids in order)."""
    rt = build_runtime(load_config({"data_dir": data_dir, "master_key": FIXED_MASTER_KEY}, environ={}))
    try:
        user = accounts.create_user(rt, "many@example.com", "+15555550100", verified=True)
        api_key = str(credentials.create_api_key(rt, user["id"], "test")["key"])
        root = roots.root_document(rt, user["id"])
        store = root["stores"]["contacts"]["id"]
        public_key = crypto.load_public_key(root["servers"]["default"]["publicKey"])
        ids: list[str] = []
        for start in range(0, ITEMS, 1000):
            with rt.db.atomic() as tx:
                for n in range(start, start + 1000):
                    aes, iv = crypto.new_aes_key(), crypto.new_iv()
                    content, tag = crypto.aes_gcm_encrypt(aes, iv, json.dumps(contact(n)).encode())
                    key_id = keyring.insert_key(rt, tx, user["id"], "default", crypto.wrap_key(public_key, aes), iv)
                    ids.append(objects.insert_object(rt, tx, user["id"], key_id, None, content, tag, store, "{}"))
        return user["id"], api_key, ids
    finally:
        rt.close()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str, list[str]]]:
    """A server over a data folder holding one user's 10,000 contacts."""
    data_dir = tmp_path_factory.mktemp("scale") / "data"
    _, api_key, ids = seed(data_dir)
    server = ServerProcess(data_dir, {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY}).start()
    yield server, api_key, ids
    server.discard()


def elements(page: Page) -> int:
    return int(page.evaluate("() => document.getElementsByTagName('*').length"))


def test_ten_thousand_items_show_at_once_decrypt_for_search_and_export(
    seeded: tuple[ServerProcess, str, list[str]], browser: Browser, tmp_path: Path
) -> None:
    server, api_key, ids = seeded
    context = browser.new_context(accept_downloads=True)
    watched = watch(context)
    page = watched.page
    sign_in_with_api_key(page, server.url, api_key)
    expect(page.locator('[data-store="contacts"] .store-count')).to_have_text("10,000")

    # From a click on the store (read afresh): its first page, then the whole store decrypted for search.
    page.locator('[data-store="calls"]').click()
    expect(page.locator("#items")).to_have_attribute("aria-label", "Items of calls")
    first_page_ms, decrypt_ms = page.evaluate(OPEN_STORE, ["contacts", "10,000 items"])
    expect(page.locator("#page-info")).to_have_text("Items 1–100 of 10,000")
    assert page.locator("#items .item[data-state=decrypted]").count() == PAGE
    assert elements(page) < MAX_ELEMENTS
    assert item_json(page, ids[0]) == contact(0)

    # Pages turn in memory; the DOM holds one page.
    turns = []
    for number in range(1, 4):
        turns.append(page.evaluate(NAVIGATE, "#next-page"))
        expect(page.locator("#page-info")).to_have_text(
            f"Items {number * PAGE + 1:,}–{(number + 1) * PAGE:,} of 10,000"
        )
        assert page.locator("#items .item[data-state=decrypted]").count() == PAGE
        assert elements(page) < MAX_ELEMENTS
    assert item_json(page, ids[3 * PAGE]) == contact(3 * PAGE)

    # Search the whole store, a keystroke at a time.
    keystrokes = page.evaluate(TYPE, "contact4242@")
    expect(page.locator("#items tbody tr")).to_have_count(1)
    expect(page.locator("#items tbody tr")).to_contain_text("contact4242@example.org")
    expect(page.locator("#search-status")).to_have_text("1 of 10,000 items")
    keystrokes += page.evaluate(TYPE, "Company 13")  # 103 of them, from a fresh query
    expect(page.locator("#search-status")).to_have_text(
        f"{len([n for n in range(ITEMS) if n % 97 == 13]):,} of 10,000 items"
    )
    page.get_by_role("searchbox", name="Search this store").fill("")

    # Export every item, decrypted in the page.
    started = time.monotonic()
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Export CSV").click()
    export_s = time.monotonic() - started
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) == ITEMS and rows[4242] == {key: str(value) for key, value in contact(4242).items()}

    # Import 1,000 rows into another store.
    source = tmp_path / "thousand.csv"
    source.write_text("name,email\n" + "".join(f"Lead {n},lead{n}@example.net\n" for n in range(IMPORTED)))
    page.locator('[data-store="tasks"]').click()
    expect(page.locator("#items")).to_have_attribute("aria-label", "Items of tasks")
    started = time.monotonic()
    page.locator("#import-file").set_input_files(str(source))
    expect(page.locator("#import-status")).to_have_text(f"Imported {IMPORTED:,} items", timeout=int(IMPORT_S * 1000))
    import_s = time.monotonic() - started

    filters = sorted(filter_ms for filter_ms, _ in keystrokes)
    frames = sorted(frame_ms for _, frame_ms in keystrokes)
    print(
        f"\nconsole over 10,000 items: first page {first_page_ms:.0f} ms;"
        f" whole store decrypted {decrypt_ms / 1000:.1f} s;"
        f" keystroke filter max {filters[-1]:.0f} ms (median {filters[len(filters) // 2]:.0f}),"
        f" to the next frame max {frames[-1]:.0f} ms (median {frames[len(frames) // 2]:.0f});"
        f" page turns {[round(t) for t in turns]} ms; export CSV {export_s:.1f} s;"
        f" import of {IMPORTED:,} rows {import_s:.1f} s"
    )
    assert first_page_ms < FIRST_PAGE_S * 1000
    assert decrypt_ms < DECRYPT_S * 1000
    assert frames[-1] < KEYSTROKE_MS, keystrokes
    assert max(turns) < PAGE_TURN_MS, turns
    assert export_s < EXPORT_S
    assert import_s < IMPORT_S

    # A live arrival on a full store counts, and stays off the page until its page is opened.
    page.locator('[data-store="contacts"]').click()
    expect(page.locator("#items")).to_have_attribute("data-state", "ready")
    api = Api(server.url, api_key)
    store = api.get("/root").json()["stores"]["contacts"]["id"]
    key = api.post("/keys", json={"server": "default"}).json()
    api.post("/objects", json={"keyId": key["id"], "content": "00", "authTag": "11" * 16, "relatedId": store})
    api.close()
    expect(page.locator('[data-store="contacts"] .store-count')).to_have_text("10,001")
    assert page.locator("#items .item").count() == PAGE
    context.close()
    assert watched.problems == []
