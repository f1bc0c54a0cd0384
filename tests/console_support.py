"""Helpers for the console's browser tests: Debian's Chromium driven by Playwright, and what the tests check with it.

Playwright never downloads a browser here: it drives /usr/bin/chromium (`.ci/run` installs
it with apt-get when missing). The flags keep a headless Chromium off the network, which
is closed on these machines (without them it floods refused connections).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Request, expect

from .dataplane_support import decrypt, load_private, unwrap
from .support import Api

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery"
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)


def launch(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless."""
    assert CHROMIUM.exists(), "the browser tests need Debian's chromium: apt-get install -y chromium"
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


@dataclass
class Watched:
    """A page with everything it sent, and every CSP complaint and script error it raised."""

    page: Page
    requests: list[Request] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def sent_text(self) -> str:
        """URL, headers and body of every request the page sent, as one string to search."""
        parts = []
        for request in self.requests:
            parts.append(request.url)
            parts.append(json.dumps(request.headers))
            body = request.post_data_buffer
            if body:
                parts.append(body.decode("utf-8", errors="replace"))
        return "\n".join(parts)


def watch(context: BrowserContext) -> Watched:
    """A new page of `context` whose requests, CSP violations and uncaught errors are recorded."""
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    watched = Watched(page)

    # A function of ours: Playwright cannot take a built-in method such as list.append as a handler.
    def on_request(request: Request) -> None:
        watched.requests.append(request)

    page.on("request", on_request)
    page.on("pageerror", lambda error: watched.problems.append(f"uncaught: {error}"))

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            watched.problems.append(f"CSP: {message.text}")

    page.on("console", on_console)
    return watched


@contextmanager
def new_context(browser: Browser, **options: Any) -> Iterator[BrowserContext]:
    """A fresh browser profile (its own cookies and connections), closed at the end."""
    context = browser.new_context(**options)
    try:
        yield context
    finally:
        context.close()


def sign_in_with_password(page: Page, base_url: str, email: str, password: str = PASSWORD) -> None:
    """Open the console and sign in with email and password; returns when the stores are live."""
    page.goto(base_url + "/console")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    wait_until_live(page)


def sign_in_with_api_key(page: Page, base_url: str, key: str) -> None:
    """Open the console and sign in with an API key; returns when the stores are live."""
    page.goto(base_url + "/console")
    page.get_by_text("Sign in with an API key").click()
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Use this API key").click()
    wait_until_live(page)


def wait_until_live(page: Page) -> None:
    """The event streams are open and the open store's page is read and decrypted."""
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    expect(page.locator("#items")).to_have_attribute("data-state", "ready")


def item(page: Page, object_id: str) -> Any:
    """The table row of one object."""
    return page.locator(f'#items .item[data-id="{object_id}"]')


def item_json(page: Page, object_id: str) -> Any:
    """The decrypted JSON an item holds, as its dialog shows it (the dialog is closed again)."""
    row = item(page, object_id)
    expect(row).to_have_attribute("data-state", "decrypted")
    row.get_by_role("button", name="Open").click()
    dialog = page.get_by_role("dialog", name=f"Item {object_id}")
    expect(dialog).to_be_visible()
    value = json.loads(dialog.locator("#detail-json").inner_text())
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    return value


def ids_in_list(page: Page) -> list[str]:
    """The object ids of the table's open page, in order."""
    return page.locator("#items .item").evaluate_all("items => items.map(i => i.dataset.id)")


def open_plaintext(api: Api, root: dict[str, Any], object_id: str) -> Any:
    """Read an object back through the API and decrypt it in Python with the custodial key: what the page stored."""
    record = api.get(f"/objects/{object_id}").json()
    key = api.get(f"/keys/{record['key_id']}").json()
    aes = unwrap(load_private(root["servers"]["default"]["privateKey"]), bytes.fromhex(key["key"]))
    plain = decrypt(aes, bytes.fromhex(key["iv"]), bytes.fromhex(record["content"]), bytes.fromhex(record["auth_tag"]))
    return json.loads(plain)


def phone_code(log: str, phone: str) -> str | None:
    """The last code the `log` SMS sender wrote for `phone`, if any."""
    codes = re.findall(rf"SMS to {re.escape(phone)}: .*?(\d{{6}})", log)
    return codes[-1] if codes else None
