// The dialog that creates or edits an item: JSON in, ciphertext out (a fresh key and IV for every write).

import { CONSOLE_KEY_METADATA } from "./vault.js";
import { $, busy, h, say } from "./dom.js";

export function pretty(value) {
  return value.json ? JSON.stringify(value.data, null, 2) : value.data;
}

export class Editor {
  constructor(app) {
    this.app = app;
    this.dialog = $("#editor");
    this.form = $("#editor-form");
    this.error = $("#editor-error");
    this.target = null;
    this.form.addEventListener("submit", (event) => this.save(event));
    $("#editor-cancel").addEventListener("click", () => this.dialog.close());
  }

  // target: {entry} to edit an item, or {relatedId, label} to create one under that object.
  // onSaved(record, opened-like {value, keyRecord, server}) runs after the server took the write.
  open(target, onSaved) {
    this.target = target;
    this.onSaved = onSaved;
    this.returnFocus = document.activeElement;
    const entry = target.entry;
    $("#editor-title").textContent = entry ? `Edit ${entry.object.id}` : target.label;
    $("#editor-json").value = entry ? pretty(entry.opened.value) : "{\n  \n}";
    const current = entry?.opened?.server ?? "default";
    const servers = this.app.vault.servers().filter((server) => !server.deprecated);
    $("#editor-server").replaceChildren(
      ...servers.map((server) => h("option", { value: server.name, selected: server.name === current }, server.name)),
    );
    say(this.error, "");
    this.dialog.showModal();
    $("#editor-json").focus();
    this.dialog.addEventListener("close", () => this.returnFocus?.focus(), { once: true });
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
    const { api, vault } = this.app;
    const sealed = await vault.seal(server, value);
    const entry = this.target.entry;
    let record;
    try {
      const body = { keyId: sealed.keyId, content: sealed.content, authTag: sealed.authTag };
      if (entry) record = await api.patch(`/objects/${entry.object.id}`, body);
      else record = await api.post("/objects", { ...body, relatedId: this.target.relatedId });
    } catch (error) {
      await vault.retireKey({ id: sealed.keyId, metadata: CONSOLE_KEY_METADATA }); // the write failed: its key is no one's
      throw error;
    }
    const old = entry?.opened.keyRecord;
    this.dialog.close();
    this.onSaved?.(record, { value, keyRecord: sealed.keyRecord, server });
    if (old && old.id !== record.key_id) await vault.retireKey(old);
  }
}
