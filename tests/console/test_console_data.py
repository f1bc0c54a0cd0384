"""The console works with the data, in a real browser against a real server: the table, search across the
whole store, import (CSV, JSON, NDJSON), export (CSV, JSON) and the item dialog (related items, publishing).

Everything is decrypted in the page: what the page stored is read back through the API and decrypted in
Python, and no value imported or typed may appear in any request the page sent.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from ..console_support import Watched, ids_in_list, open_plaintext, sign_in_with_api_key
from ..support import FIXED_MASTER_KEY, Api, ServerProcess

pytestmark = pytest.mark.timeout(240)
ROWS = 120


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server (gunicorn) for the module."""
    env = {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, "TELENTIR_SSE_RETRY_MS": "500"}
    process = ServerProcess(tmp_path_factory.mktemp("console-data") / "data", env).start()
    yield process
    process.discard()


def contact(n: int) -> dict[str, str]:
    """The n-th contact of the import files: plain text, a comma, quotes and a line break on some."""
    row = {"name": f"Person {n:03d}", "email": f"person{n:03d}@example.org", "company": f"Company {n % 7}"}
    row["note"] = 'Said "hello, again"\nthen left' if n % 10 == 0 else f"Note-{n:03d}"
    return row


def contacts_csv(rows: int = ROWS) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["name", "email", "company", "note"])
    writer.writeheader()
    writer.writerows(contact(n) for n in range(rows))
    return out.getvalue()


def items_table(page: Page, store: str = "contacts") -> Locator:
    return page.get_by_role("table", name=f"Items of {store}")


def import_file(page: Page, path: Path) -> None:
    """Import… a file through the page's file input."""
    page.locator("#import-file").set_input_files(str(path))


def store_values(api: Api, store: str = "contacts") -> list[Any]:
    """Every item of a store, read through the API and decrypted in Python."""
    root = api.get("/root").json()
    children = api.get(f"/objects/{root['stores'][store]['id']}/related").json()
    return [open_plaintext(api, root, child["id"]) for child in children]


def assert_nothing_plain_sent(watched: Watched, values: list[str]) -> None:
    sent = watched.sent_text()
    assert [value for value in values if value in sent] == []


# --- the outside check's flow: import a CSV, the table, search, export ------------------------------------


def test_a_csv_is_imported_searched_and_exported_all_decrypted_in_the_page(
    server: ServerProcess, person: dict[str, Any], api: Api, open_page: Any, tmp_path: Path
) -> None:
    watched = open_page()
    page = watched.page
    sign_in_with_api_key(page, server.url, person["api_key"])
    source = tmp_path / "leads.csv"
    source.write_text(contacts_csv())

    expect(page.get_by_role("button", name="Import…")).to_be_visible()
    import_file(page, source)
    expect(page.locator("#import-status")).to_have_text(f"Imported {ROWS} items", timeout=60_000)
    expect(page.get_by_text(f"Imported {ROWS} items")).to_be_visible()
    progress = page.get_by_role("progressbar", name="Import progress")
    assert progress.evaluate("bar => [bar.value, bar.max]") == [ROWS, ROWS]

    table = items_table(page)
    for header in ("name", "email", "company", "note", "Updated"):
        expect(table.get_by_role("columnheader", name=header, exact=True)).to_be_visible()
    expect(page.locator("#page-info")).to_have_text(f"Items 1–100 of {ROWS}")
    expect(page.locator('[data-store="contacts"] .store-count')).to_have_text(str(ROWS))
    # The store's button is named by the store alone; its count describes it (not "contacts120").
    store_button = page.locator("#stores-view").get_by_role("button", name="contacts", exact=True)
    expect(store_button).to_have_accessible_description(str(ROWS))
    # The panel's heading says what it lists; the store's bare name is its button's alone.
    expect(page.get_by_role("heading", name="Items of contacts")).to_be_visible()
    page.locator("#stores-view").get_by_text("contacts", exact=True).click()
    expect(store_button).to_have_attribute("aria-current", "true")

    page.get_by_role("searchbox", name="Search this store").fill("PERSON042@")  # any case
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("person042@example.org")
    expect(page.locator("#search-status")).to_have_text(f"1 of {ROWS} items")
    page.get_by_role("searchbox", name="Search this store").fill("company 3")  # n % 7 == 3: 17 of them
    expect(rows).to_have_count(len([n for n in range(ROWS) if n % 7 == 3]))
    page.get_by_role("searchbox", name="Search this store").fill("")
    expect(rows).to_have_count(100)

    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    assert download.value.suggested_filename == "contacts.csv"
    exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    assert sorted(exported, key=lambda row: row["email"]) == [contact(n) for n in range(ROWS)]

    # Stored encrypted, each under its own key and IV; nothing imported went out in clear.
    assert sorted(store_values(api), key=lambda value: value["email"]) == [contact(n) for n in range(ROWS)]
    root = api.get("/root").json()
    children = api.get(f"/objects/{root['stores']['contacts']['id']}/related").json()
    keys = [api.get(f"/keys/{child['key_id']}").json() for child in children]
    assert len({key["id"] for key in keys}) == ROWS and len({key["iv"] for key in keys}) == ROWS
    assert_nothing_plain_sent(watched, [contact(n)[field] for n in range(ROWS) for field in ("name", "email", "note")])


# --- JSON and NDJSON, nested values, Export JSON ---------------------------------------------------------


def test_json_and_ndjson_files_import_and_export_json_gives_them_back(
    server: ServerProcess, person: dict[str, Any], api: Api, open_page: Any, tmp_path: Path
) -> None:
    page = open_page().page
    sign_in_with_api_key(page, server.url, person["api_key"])
    array = [
        {"name": "Ada", "tags": ["math", "engines"], "address": {"city": "London", "zip": "W1"}, "calls": 3},
        {"name": "Alan", "tags": ["enigma"], "address": {"city": "Bletchley"}, "calls": 12},
    ]
    lines = [{"name": "Grace", "tags": [], "calls": 7}, {"name": "Edsger", "address": None, "calls": 1}]
    (tmp_path / "people.json").write_text(json.dumps(array))
    (tmp_path / "more.ndjson").write_text("\n".join(json.dumps(value) for value in lines) + "\n\n")
    import_file(page, tmp_path / "people.json")
    expect(page.locator("#import-status")).to_have_text("Imported 2 items")
    import_file(page, tmp_path / "more.ndjson")
    expect(page.locator("#import-status")).to_have_text("Imported 2 items")
    expect(page.locator("#items tbody tr")).to_have_count(4)

    ada = page.locator("#items tbody tr", has_text="Ada")
    expect(ada).to_contain_text("math, engines")  # an array of scalars, compact
    expect(ada).to_contain_text('{"city":"London","zip":"W1"}')  # an object, as short JSON

    # Sorted by a number column: numerically, and the header says so.
    table = items_table(page)
    table.get_by_role("button", name="calls", exact=True).click()
    expect(table.get_by_role("columnheader", name="calls")).to_have_attribute("aria-sort", "ascending")
    expect(table.get_by_role("button", name="calls", exact=True)).to_be_focused()
    assert table.locator("tbody tr td:nth-child(2)").all_inner_texts() == ["Edsger", "Ada", "Grace", "Alan"]
    table.get_by_role("button", name="calls", exact=True).click()
    expect(table.get_by_role("columnheader", name="calls")).to_have_attribute("aria-sort", "descending")
    assert table.locator("tbody tr td:nth-child(2)").all_inner_texts() == ["Alan", "Grace", "Ada", "Edsger"]
    table.get_by_role("button", name="name", exact=True).click()
    assert table.locator("tbody tr td:nth-child(2)").all_inner_texts() == ["Ada", "Alan", "Edsger", "Grace"]
    expect(table.get_by_role("columnheader", name="calls")).not_to_have_attribute("aria-sort", "descending")

    with page.expect_download() as download:
        page.get_by_role("button", name="Export JSON").click()
    assert download.value.suggested_filename == "contacts.json"
    by_name = lambda value: value["name"]  # noqa: E731 (an import writes a few rows at a time: any order)
    assert sorted(json.loads(Path(download.value.path()).read_text()), key=by_name) == sorted(
        array + lines, key=by_name
    )
    expect(page.locator("#export-status")).to_have_text("Exported 4 items to contacts.json.")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    assert rows[0] == ["name", "tags", "address", "calls"]  # the union of the fields, in the order first seen
    assert ["Ada", '["math","engines"]', '{"city":"London","zip":"W1"}', "3"] in rows
    assert ["Edsger", "", "null", "1"] in rows and ["Grace", "[]", "", "7"] in rows and len(rows) == 5
    assert sorted(store_values(api), key=by_name) == sorted(array + lines, key=by_name)


# --- bad files and Cancel -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("ragged.csv", "name,email\nA,a@x\nB,b@x,extra\n", "Row 3 has 3 values but the header names 2 columns."),
        ("open-quote.csv", 'name\n"never closed\n', "a quoted value is never closed."),
        ("header-only.csv", "name,email\n", "The file has a header row but no rows to import."),
        ("numbers.json", "[1, 2]", "Item 1 is not a JSON object."),
        ("broken.json", '[{"name": "A"},', "This is not JSON"),
        ("mixed.ndjson", '{"name": "A"}\nnot json\n', "Line 2 is not JSON"),
        ("empty.csv", "", "The file is empty."),
    ],
)
def test_a_bad_file_gets_a_clear_message_and_creates_nothing(
    server: ServerProcess,
    person: dict[str, Any],
    api: Api,
    open_page: Any,
    tmp_path: Path,
    name: str,
    text: str,
    message: str,
) -> None:
    watched = open_page()
    page = watched.page
    sign_in_with_api_key(page, server.url, person["api_key"])
    (tmp_path / name).write_text(text)
    import_file(page, tmp_path / name)
    error = page.locator("#import-error")
    expect(error).to_contain_text(f"{name} cannot be imported: ")
    expect(error).to_contain_text(message)
    expect(error).to_contain_text("Nothing was created.")
    expect(page.get_by_role("button", name="Import…")).to_be_focused()
    assert store_values(api) == []
    assert not [r for r in watched.requests if r.method in ("POST", "PUT") and "/api/" in r.url]


def test_cancel_stops_an_import_and_says_how_far_it_got(
    server: ServerProcess, person: dict[str, Any], api: Api, open_page: Any, tmp_path: Path
) -> None:
    page = open_page().page
    sign_in_with_api_key(page, server.url, person["api_key"])
    total = 400
    (tmp_path / "many.csv").write_text(contacts_csv(total))
    with page.expect_file_chooser() as chooser:  # the button opens the file picker
        page.get_by_role("button", name="Import…").click()
    chooser.value.set_files(str(tmp_path / "many.csv"))
    page.wait_for_function("() => document.querySelector('#import-progress').value >= 10")
    page.get_by_role("button", name="Cancel").click()
    status = page.locator("#import-status")
    expect(status).to_contain_text("Import cancelled: imported ")
    created = int(status.inner_text().split("imported ")[1].split(" of")[0])
    assert 10 <= created < total and status.inner_text().endswith(f"of {total} items")
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    # Requests already on the wire when Cancel was pressed may still land (at most one per lane); then nothing.
    stored = len(store_values(api))
    assert created <= stored <= created + 4
    expect(page.locator('[data-store="contacts"] .store-count')).to_have_text(str(stored))
    page.wait_for_timeout(1000)
    assert len(store_values(api)) == stored


def test_an_import_retries_a_busy_server_and_reports_what_failed(
    server: ServerProcess, person: dict[str, Any], api: Api, open_page: Any, tmp_path: Path
) -> None:
    page = open_page().page
    posts: list[str] = []

    def answer(route: Any) -> None:  # the 2nd create is answered 429 once (tried again), the 4th refused
        if route.request.method == "POST":
            posts.append(route.request.url)
            if len(posts) == 2:
                return route.fulfill(status=429, json={"error": "rate_limited", "message": "Slow down."})
            if len(posts) == 4:
                return route.fulfill(status=400, json={"error": "bad_request", "message": "Refused for the test."})
        return route.continue_()

    page.route("**/api/objects", answer)
    sign_in_with_api_key(page, server.url, person["api_key"])
    (tmp_path / "six.json").write_text(json.dumps([{"name": f"Six {n}"} for n in range(6)]))
    import_file(page, tmp_path / "six.json")
    summary = r"^Imported 5 items; 1 failed \(first error: item \d: Refused for the test\.\)$"
    expect(page.locator("#import-status")).to_have_text(re.compile(summary))
    assert len(posts) == 7  # six creates and the one tried again
    assert len(store_values(api)) == 5  # which one failed depends on which of four writes ran first
    expect(page.locator("#items tbody tr")).to_have_count(5)


def test_an_import_or_export_started_before_the_store_opens_waits_for_it(
    server: ServerProcess, person: dict[str, Any], api: Api, open_page: Any, tmp_path: Path
) -> None:
    page = open_page().page
    held: list[Any] = []

    def hold(route: Any) -> None:  # the event streams hang: the page opens its first store only after a while
        held.append(route)

    page.route("**/api/events/**", hold)
    (tmp_path / "early.csv").write_text("name,email\nEarly Bird,early@example.net\n")
    page.goto(server.url + "/console")
    page.get_by_text("Sign in with an API key").click()
    page.get_by_label("API key").fill(person["api_key"])
    page.get_by_role("button", name="Use this API key").click()
    expect(page.locator("#stores-view")).to_be_visible()
    assert page.locator("#store-name").inner_text() == ""  # no store open yet
    import_file(page, tmp_path / "early.csv")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export JSON").click()
        expect(page.locator("#import-status")).to_have_text("Imported 1 item")
    assert download.value.suggested_filename == "contacts.json"
    assert store_values(api) == [{"name": "Early Bird", "email": "early@example.net"}]
    expect(items_table(page).locator("tbody tr")).to_have_count(1)
    for route in held:
        route.continue_()


# --- the item dialog: JSON, edit, related items, publish, delete -----------------------------------------------


def test_the_item_dialog_edits_relates_publishes_and_deletes(
    server: ServerProcess, person: dict[str, Any], api: Api, open_page: Any, tmp_path: Path
) -> None:
    watched = open_page()
    page = watched.page
    sign_in_with_api_key(page, server.url, person["api_key"])
    (tmp_path / "one.json").write_text(json.dumps([{"name": "Lin Q", "email": "lin@example.net"}]))
    import_file(page, tmp_path / "one.json")
    expect(page.locator("#import-status")).to_have_text("Imported 1 item")
    expect(page.locator("#items tbody tr")).to_have_count(1)
    (item_id,) = ids_in_list(page)

    page.locator("#items tbody tr").get_by_role("button", name="Open").click()
    expect(page.get_by_role("dialog", name=f"Item {item_id}")).to_be_visible()
    dialog = page.locator("#detail")  # its name follows the item it shows
    assert json.loads(dialog.locator("#detail-json").inner_text()) == {"name": "Lin Q", "email": "lin@example.net"}
    expect(dialog.locator("#related-status")).to_have_text("No related items.")

    # A related item, made from the dialog, then opened from its list.
    dialog.get_by_role("button", name="New related item").click()
    page.get_by_label("Content (JSON)").fill('{"call": "Follow-up ZQ-19", "minutes": 4}')
    page.get_by_role("button", name="Save").click()
    related = dialog.locator("#related-list li")
    expect(related).to_have_count(1)
    expect(related).to_contain_text("call: Follow-up ZQ-19")
    child_id = related.get_attribute("data-id")
    related.get_by_role("button", name="Open").click()
    expect(page.get_by_role("dialog", name=f"Item {child_id}")).to_be_visible()
    expect(dialog.locator("#detail-json")).to_contain_text("Follow-up ZQ-19")
    assert [c["id"] for c in api.get(f"/objects/{item_id}/related").json()] == [child_id]
    root = api.get("/root").json()
    assert open_plaintext(api, root, child_id) == {"call": "Follow-up ZQ-19", "minutes": 4}
    dialog.get_by_role("button", name=f"Back to {item_id}").click()
    expect(page.locator("#detail-title")).to_have_text(f"Item {item_id}")

    # Edit: a new key and IV; the table shows the new value.
    dialog.get_by_role("button", name="Edit").click()
    page.get_by_label("Content (JSON)").fill('{"name": "Lin Q", "email": "lin.q@example.net"}')
    page.get_by_role("button", name="Save").click()
    expect(dialog.locator("#detail-json")).to_contain_text("lin.q@example.net")
    expect(page.locator(f'#items .item[data-id="{item_id}"]')).to_contain_text("lin.q@example.net")
    assert open_plaintext(api, root, item_id) == {"name": "Lin Q", "email": "lin.q@example.net"}

    # Publish under a type: a copy encrypted for the platform's server is what the publication points at.
    dialog.get_by_label("Publish as type").fill("campaigns")
    dialog.get_by_role("button", name="Publish").click()
    expect(dialog.locator("#publication-list")).to_contain_text("Published as campaigns")
    (publication,) = api.get("/objects/publish/campaigns").json()
    assert publication["related_id"] == item_id and publication["object_id"] != item_id
    copy = api.get(f"/objects/{publication['object_id']}").json()
    platform = api.get("/server").json()["current"]
    assert api.get(f"/keys/{copy['key_id']}").json()["server"] == platform
    expect(related).to_have_count(1)  # the copy is listed as the publication, not as a related item
    dialog.get_by_role("button", name="Unpublish").click()
    expect(dialog.locator("#publication-list")).to_contain_text("Not published.")
    assert api.get("/objects/publish/campaigns").json() == []
    assert api.get(f"/objects/{copy['id']}").status_code == 404
    assert api.get(f"/keys/{copy['key_id']}").status_code == 404

    dialog.get_by_role("button", name="Delete").click()
    dialog.get_by_role("button", name="Delete for good").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#items tbody tr")).to_have_count(0)
    assert api.get(f"/objects/{item_id}").status_code == 404
    assert_nothing_plain_sent(watched, ["Lin Q", "lin@example.net", "lin.q@example.net", "Follow-up ZQ-19"])


def test_at_phone_width_the_table_scrolls_in_its_box_and_the_page_does_not(
    server: ServerProcess, person: dict[str, Any], open_page: Any, tmp_path: Path
) -> None:
    page = open_page(viewport={"width": 375, "height": 740}, is_mobile=True).page
    sign_in_with_api_key(page, server.url, person["api_key"])
    wide = {f"field{n}": f"a fairly long value number {n}" for n in range(8)}
    (tmp_path / "wide.json").write_text(json.dumps([wide, wide]))
    import_file(page, tmp_path / "wide.json")
    expect(page.locator("#items tbody tr")).to_have_count(2)
    assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
    box = page.locator("#items").locator("xpath=..")
    assert box.evaluate("box => box.scrollWidth > box.clientWidth")  # the table scrolls sideways, on its own
    page.get_by_role("searchbox", name="Search this store").fill("number 7")
    expect(page.locator("#search-status")).to_have_text("2 of 2 items")


def test_without_its_workers_the_page_decrypts_the_store_itself(
    server: ServerProcess, person: dict[str, Any], open_page: Any, tmp_path: Path
) -> None:
    first = open_page().page
    sign_in_with_api_key(first, server.url, person["api_key"])
    (tmp_path / "few.json").write_text(json.dumps([{"name": f"Worker-less {n}"} for n in range(3)]))
    import_file(first, tmp_path / "few.json")
    expect(first.locator("#import-status")).to_have_text("Imported 3 items")

    page = open_page().page
    refused: list[str] = []

    def refuse(route: Any) -> None:  # the worker script cannot load
        refused.append(route.request.url)
        route.abort()

    page.route("**/console/decrypt-worker.js", refuse)
    sign_in_with_api_key(page, server.url, person["api_key"])
    expect(page.locator("#items tbody tr[data-state=decrypted]")).to_have_count(3)
    assert refused  # the workers were asked for, and failed
    expect(page.locator("#search-status")).to_have_text("3 items")
    page.get_by_role("searchbox", name="Search this store").fill("less 2")
    expect(page.locator("#items tbody tr")).to_have_count(1)
