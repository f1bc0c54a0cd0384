// The stores: item counts, and the open store as a table. The store is read and decrypted whole, in the
// background (first page first), into this page's memory: the table sorts, pages and searches it there.
// Nothing decrypted is ever sent anywhere; live events keep it current.

import { Collection } from "./collection.js";
import { Detail } from "./detail.js";
import { Editor } from "./editor.js";
import { Exporter } from "./exporter.js";
import { Importer } from "./importer.js";
import { ItemsTable } from "./table.js";
import { openedValue } from "./vault.js";
import { $, count, h, say, show } from "./dom.js";

// One page of rows is all the table ever holds, whatever the store's size.
export const PAGE_SIZE = 100;
const FIRST_READ = 100; // the first page, shown as soon as it decrypts
const NEXT_READ = 1000; // then the rest of the store, a thousand at a time
const COUNT_REFRESH_MS = 500;
const STREAMS_WAIT_MS = 5000;
const RENDER_DELAY_MS = 120;

export class StoresView {
  constructor(app) {
    this.app = app;
    this.section = $("#stores-view");
    this.error = $("#store-error");
    this.collection = null; // the open store's items (collection.js)
    this.counts = new Map(); // store name -> items
    this.page = 0;
    this.sort = null; // {field, direction}
    this.query = "";
    this.expected = new Map(); // key id -> opened: our own writes on their way (their events need no decrypt)
    this.reader = null; // AbortController of the open store's background read
    // Resolves once a store is open: an import, export or new item asked for before that waits for it.
    this.opened = new Promise((resolve) => {
      this.markOpened = resolve;
    });
    this.table = new ItemsTable($("#items"), {
      onSort: (field) => this.sortBy(field),
      onOpen: (id) => this.detail.open(id),
    });
    this.editor = new Editor(app);
    this.detail = new Detail(this);
    this.importer = new Importer(this);
    this.exporter = new Exporter(this);
    $("#new-item").addEventListener("click", () => this.newItem());
    $("#prev-page").addEventListener("click", () => this.turn(-1));
    $("#next-page").addEventListener("click", () => this.turn(1));
    $("#store-search").addEventListener("input", (event) => this.search(event.target.value));
    this.renderStoreList();
  }

  get stores() {
    return this.app.vault.root.stores;
  }

  get store() {
    return this.collection?.name ?? null;
  }

  get storeId() {
    return this.collection.storeId;
  }

  storeNamed(id) {
    return Object.keys(this.stores).find((name) => this.stores[name].id === id) ?? null;
  }

  // Each store's button is named by the store alone and described by its count: a screen reader says
  // "contacts, 120", not "contacts120".
  renderStoreList() {
    const items = Object.keys(this.stores).map((name, index) =>
      h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            dataset: { store: name },
            "aria-labelledby": `store-${index}-label`,
            "aria-describedby": `store-${index}-count`,
            onclick: () => this.select(name),
          },
          h("span", { class: "store-label", id: `store-${index}-label` }, name),
          h("span", { class: "store-count", id: `store-${index}-count` }, "…"),
        ),
      ),
    );
    $("#store-list").replaceChildren(...items);
  }

  async show() {
    // Streams first: a store read after they are open misses nothing (duplicates are dropped).
    await Promise.race([this.app.feed.opened(), new Promise((resolve) => setTimeout(resolve, STREAMS_WAIT_MS))]);
    this.refreshCounts();
    if (this.collection === null) await this.select("contacts");
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
    if (name === this.store && !this.collection.complete) this.collection.total = n;
  }

  // --- reading a store ------------------------------------------------------------------------

  // Open a store: resolves when its first page shows; the rest is read and decrypted in the background.
  async select(name) {
    for (const button of document.querySelectorAll("#store-list button")) {
      if (button.dataset.store === name) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
    $("#store-name").textContent = `Items of ${name}`; // the bare name is its button's alone
    this.table.label(name);
    this.reader?.abort();
    this.reader = new AbortController();
    this.collection = new Collection(name, this.stores[name].id);
    this.markOpened();
    this.page = 0;
    this.sort = null;
    this.query = "";
    $("#store-search").value = "";
    say(this.error, "");
    this.render();
    await this.readFirst(this.collection, this.reader.signal);
  }

  reload() {
    return this.select(this.store);
  }

  async readFirst(collection, signal) {
    let answer;
    try {
      answer = await this.app.api.request("GET", `/objects/${collection.storeId}/related?limit=${FIRST_READ}&count=true`, {
        signal,
      });
    } catch (error) {
      return this.readFailed(collection, error);
    }
    if (collection !== this.collection) return;
    collection.total = Number(answer.headers.get("X-Total-Count"));
    this.setCount(collection.name, collection.total);
    await this.take(collection, answer.data, signal);
    const next = answer.headers.get("X-Next-Cursor");
    if (next) this.readRest(collection, next, signal);
    else this.finish(collection);
  }

  // The rest of the store, a thousand at a time. Reading a page and its key records runs ahead while the
  // page before decrypts: the workers are never idle waiting for the network, nor the network for them.
  async readRest(collection, cursor, signal) {
    let after = cursor;
    let decrypting = Promise.resolve();
    try {
      while (after && collection === this.collection) {
        const query = `limit=${NEXT_READ}&after=${encodeURIComponent(after)}`;
        const answer = await this.app.api.request("GET", `/objects/${collection.storeId}/related?${query}`, { signal });
        const fresh = this.join(collection, answer.data);
        const records = await this.app.vault.keyRecords(fresh.map((object) => object.key_id), signal);
        await decrypting;
        decrypting = this.decryptAll(collection, fresh, signal, records);
        decrypting.catch(() => {}); // awaited (and its failure reported) on the next turn
        after = answer.headers.get("X-Next-Cursor");
      }
      await decrypting;
      this.finish(collection);
    } catch (error) {
      this.readFailed(collection, error);
    }
  }

  // Objects read from the server join the collection and are decrypted in bulk (the workers).
  async take(collection, objects, signal) {
    await this.decryptAll(collection, this.join(collection, objects), signal);
  }

  // The objects the collection does not hold yet (nor saw deleted) join it, to be decrypted.
  join(collection, objects) {
    const fresh = objects.filter((object) => !collection.get(object.id) && !collection.deleted.has(object.id));
    for (const object of fresh) collection.put(object);
    this.scheduleRender();
    return fresh;
  }

  async decryptAll(collection, fresh, signal, records = null) {
    const opened = fresh.length ? await this.app.vault.openMany(fresh, signal, records) : [];
    fresh.forEach((object, index) => {
      const entry = collection.get(object.id);
      if (entry && entry.object === object) entry.opened = opened[index]; // else replaced or removed meanwhile
    });
    collection.changed();
    if (collection === this.collection) this.render();
  }

  finish(collection) {
    collection.finish();
    if (collection === this.collection) {
      this.setCount(collection.name, collection.size);
      this.render();
    }
  }

  readFailed(collection, error) {
    if (error.name === "AbortError" || collection !== this.collection) return;
    collection.fail(error);
    say(this.error, `The store could not be read: ${error.message}`);
    this.render();
  }

  // A private key was added: items that could not be decrypted may open now.
  retryUndecrypted() {
    const collection = this.collection;
    if (!collection) return;
    for (const entry of collection.entries.values()) {
      if (entry.opened && !entry.opened.ok) this.decrypt(collection, entry.object);
    }
  }

  decrypt(collection, object) {
    const entry = collection.put(object, null);
    this.app.vault.open(object).then((opened) => {
      if (entry.object !== object) return; // replaced meanwhile by a newer version
      entry.opened = opened;
      collection.changed();
      this.scheduleRender();
    });
  }

  // --- the table --------------------------------------------------------------------------------

  search(query) {
    this.query = query;
    this.page = 0;
    const started = performance.now();
    this.render();
    // How long the filter and the table's page took: the console's tests and bench read it.
    $("#items").dataset.filterMs = (performance.now() - started).toFixed(1);
  }

  sortBy(field) {
    const direction = this.sort?.field === field && this.sort.direction === "ascending" ? "descending" : "ascending";
    this.sort = { field, direction };
    this.page = 0;
    this.render();
    this.table.element.querySelector(`th button[data-field="${CSS.escape(field)}"]`)?.focus();
  }

  turn(step) {
    this.page = Math.max(0, this.page + step);
    this.render();
  }

  scheduleRender() {
    if (this.renderTimer) return;
    this.renderTimer = setTimeout(() => {
      this.renderTimer = null;
      this.render();
    }, RENDER_DELAY_MS);
  }

  // The open page of the filtered, sorted items, the pager, the search status and the decrypt progress.
  render() {
    const collection = this.collection;
    if (!collection) return;
    const view = collection.view(this.query, this.sort);
    const searching = this.query.trim() !== "";
    const total = searching ? view.length : collection.known;
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    this.page = Math.min(this.page, pages - 1);
    const first = this.page * PAGE_SIZE;
    const rows = view.slice(first, first + PAGE_SIZE);
    this.table.render(collection.columns(), rows, this.sort);
    const expected = Math.min(PAGE_SIZE, total - first);
    const read = collection.total !== null || collection.complete; // the first page has been read
    const ready = read && rows.length >= expected && rows.every((entry) => entry.opened);
    $("#items").dataset.state = collection.failed ? "failed" : ready ? "ready" : "loading";
    let info = collection.complete || collection.total !== null ? "No items yet" : "Loading…";
    if (searching) info = "No items match";
    if (total > 0 && first < total) info = `Items ${count(first + 1)}–${count(first + expected)} of ${count(total)}`;
    $("#page-info").textContent = info;
    $("#prev-page").disabled = this.page === 0;
    $("#next-page").disabled = this.page >= pages - 1;
    this.renderStatus(view.length, searching);
  }

  renderStatus(matches, searching) {
    const collection = this.collection;
    const known = collection.known;
    const opened = collection.openedCount();
    let status = `${count(known)} ${known === 1 ? "item" : "items"}`;
    if (searching) status = `${count(matches)} of ${status}`;
    if (searching && !collection.complete && !collection.failed) status += " (still decrypting the rest)";
    const status$ = $("#search-status");
    if (status$.textContent !== status) status$.textContent = status;
    const decrypting = !collection.complete && !collection.failed && collection.total !== null;
    show($("#decrypt-panel"), decrypting);
    if (decrypting) {
      const bar = $("#decrypt-progress");
      bar.max = Math.max(known, 1);
      bar.value = opened;
      $("#decrypt-text").textContent = `Decrypting the store for search: ${count(opened)} of ${count(known)} items`;
    }
  }

  // --- writes and live changes ------------------------------------------------------------------

  async newItem() {
    await this.opened;
    const collection = this.collection;
    this.editor.open({ relatedId: collection.storeId, label: `New item in ${collection.name}` }, (record, known) =>
      this.ownWrite(record, known),
    );
  }

  // A write of this page's (editor, import, detail): its plaintext is known, nothing to decrypt.
  ownWrite(record, known) {
    const collection = this.collection;
    if (!collection || record.related_object_id !== collection.storeId) return;
    const opened = openedValue(known.value, known.keyRecord);
    const fresh = !collection.get(record.id);
    collection.put(record, opened);
    if (fresh) this.added(collection);
    this.scheduleRender();
  }

  // An import is about to create an object under this key: its event needs no decrypt.
  expect(keyId, known) {
    this.expected.set(keyId, openedValue(known.value, known.keyRecord));
  }

  unexpect(keyId) {
    this.expected.delete(keyId);
  }

  added(collection) {
    if (collection.total !== null) collection.total += 1;
    this.setCount(collection.name, collection.known);
  }

  // A new item of the open store, ours or from any client.
  arrived(object) {
    const collection = this.collection;
    if (collection.get(object.id) || collection.deleted.has(object.id)) return; // already here: our own write
    const known = this.expected.get(object.key_id);
    if (known) collection.put(object, known);
    else this.decrypt(collection, object);
    this.added(collection);
    this.scheduleRender();
  }

  // An item was deleted (here or by any client).
  removed(id) {
    const collection = this.collection;
    collection.deleted.add(id);
    if (!collection.remove(id)) return false;
    if (collection.total !== null) collection.total = Math.max(0, collection.total - 1);
    this.setCount(collection.name, collection.known);
    this.scheduleRender();
    this.detail.gone(id);
    return true;
  }

  replaced(object) {
    const collection = this.collection;
    const entry = collection.get(object.id);
    if (!entry) return;
    if (object.related_object_id !== collection.storeId) return void this.removed(object.id);
    const same = ["content", "auth_tag", "key_id"].every((field) => entry.object[field] === object[field]);
    if (same) {
      // The same ciphertext (our own edit, echoed by its event): keep what it decrypted to.
      entry.object = object;
      collection.changed();
      this.scheduleRender();
      return;
    }
    this.decrypt(collection, object);
  }

  async refresh(id) {
    let object;
    try {
      object = await this.app.api.get(`/objects/${id}`);
    } catch (error) {
      if (error.status === 404) this.removed(id);
      return;
    }
    this.replaced(object);
  }

  onEvent({ type, data }) {
    if (!this.collection) return;
    if (type === "resync") {
      this.refreshCounts();
      this.reload();
    } else if (type === "object_created") {
      const store = this.storeNamed(data.related_object_id);
      if (store === this.store) this.arrived(data);
      else if (store !== null) this.setCount(store, (this.counts.get(store) ?? 0) + 1);
    } else if (type === "object_updated") {
      if (this.collection.get(data.object_id)) this.refresh(data.object_id);
      else this.recount();
    } else if (type === "object_deleted") {
      if (!this.removed(data.object_id)) this.recount();
    }
  }
}
