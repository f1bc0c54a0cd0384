// The item dialog: an item's JSON, edit and delete, its related items (GET /objects/{id}/related, each
// openable, and "New related item"), and its publications (publish a copy for the platform, unpublish).

import { pretty } from "./editor.js";
import { CONSOLE_KEY_METADATA, openedValue } from "./vault.js";
import { $, busy, count, h, say, show, when } from "./dom.js";
import { compact, fieldsOf } from "./values.js";

const RELATED_PAGE = 100;
const SUMMARY_FIELDS = 3;

export class Detail {
  constructor(view) {
    this.view = view;
    this.app = view.app;
    this.dialog = $("#detail");
    this.error = $("#detail-error");
    this.current = null; // {object, opened, inStore}
    this.trail = []; // ids of the items opened before this one (Back)
    this.related = []; // [{object, opened}] of the open item
    this.copies = []; // the open item's published copies (children the console made for the platform)
    this.sessionTypes = new Set(); // publication types used in this page, beyond the store names
    $("#detail-close").addEventListener("click", () => this.dialog.close());
    $("#detail-back").addEventListener("click", () => this.back());
    $("#new-related").addEventListener("click", () => this.newRelated());
    $("#publish-form").addEventListener("submit", (event) => this.publish(event));
    this.dialog.addEventListener("close", () => {
      this.current = null;
      this.trail = [];
      this.returnFocus?.focus();
    });
  }

  // Open an item of the store (or, from a related list, any of the user's objects).
  async open(id, fromTrail = false) {
    if (!this.dialog.open) {
      this.returnFocus = document.activeElement;
      this.trail = [];
    } else if (!fromTrail && this.current) {
      this.trail.push(this.current.object.id);
    }
    say(this.error, "");
    say($("#publish-status"), "");
    const entry = this.view.collection.get(id);
    this.current = entry ? { ...entry, inStore: true } : { object: null, opened: null, inStore: false };
    this.render();
    if (!this.dialog.open) this.dialog.showModal();
    $("#detail-title").focus();
    if (!entry) await this.fetch(id);
    await Promise.all([this.loadRelated(), this.loadPublications()]);
  }

  back() {
    const id = this.trail.pop();
    if (id) this.open(id, true);
  }

  async fetch(id) {
    try {
      const object = await this.app.api.get(`/objects/${id}`);
      this.current = { object, opened: await this.app.vault.open(object), inStore: false };
    } catch (error) {
      say(this.error, error.message);
      this.current = { object: { id }, opened: { ok: false, reason: error.message }, inStore: false };
    }
    this.render();
  }

  // The open item was deleted (here or elsewhere).
  gone(id) {
    if (this.current?.object?.id !== id) return;
    this.trail = this.trail.filter((other) => other !== id);
    if (this.trail.length) this.back();
    else this.dialog.close();
  }

  render() {
    const { object, opened } = this.current;
    $("#detail-title").textContent = object ? `Item ${object.id}` : "Item";
    $("#detail-title").tabIndex = -1;
    show($("#detail-back"), this.trail.length > 0);
    if (this.trail.length) $("#detail-back").textContent = `Back to ${this.trail.at(-1)}`;
    const facts = [];
    if (object?.updated_at) facts.push(`updated ${when(object.updated_at)}`);
    if (opened?.ok) facts.push(`encrypted for server ${opened.server}`);
    if (object && !this.current.inStore) facts.push("not an item of this store's list");
    $("#detail-meta").textContent = facts.join(" · ");
    let text = "Decrypting…";
    if (opened) text = opened.ok ? pretty(opened.value) : opened.reason;
    $("#detail-json").textContent = text;
    this.renderActions();
  }

  renderActions() {
    const { object, opened } = this.current;
    const edit = h("button", { type: "button", disabled: !opened?.ok, onclick: () => this.edit() }, "Edit");
    const del = h("button", { type: "button", disabled: !object?.updated_at, onclick: () => this.confirmDelete() }, "Delete");
    $("#detail-actions").replaceChildren(edit, del);
  }

  edit() {
    const target = { entry: this.current };
    this.view.editor.open(target, (record, known) => {
      this.view.ownWrite(record, known);
      if (this.current?.object.id !== record.id) return;
      const entry = this.view.collection.get(record.id);
      const opened = openedValue(known.value, known.keyRecord);
      this.current = entry ? { ...entry, inStore: true } : { object: record, opened, inStore: false };
      this.render();
    });
  }

  confirmDelete() {
    const yes = h("button", { type: "button", class: "danger", onclick: (e) => this.remove(e.currentTarget) }, "Delete for good");
    const no = h("button", { type: "button", onclick: () => this.renderActions() }, "Keep");
    $("#detail-actions").replaceChildren(h("span", {}, "Delete this item?"), yes, no);
    yes.focus();
  }

  async remove(button) {
    const { object, opened } = this.current;
    await busy(button, this.error, async () => {
      // Its published copies go with it (the server would only detach them).
      for (const copy of this.copies) await this.dropCopy(copy);
      await this.app.api.del(`/objects/${object.id}`);
      await this.app.vault.retireKey(opened?.keyRecord);
      if (!this.view.removed(object.id)) this.gone(object.id);
    });
  }

  // --- related items ------------------------------------------------------------------------

  async loadRelated() {
    const object = this.current.object;
    const status = $("#related-status");
    status.textContent = "Loading related items…";
    $("#related-list").replaceChildren();
    let answer;
    try {
      answer = await this.app.api.request("GET", `/objects/${object.id}/related?limit=${RELATED_PAGE}&count=true`);
    } catch (error) {
      status.textContent = `Related items cannot be read: ${error.message}`;
      return;
    }
    if (this.current?.object.id !== object.id) return;
    const children = answer.data;
    this.copies = children.filter((child) => child.metadata?.publishedAs);
    const items = children.filter((child) => !child.metadata?.publishedAs);
    const opened = await this.app.vault.openMany(items);
    if (this.current?.object.id !== object.id) return;
    this.related = items.map((child, index) => ({ object: child, opened: opened[index] }));
    const total = Number(answer.headers.get("X-Total-Count")) - this.copies.length;
    let text = total === 0 ? "No related items." : `${count(total)} related ${total === 1 ? "item" : "items"}.`;
    if (total > this.related.length) text += ` The first ${count(this.related.length)} are shown.`;
    status.textContent = text;
    $("#related-list").replaceChildren(...this.related.map((entry) => this.relatedRow(entry)));
    this.renderCopies();
  }

  relatedRow({ object, opened }) {
    const fields = fieldsOf(opened.value);
    let summary = opened.ok ? compact(opened.value?.data) : opened.reason;
    if (fields) {
      summary = Object.entries(fields)
        .slice(0, SUMMARY_FIELDS)
        .map(([name, value]) => `${name}: ${compact(value)}`)
        .join(" · ");
    }
    return h(
      "li",
      { dataset: { id: object.id } },
      h("span", { class: "summary" }, summary || "(empty)"),
      h(
        "button",
        { type: "button", onclick: () => this.open(object.id) },
        "Open",
        h("span", { class: "visually-hidden" }, ` related item ${object.id}`),
      ),
    );
  }

  newRelated() {
    const parent = this.current.object.id;
    const label = `New item related to ${parent}`;
    this.view.editor.open({ relatedId: parent, label }, () => this.loadRelated());
  }

  // --- publications ---------------------------------------------------------------------------

  // The types this item is published under: the store names and the types used here are asked.
  async loadPublications() {
    const id = this.current.object.id;
    const types = [...new Set([...Object.keys(this.view.stores), ...this.sessionTypes])];
    $("#publish-types").replaceChildren(...types.map((type) => h("option", { value: type })));
    if (!$("#publish-type").value) $("#publish-type").value = this.view.store;
    const found = await Promise.all(
      types.map(async (type) => {
        try {
          const list = await this.app.api.get(`/objects/publish/${encodeURIComponent(type)}`);
          return list.filter((publication) => publication.related_id === id);
        } catch {
          return [];
        }
      }),
    );
    if (this.current?.object.id !== id) return;
    this.publications = found.flat();
    this.renderCopies();
  }

  renderCopies() {
    const rows = (this.publications ?? []).map((publication) =>
      h(
        "li",
        { dataset: { type: publication.type } },
        h("span", { class: "summary" }, `Published as ${publication.type}`),
        h(
          "button",
          { type: "button", onclick: (event) => this.unpublish(publication, event.currentTarget) },
          "Unpublish",
          h("span", { class: "visually-hidden" }, ` from ${publication.type}`),
        ),
      ),
    );
    if (!rows.length) rows.push(h("li", { class: "hint" }, "Not published."));
    $("#publication-list").replaceChildren(...rows);
  }

  // Publish: a copy of the plaintext, encrypted in this page for the platform's server (so the platform can
  // read it, and only it), created under this item, then recorded under the type (docs/protocol.md §5).
  async publish(event) {
    event.preventDefault();
    const type = $("#publish-type").value.trim();
    const { object, opened } = this.current;
    const status = $("#publish-status");
    await busy(event.submitter ?? $("#publish-form button"), this.error, async () => {
      if (!opened?.ok) throw new Error("Only an item decrypted here can be published.");
      const { api, vault } = this.app;
      const platform = await vault.platform();
      const sealed = await vault.seal(platform.name, opened.value.data, platform.publicKey);
      const metadata = { ...CONSOLE_KEY_METADATA, publishedAs: type };
      const body = { keyId: sealed.keyId, content: sealed.content, authTag: sealed.authTag, relatedId: object.id, metadata };
      const copy = await api.post("/objects", body);
      const earlier = this.copies.filter((other) => other.metadata.publishedAs === type);
      await api.request("PUT", `/objects/publish/${encodeURIComponent(type)}/${object.id}`, { body: { objectId: copy.id } });
      for (const old of earlier) await this.dropCopy(old); // the publication now points at the new copy
      this.sessionTypes.add(type);
      say(status, `Published as ${type}: the platform (server ${platform.name}) can read this copy.`);
      await Promise.all([this.loadRelated(), this.loadPublications()]);
    });
  }

  async unpublish(publication, button) {
    const id = this.current.object.id;
    await busy(button, this.error, async () => {
      await this.app.api.del(`/objects/publish/${encodeURIComponent(publication.type)}/${id}`);
      const copy = this.copies.find((other) => other.id === publication.object_id);
      if (copy) await this.dropCopy(copy);
      say($("#publish-status"), `Unpublished from ${publication.type}.`);
      await Promise.all([this.loadRelated(), this.loadPublications()]);
      $("#publish-type").focus();
    });
  }

  // A published copy this console made: the object and its key go.
  async dropCopy(copy) {
    try {
      await this.app.api.del(`/objects/${copy.id}`);
    } catch (error) {
      if (error.status !== 404) throw error;
    }
    await this.app.vault.retireKey({ id: copy.key_id, metadata: CONSOLE_KEY_METADATA });
  }
}
