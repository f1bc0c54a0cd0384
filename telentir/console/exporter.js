// Export CSV / Export JSON: every item of the open store, decrypted in this page, as a file the browser
// downloads (<store>.csv, <store>.json). Nothing is sent anywhere: the file is made from memory.

import { writeCsv } from "./csv.js";
import { $, busy, count, say } from "./dom.js";
import { cellText, fieldsOf } from "./values.js";

const VALUE_COLUMN = "(value)"; // for items whose content is not a JSON object
const REVOKE_AFTER_MS = 60_000;

export class Exporter {
  constructor(view) {
    this.view = view;
    this.status = $("#export-status");
    $("#export-csv").addEventListener("click", (event) => this.run(event.currentTarget, "csv"));
    $("#export-json").addEventListener("click", (event) => this.run(event.currentTarget, "json"));
  }

  async run(button, format) {
    await this.view.opened; // a click before the first store opens exports that store
    const collection = this.view.collection;
    await busy(button, this.view.error, async () => {
      if (!collection.complete) {
        say(this.status, `Decrypting every item of ${collection.name} first…`);
        await collection.done;
      }
      const entries = [...collection.entries.values()];
      const readable = entries.filter((entry) => entry.opened?.ok);
      const name = `${collection.name}.${format}`;
      const body = format === "csv" ? toCsv(collection, readable) : toJson(readable);
      download(name, body, format === "csv" ? "text/csv;charset=utf-8" : "application/json");
      const left = entries.length - readable.length;
      const skipped = left ? `; ${count(left)} that cannot be decrypted here are left out` : "";
      say(this.status, `Exported ${count(readable.length)} items to ${name}${skipped}.`);
    }).catch(() => {});
    if (this.status.textContent.endsWith("first…")) say(this.status, "");
  }
}

// Columns: every field of any item (most common first); nested values as JSON.
export function toCsv(collection, entries) {
  const columns = collection.allFields();
  const plain = entries.some((entry) => !fieldsOf(entry.opened.value));
  if (plain) columns.push(VALUE_COLUMN);
  const rows = entries.map((entry) => {
    const fields = fieldsOf(entry.opened.value);
    return columns.map((column) => {
      if (column === VALUE_COLUMN && !fields) return cellText(entry.opened.value.data);
      return cellText(fields?.[column]);
    });
  });
  return writeCsv(columns, rows);
}

export function toJson(entries) {
  return `${JSON.stringify(
    entries.map((entry) => entry.opened.value.data),
    null,
    2,
  )}\n`;
}

// Offer `content` (text or a Blob) as a file download named `name`.
export function download(name, content, type) {
  const url = URL.createObjectURL(new Blob([content], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), REVOKE_AFTER_MS);
}
