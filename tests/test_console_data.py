"""The console works with the data, in a real browser against a real server: the table, search across the
whole store, import (CSV, JSON, NDJSON), export (CSV, JSON) and the item dialog (related items, publishing).

Everything is decrypted in the page: what the page stored is read back through the API and decrypted in
Python, and no value imported or typed may appear in any request the page sent.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from telentir.runtime import Runtime
from telentir.services import accounts, credentials

from .console_support import PASSWORD, Watched, ids_in_list, open_plaintext, sign_in_with_api_key
from .support import FIXED_MASTER_KEY, Api, ServerProcess

pytestmark = pytest.mark.timeout(240)
ROWS = 120


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server (gunicorn) for the module."""
    env = {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, "TELENTIR_SSE_RETRY_MS": "500"}
    process = ServerProcess(tmp_path_factory.mktemp("console-data") / "data", env).start()
    yield process
    process.stop()


@pytest.fixture
def person(server_rt: Runtime, request: pytest.FixtureRequest) -> dict[str, Any]:
    """A verified user with a password and an API key (`api_key`)."""
    email = f"{request.node.name[:40]}-{os.getpid()}@example.com"
    user = accounts.create_user(server_rt, email, "+15555550100", password=PASSWORD, verified=True)
    user["api_key"] = credentials.create_api_key(server_rt, user["id"], "test")["key"]
    return user


@pytest.fixture
def api(server: ServerProcess, person: dict[str, Any]) -> Iterator[Api]:
    """The person's API client (as another program would use it)."""
    client = Api(server.url, person["api_key"])
    yield client
    client.close()


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
    expect(page.get_by_text(f"Imported {ROWS} items")).to_be_visible(timeout=60_000)
    progress = page.get_by_role("progressbar", name="Import progress")
    assert progress.evaluate("bar => [bar.value, bar.max]") == [ROWS, ROWS]

    table = items_table(page)
    for header in ("name", "email", "company", "note", "Updated"):
        expect(table.get_by_role("columnheader", name=header, exact=True)).to_be_visible()
    expect(page.locator("#page-info")).to_have_text(f"Items 1–100 of {ROWS}")
    expect(page.locator('[data-store="contacts"] .store-count')).to_have_text(str(ROWS))

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
