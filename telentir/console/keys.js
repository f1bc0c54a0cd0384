// Keys and servers: the stores' default keys, the servers, BYOK key pairs made in this browser.

import { generateServerKeys, pemFromPkcs8, privateKeyBytes } from "./crypto.js";
import { $, busy, h, say, show } from "./dom.js";

export class KeysView {
  constructor(app) {
    this.app = app;
    this.section = $("#keys-view");
    this.error = $("#servers-error");
    this.downloadUrl = null;
    $("#server-form").addEventListener("submit", (event) => this.generate(event));
    $("#private-key-form").addEventListener("submit", (event) => this.usePrivateKey(event));
  }

  async show() {
    // The file input exists only while this view shows, so the page holds one file input at a time
    // (the store's Import… has the other): a script or test asking for "the file input" finds one.
    const input = h("input", { id: "private-key-file", name: "file", type: "file", accept: ".pem,.key,.txt" });
    $("#private-key-file-slot").replaceChildren(input);
    this.renderServers();
    await this.renderStoreKeys();
  }

  hide() {
    $("#private-key-file-slot").replaceChildren();
  }

  onEvent() {}

  async renderStoreKeys() {
    const { api, vault } = this.app;
    const rows = await Promise.all(
      Object.entries(vault.root.stores).map(async ([name, store]) => {
        let record = null;
        try {
          record = await api.get(`/keys/${store.defaultKey}`);
        } catch {
          // shown as unreadable below
        }
        let state = "unreadable";
        if (record) {
          const usable = vault.hasPrivateKey(record.server) ? "decrypts here" : "no private key here";
          state = `${record.deprecated ? "deprecated" : "active"}, ${usable}`;
        }
        return h(
          "tr",
          {},
          h("th", { scope: "row" }, name),
          h("td", {}, h("code", {}, store.defaultKey)),
          h("td", {}, record?.server ?? "—"),
          h("td", {}, state),
        );
      }),
    );
    $("#store-keys tbody").replaceChildren(...rows);
  }

  renderServers() {
    const servers = this.app.vault.servers();
    const rows = servers.map((server) =>
      h(
        "tr",
        { dataset: { server: server.name } },
        h("th", { scope: "row" }, server.name),
        h("td", {}, server.custodial ? "custodial" : "bring your own key"),
        h("td", { class: "state" }, server.deprecated ? "deprecated" : "active"),
        h("td", { class: "held" }, server.hasPrivateKey ? "yes" : "no"),
        h("td", {}, server.custodial ? "—" : this.deprecateButton(server)),
      ),
    );
    $("#servers tbody").replaceChildren(...rows);
    const missing = servers.filter((server) => !server.hasPrivateKey);
    $("#private-key-server").replaceChildren(...missing.map((s) => h("option", { value: s.name }, s.name)));
    $("#private-key-form button[type=submit]").disabled = missing.length === 0;
  }

  deprecateButton(server) {
    const label = server.deprecated ? "Reactivate" : "Deprecate";
    const onclick = (event) => this.deprecate(server, event.currentTarget);
    return h("button", { type: "button", onclick }, label, h("span", { class: "visually-hidden" }, ` server ${server.name}`));
  }

  async deprecate(server, button) {
    await busy(button, this.error, async () => {
      const record = await this.app.api.patch(`/servers/${server.name}`, { deprecated: !server.deprecated });
      this.app.vault.root.servers[server.name].deprecated = record.deprecated;
      this.renderServers();
    });
  }

  // Make a key pair here, upload only its public half (`upload_public`), keep the private half in memory.
  async generate(event) {
    event.preventDefault();
    const name = $("#server-name").value.trim().toLowerCase();
    await busy(event.submitter ?? $("#server-form button"), this.error, async () => {
      const keys = await generateServerKeys();
      const record = await this.app.api.post("/servers", { name, mode: "upload_public", publicKey: keys.publicKey });
      this.app.vault.addServer(record.name, record.publicKey);
      this.app.vault.holdPrivateKey(record.name, keys.privateKey);
      this.offerDownload(record.name, keys.pkcs8);
      keys.pkcs8.fill(0); // the download holds its own copy; drop this one
      $("#server-form").reset();
      this.renderServers();
      this.app.views.stores.retryUndecrypted();
      say($("#server-created"), `Server ${record.name} is registered; its private key is in this page only. Download it to keep it.`);
    });
  }

  offerDownload(name, pkcs8) {
    if (this.downloadUrl) URL.revokeObjectURL(this.downloadUrl);
    this.downloadUrl = URL.createObjectURL(new Blob([pemFromPkcs8(pkcs8)], { type: "application/x-pem-file" }));
    const link = $("#download-key");
    link.href = this.downloadUrl;
    link.download = `telentir-server-${name}.pem`;
    link.textContent = `Download the private key of ${name}`;
    show(link);
  }

  async usePrivateKey(event) {
    event.preventDefault();
    const server = $("#private-key-server").value;
    const status = $("#private-key-status");
    await busy(event.submitter ?? $("#private-key-form button"), this.error, async () => {
      const file = $("#private-key-file")?.files[0];
      const text = file ? await file.text() : $("#private-key-text").value;
      if (!text.trim()) throw new Error("Paste a private key or pick its file.");
      await this.app.vault.usePrivateKey(server, privateKeyBytes(text));
      $("#private-key-form").reset();
      this.renderServers();
      this.app.views.stores.retryUndecrypted();
      say(status, `The private key of ${server} is in this page now.`);
    });
  }
}
