// The table of a store's items: a column per common field, the updated time, sortable headers, one page of rows.

import { UPDATED } from "./collection.js";
import { h, when } from "./dom.js";
import { compact, fieldsOf } from "./values.js";

export class ItemsTable {
  constructor(element, { onSort, onOpen }) {
    this.element = element; // <table id="items">
    this.onSort = onSort;
    this.onOpen = onOpen;
  }

  label(store) {
    this.element.setAttribute("aria-label", `Items of ${store}`);
  }

  // columns: field names; entries: the page's items; sort: {field, direction} or null.
  render(columns, entries, sort) {
    const head = h(
      "tr",
      {},
      h("th", { scope: "col", class: "open-col" }, "Item"),
      columns.length ? columns.map((field) => this.header(field, field, sort)) : h("th", { scope: "col" }, "Content"),
      this.header("Updated", UPDATED, sort),
    );
    const rows = entries.map((entry) => this.row(entry, columns));
    this.element.replaceChildren(h("thead", {}, head), h("tbody", {}, rows));
  }

  header(label, field, sort) {
    const sorted = sort?.field === field ? sort.direction : null;
    const mark = sorted === "ascending" ? "▲" : sorted === "descending" ? "▼" : "";
    return h(
      "th",
      { scope: "col", "aria-sort": sorted },
      // The button's name is the field's name alone; the state is the header's aria-sort.
      h(
        "button",
        { type: "button", class: "sort", dataset: { field }, onclick: () => this.onSort(field) },
        label,
        h("span", { class: "sort-mark", "aria-hidden": "true" }, mark),
      ),
    );
  }

  row(entry, columns) {
    const { object, opened } = entry;
    const state = opened ? (opened.ok ? "decrypted" : "undecryptable") : "decrypting";
    const open = h(
      "button",
      { type: "button", class: "open", onclick: () => this.onOpen(object.id) },
      "Open",
      h("span", { class: "visually-hidden" }, ` item ${object.id}`),
    );
    // To the minute (UTC) in the table; the full time, marked UTC, is the element's title.
    const time = h("time", { datetime: object.updated_at, title: when(object.updated_at) }, shortTime(object.updated_at));
    const updated = h("td", {}, time);
    const first = h("td", {}, open);
    if (!opened?.ok) {
      const text = opened ? opened.reason : "Decrypting…";
      const cell = h("td", { colspan: Math.max(columns.length, 1), class: opened ? "undecryptable" : "hint" }, text);
      return h("tr", { class: "item", dataset: { id: object.id, state } }, first, cell, updated);
    }
    const fields = fieldsOf(opened.value);
    const cells = fields && columns.length
      ? columns.map((field) => valueCell(fields[field]))
      : [h("td", { colspan: Math.max(columns.length, 1) }, compact(opened.value.data))];
    return h("tr", { class: "item", dataset: { id: object.id, state } }, first, cells, updated);
  }
}

function shortTime(iso) {
  return iso ? iso.slice(0, 16).replace("T", " ") : "";
}

function valueCell(value) {
  const text = compact(value);
  const nested = value !== null && typeof value === "object";
  const full = nested ? JSON.stringify(value) : String(value ?? "");
  return h("td", { class: nested ? "nested" : null, title: full.length > text.length ? full : null }, text);
}
