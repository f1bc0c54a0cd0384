// The console's entry point: sign-in, the session (API client, keys, live streams), the tabs.

import { AccountView } from "./account.js";
import { Api, CSRF_HEADER } from "./api.js";
import { $, say, show } from "./dom.js";
import { IngestView } from "./ingest.js";
import { KeysView } from "./keys.js";
import { LiveFeed } from "./live.js";
import { SignIn } from "./signin.js";
import { StoresView } from "./stores.js";
import { Vault } from "./vault.js";

const EVENT_TYPES = ["object_created", "object_updated", "object_deleted", "publish"];
const NOTICE_SLOT = "telentir.notice"; // a message for the next page (the account is deleted)
const STATUS_TEXT = { live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…", stopped: "Offline" };

class Console {
  constructor(config) {
    this.config = config;
    this.api = null;
    this.vault = null;
    this.feed = null;
    this.user = null;
    this.views = {};
    this.current = null;
    this.signIn = new SignIn(this);
    for (const button of document.querySelectorAll("#tabs button")) {
      button.addEventListener("click", () => this.open(button.dataset.view, true));
    }
    $("#signout").addEventListener("click", () => this.signOut());
  }

  async boot() {
    const api = Api.fromSession();
    try {
      const auth = await api.get("/auth");
      if (auth.status === "ok") return await this.enter(api, auth.auth);
      this.signIn.show(api, "phone");
    } catch {
      Api.forget(); // a stored API key that no longer works
      this.signIn.show(new Api(), "login");
    } finally {
      show($("#loading"), false);
      this.notify(sessionStorage.getItem(NOTICE_SLOT));
      sessionStorage.removeItem(NOTICE_SLOT);
    }
  }

  // Signed in with a verified phone: load the root, hold the keys, open the streams.
  async enter(api, user) {
    this.api = api;
    this.user = user;
    api.onUnauthorized = () => this.ended();
    const root = await api.get("/root");
    this.vault = await new Vault(api, root).init();
    this.views = {
      stores: new StoresView(this),
      keys: new KeysView(this),
      ingest: new IngestView(this),
      account: new AccountView(this),
    };
    this.feed = new LiveFeed(api, EVENT_TYPES, {
      onEvent: (event) => this.dispatch(event),
      onState: (state) => this.showState(state),
    }).start();
    this.signIn.hide();
    $("#who").textContent = api.mode === "apiKey" ? `${user.email} (API key)` : user.email;
    for (const id of ["#who", "#signout", "#tabs", "#live-status"]) show($(id));
    this.showState(this.feed.state);
    await this.open("stores", false);
  }

  dispatch(event) {
    for (const view of Object.values(this.views)) view.onEvent(event);
  }

  showState(state) {
    const status = $("#live-status");
    status.textContent = STATUS_TEXT[state];
    status.dataset.state = state;
  }

  async open(name, focus) {
    this.current = name;
    for (const button of document.querySelectorAll("#tabs button")) {
      if (button.dataset.view === name) button.setAttribute("aria-current", "page");
      else button.removeAttribute("aria-current");
    }
    for (const [other, view] of Object.entries(this.views)) {
      show(view.section, other === name);
      if (other !== name) view.hide?.();
    }
    await this.views[name].show();
    if (focus) this.views[name].section.querySelector("h2").focus();
  }

  notify(text) {
    say($("#notice"), text);
  }

  // The credential stopped working (expired, revoked, logged out elsewhere).
  ended() {
    if (!this.feed) return;
    this.feed.stop();
    this.feed = null;
    Api.forget();
    this.notify("Your session has ended. Reload the page to sign in again.");
  }

  // DELETE /account answered: every credential is gone. A fresh page (no keys in memory) says so.
  accountDeleted() {
    if (this.feed) this.feed.stop();
    Api.forget();
    sessionStorage.setItem(NOTICE_SLOT, "Your account is deleted.");
    location.replace("/console");
  }

  async signOut() {
    if (this.feed) this.feed.stop();
    if (this.api.mode === "session") {
      try {
        // The header proves a page of ours asks: a cookie-only logout is refused (a cross-site link).
        await fetch("/api/auth/logout", {
          credentials: "same-origin",
          cache: "no-store",
          headers: { [CSRF_HEADER]: "telentir-console" },
        });
      } catch {
        // the cookie is cleared below by the reload either way if the server is gone
      }
    }
    Api.forget();
    // A fresh page: the private keys and decrypted records held in memory go with the old one.
    location.replace("/console");
  }
}

async function main() {
  let config = { stripe: false };
  try {
    config = await (await fetch("/console/config.json", { cache: "no-store" })).json();
  } catch {
    // an older server: no top-up button
  }
  await new Console(config).boot();
}

main();
