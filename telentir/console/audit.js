// The audit log in the Account tab: GET /api/audit, newest first, a page at a time ("More" follows `next`).

import { busy, h, when } from "./dom.js";

const PAGE_SIZE = 50;
const COLUMNS = ["When", "Action", "Address", "Credential"];

export class AuditLog {
  constructor(api) {
    this.api = api;
    this.next = null;
    this.rows = h("tbody");
    this.error = h("p", { class: "error", role: "alert", hidden: true });
    this.more = h("button", { type: "button", hidden: true, onclick: () => this.load(this.next) }, "More");
    const head = h("thead", {}, h("tr", {}, COLUMNS.map((name) => h("th", { scope: "col" }, name))));
    this.element = h(
      "section",
      { "aria-labelledby": "audit-title" },
      h("h3", { id: "audit-title" }, "Audit log"),
      h("div", { class: "scroll" }, h("table", { id: "audit", "aria-labelledby": "audit-title" }, head, this.rows)),
      this.more,
      this.error,
    );
  }

  // The page before `before` (the newest without it), added below the rows shown.
  async load(before = null) {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (before !== null) query.set("before", String(before));
    await busy(this.more, this.error, async () => {
      const page = await this.api.get(`/audit?${query}`);
      this.rows.append(...page.items.map(row));
      this.next = page.next ?? null;
      this.more.hidden = this.next === null;
    });
  }
}

function row(entry) {
  return h(
    "tr",
    { class: "audit-entry" },
    h("td", {}, when(entry.at)),
    h("td", {}, entry.action),
    h("td", {}, entry.ip ?? "—"),
    h("td", {}, entry.credential ?? "—"),
  );
}
