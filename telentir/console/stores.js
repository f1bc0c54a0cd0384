// The stores: item counts, one page of a store's items at a time (decrypted here), the editor, live updates.

import { CONSOLE_KEY_METADATA } from "./vault.js";
import { $, busy, count, h, say, when } from "./dom.js";

// One page of items is all the DOM ever holds, whatever the store's size.
export const PAGE_SIZE = 100;
const COUNT_REFRESH_MS = 500;
const STREAMS_WAIT_MS = 5000;

export class StoresView {
  constructor(app) {
    this.app = app;
    this.section = $("#stores-view");
    this.list = $("#items");
    this.error = $("#store-error");
    this.store = null; // the open store's name
    this.counts = new Map(); // store name -> items
    this.cursors = [null]; // the `after` of every page up to the open one
    this.next = null; // the open page's X-Next-Cursor
    this.rows = new Map(); // object id -> {object, opened, element, ready}
    this.published = new Map(); // object id -> Set of publication types
    this.generation = 0; // drops the answer of a page load that a newer one replaced
    this.editor = new Editor(this);
    $("#new-item").addEventListener("click", () => this.editor.open(null));
    $("#prev-page").addEventListener("click", () => this.turn(-1));
    $("#next-page").addEventListener("click", () => this.turn(1));
    this.renderStoreList();
  }

  get stores() {
    return this.app.vault.root.stores;
  }

  get storeId() {
    return this.stores[this.store].id;
  }

  storeNamed(id) {
    return Object.keys(this.stores).find((name) => this.stores[name].id === id) ?? null;
  }

  renderStoreList() {
    const items = Object.keys(this.stores).map((name) =>
      h(
        "li",
        {},
        h(
          "button",
          { type: "button", dataset: { store: name }, onclick: () => this.select(name) },
          h("span", { class: "store-label" }, name),
          h("span", { class: "store-count" }, "…"),
        ),
      ),
    );
    $("#store-list").replaceChildren(...items);
  }

  async show() {
    // Streams first: a page read after they are open misses nothing (duplicates are dropped).
    await Promise.race([this.app.feed.opened(), new Promise((resolve) => setTimeout(resolve, STREAMS_WAIT_MS))]);
    this.refreshCounts();
    if (this.store === null) await this.select("contacts");
  }

  async refreshCounts() {
    const reads = Object.entries(this.stores).map(async ([name, store]) => {
      const { headers } = await this.app.api.request("GET", `/objects/${store.id}/related?limit=1&count=true`);
      this.setCount(name, Number(headers.get("X-Total-Count")));
    });
    await Promise.allSettled(reads);
  }

  // Some change may have moved or removed an item of a store: count again, once things settle.
  recount() {
    clearTimeout(this.recountTimer);
    this.recountTimer = setTimeout(() => this.refreshCounts(), COUNT_REFRESH_MS);
  }

  setCount(name, n) {
    this.counts.set(name, n);
    $(`#store-list [data-store="${name}"] .store-count`).textContent = count(n);
    if (name === this.store) this.renderPageInfo();
  }

  async select(name) {
    this.store = name;
    for (const button of document.querySelectorAll("#store-list button")) {
      if (button.dataset.store === name) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
    $("#store-name").textContent = name;
    this.cursors = [null];
    this.published.clear();
    await Promise.all([this.load(), this.loadPublications()]);
  }

  async turn(step) {
    if (step > 0 && this.next) this.cursors.push(this.next);
    else if (step < 0 && this.cursors.length > 1) this.cursors.pop();
    else return;
    await this.load();
  }

  reload() {
    return this.load();
  }

  // Read the open page; rows show at once and fill in as each item decrypts.
  async load() {
    const generation = ++this.generation;
    const after = this.cursors.at(-1);
    this.list.dataset.state = "loading";
    const query = `limit=${PAGE_SIZE}&count=true${after ? `&after=${encodeURIComponent(after)}` : ""}`;
    let answer;
    try {
      answer = await this.app.api.request("GET", `/objects/${this.storeId}/related?${query}`);
    } catch (error) {
      if (generation === this.generation) {
        say(this.error, error.message);
        this.list.dataset.state = "failed";
      }
      return;
    }
    if (generation !== this.generation) return;
    say(this.error, "");
    this.next = answer.headers.get("X-Next-Cursor");
    this.rows.clear();
    this.list.replaceChildren(...answer.data.map((object) => this.row(object)));
    this.setCount(this.store, Number(answer.headers.get("X-Total-Count")));
    await Promise.all([...this.rows.values()].map((entry) => entry.ready));
    if (generation === this.generation) this.list.dataset.state = "ready";
  }

  async loadPublications() {
    try {
      const publications = await this.app.api.get(`/objects/publish/${this.store}`);
      for (const publication of publications) this.markPublished(publication.related_id, publication.type);
    } catch {
      // badges are a nicety: the items still show
    }
  }

  markPublished(id, type) {
    if (!this.published.has(id)) this.published.set(id, new Set());
    this.published.get(id).add(type);
    const entry = this.rows.get(id);
    if (entry) this.paint(entry);
  }

  renderPageInfo() {
    const total = this.counts.get(this.store) ?? 0;
    const first = (this.cursors.length - 1) * PAGE_SIZE + 1;
    let text = total ? "No items on this page" : "No items yet";
    if (this.rows.size) text = `Items ${count(first)}–${count(first + this.rows.size - 1)} of ${count(total)}`;
    $("#page-info").textContent = text;
    $("#prev-page").disabled = this.cursors.length === 1;
    $("#next-page").disabled = !this.next;
  }

  row(object) {
    const entry = { object, opened: null, element: h("li", { class: "item", dataset: { id: object.id } }) };
    this.rows.set(object.id, entry);
    this.decrypt(entry);
    return entry.element;
  }

  decrypt(entry) {
    const object = entry.object;
    entry.opened = null;
    this.paint(entry);
    entry.ready = this.app.vault.open(object).then((opened) => {
      if (entry.object !== object) return; // replaced meanwhile by a newer version
      entry.opened = opened;
      this.paint(entry);
    });
  }

  // A private key was added: items that could not be decrypted may open now.
  retryUndecrypted() {
    for (const entry of this.rows.values()) if (entry.opened && !entry.opened.ok) this.decrypt(entry);
  }

  paint(entry) {
    const { object, opened } = entry;
    const badges = [...(this.published.get(object.id) ?? [])].map((type) =>
      h("span", { class: "tag published" }, `published: ${type}`),
    );
    const head = h(
      "div",
      { class: "item-head" },
      h("code", { class: "item-id" }, object.id),
      opened?.ok ? h("span", { class: "tag" }, `server: ${opened.server}`) : null,
      badges,
      h("time", { datetime: object.updated_at }, when(object.updated_at)),
    );
    let body = h("p", { class: "hint" }, "Decrypting…");
    if (opened && !opened.ok) body = h("p", { class: "undecryptable" }, opened.reason);
    if (opened?.ok) body = h("pre", { class: "json", tabindex: "0" }, pretty(opened.value));
    const label = h("span", { class: "visually-hidden" }, ` item ${object.id}`);
    const actions = h(
      "div",
      { class: "item-actions" },
      h("button", { type: "button", disabled: !opened?.ok, onclick: () => this.editor.open(entry) }, "Edit", label),
      h("button", { type: "button", onclick: () => this.confirmDelete(entry) }, "Delete", label.cloneNode(true)),
    );
    entry.element.replaceChildren(head, body, actions);
    entry.element.dataset.state = opened ? (opened.ok ? "decrypted" : "undecryptable") : "decrypting";
  }

  confirmDelete(entry) {
    const actions = entry.element.querySelector(".item-actions");
    const yes = h("button", { type: "button", class: "danger", onclick: (e) => this.remove(entry, e.target) }, "Delete for good");
    const no = h("button", { type: "button", onclick: () => this.paint(entry) }, "Keep");
    actions.replaceChildren(h("span", {}, "Delete this item?"), yes, no);
    yes.focus();
  }

  async remove(entry, button) {
    const id = entry.object.id;
    await busy(button, this.error, async () => {
      await this.app.api.del(`/objects/${id}`);
      const next = entry.element.nextElementSibling ?? entry.element.previousElementSibling;
      this.drop(id);
      (next?.querySelector("button") ?? $("#new-item")).focus();
      await this.app.vault.retireKey(entry.opened?.keyRecord);
    });
  }

  // Remove a row of the open page; false if it was not there.
  drop(id) {
    const entry = this.rows.get(id);
    if (!entry) return false;
    entry.element.remove();
    this.rows.delete(id);
    this.setCount(this.store, Math.max(0, (this.counts.get(this.store) ?? 1) - 1));
    return true;
  }

  // A new item of the open store (ours, or from any client): it goes at the end of the last page.
  arrived(object) {
    if (this.rows.has(object.id)) return; // already shown: our own write and its event
    this.setCount(this.store, (this.counts.get(this.store) ?? 0) + 1);
    if (this.next === null && this.rows.size < PAGE_SIZE) this.list.append(this.row(object));
    else if (this.next === null) this.next = [...this.rows.keys()].at(-1); // it starts the next page
    this.renderPageInfo();
  }

  replaced(object) {
    const entry = this.rows.get(object.id);
    if (!entry) return;
    if (object.related_object_id !== this.storeId) return void this.drop(object.id);
    const same = ["content", "auth_tag", "key_id"].every((field) => entry.object[field] === object[field]);
    if (same) {
      // The same ciphertext (our own edit, echoed by its event): keep the object a decryption may be running for.
      Object.assign(entry.object, object);
      return void this.paint(entry);
    }
    entry.object = object;
    this.decrypt(entry);
  }

  async refresh(id) {
    let object;
    try {
      object = await this.app.api.get(`/objects/${id}`);
    } catch (error) {
      if (error.status === 404) this.drop(id);
      return;
    }
    this.replaced(object);
  }

  onEvent({ type, data }) {
    if (!this.store) return;
    if (type === "resync") {
      this.refreshCounts();
      this.reload();
    } else if (type === "object_created") {
      const store = this.storeNamed(data.related_object_id);
      if (store === this.store) this.arrived(data);
      else if (store !== null) this.setCount(store, (this.counts.get(store) ?? 0) + 1);
    } else if (type === "object_updated") {
      if (this.rows.has(data.object_id)) this.refresh(data.object_id);
      else this.recount();
    } else if (type === "object_deleted") {
      if (!this.drop(data.object_id)) this.recount();
    } else if (type === "publish") {
      this.markPublished(data.related_id, data.type);
    }
  }
}

function pretty(value) {
  return value.json ? JSON.stringify(value.data, null, 2) : value.data;
}

// The dialog that creates or edits an item: JSON in, ciphertext out.
class Editor {
  constructor(view) {
    this.view = view;
    this.dialog = $("#editor");
    this.form = $("#editor-form");
    this.error = $("#editor-error");
    this.entry = null;
    this.form.addEventListener("submit", (event) => this.save(event));
    $("#editor-cancel").addEventListener("click", () => this.dialog.close());
  }

  open(entry) {
    this.entry = entry;
    const vault = this.view.app.vault;
    $("#editor-title").textContent = entry ? `Edit ${entry.object.id}` : `New item in ${this.view.store}`;
    $("#editor-json").value = entry ? pretty(entry.opened.value) : "{\n  \n}";
    const current = entry?.opened?.server ?? "default";
    const servers = vault.servers().filter((server) => !server.deprecated);
    $("#editor-server").replaceChildren(
      ...servers.map((server) => h("option", { value: server.name, selected: server.name === current }, server.name)),
    );
    say(this.error, "");
    this.dialog.showModal();
    $("#editor-json").focus();
  }

  async save(event) {
    event.preventDefault();
    let value;
    try {
      value = JSON.parse($("#editor-json").value);
    } catch (error) {
      return say(this.error, `This is not JSON: ${error.message}`);
    }
    const server = $("#editor-server").value;
    await busy(this.form.querySelector("button[type=submit]"), this.error, () => this.write(server, value));
  }

  async write(server, value) {
    const { api, vault } = this.view.app;
    const sealed = await vault.seal(server, value);
    const entry = this.entry;
    let record;
    try {
      const body = { keyId: sealed.keyId, content: sealed.content, authTag: sealed.authTag };
      if (entry) record = await api.patch(`/objects/${entry.object.id}`, body);
      else record = await api.post("/objects", { ...body, relatedId: this.view.storeId });
    } catch (error) {
      await vault.retireKey({ id: sealed.keyId, metadata: CONSOLE_KEY_METADATA }); // the write failed: its key is no one's
      throw error;
    }
    if (entry) {
      const old = entry.opened.keyRecord;
      this.view.replaced(record);
      if (old.id !== record.key_id) await vault.retireKey(old);
    } else {
      this.view.arrived(record);
    }
    this.dialog.close();
  }
}

