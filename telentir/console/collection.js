// The open store's items, held in this page's memory only: each object record with what it decrypted to,
// the columns the table shows, and the filtered, sorted views the table pages through.

import { fieldsOf } from "./values.js";

export const UPDATED = "\u0000updated"; // the sort key of the "Updated" column (no field can be named so)
const MAX_COLUMNS = 8;
const collator = new Intl.Collator("en", { numeric: true, sensitivity: "base" });

export class Collection {
  constructor(name, storeId) {
    this.name = name;
    this.storeId = storeId;
    this.entries = new Map(); // object id -> {object, opened}; insertion order is the store's order
    this.total = null; // the server's count, when known
    this.complete = false; // every item of the store has been read (and opened)
    this.failed = null; // the error that stopped the background read
    this.deleted = new Set(); // ids deleted while the store was being read: a later page must not bring them back
    this.done = new Promise((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.done.catch(() => {}); // a failure is shown where it happens; waiters see it too
    this.version = 0; // moves on every change, so cached views know they are stale
    this.cache = { columns: null, sorted: null, sortKey: null, search: null, version: -1 };
  }

  get size() {
    return this.entries.size;
  }

  // How many items the store has, as far as this page knows.
  get known() {
    return this.complete ? this.entries.size : Math.max(this.total ?? 0, this.entries.size);
  }

  finish() {
    this.complete = true;
    this.settle.resolve(this);
  }

  fail(error) {
    this.failed = error;
    this.settle.reject(error);
  }

  get(id) {
    return this.entries.get(id);
  }

  // Add or replace an item; `opened` is null while it decrypts.
  put(object, opened = null) {
    const entry = this.entries.get(object.id);
    if (entry) {
      entry.object = object;
      entry.opened = opened;
    } else {
      this.entries.set(object.id, { object, opened });
    }
    this.changed();
    return this.entries.get(object.id);
  }

  remove(id) {
    const removed = this.entries.delete(id);
    if (removed) this.changed();
    return removed;
  }

  changed() {
    this.version += 1;
  }

  // How many items have been opened (decrypted, or found undecryptable).
  openedCount() {
    let opened = 0;
    for (const entry of this.entries.values()) if (entry.opened) opened += 1;
    return opened;
  }

  // The fields most items have (at least half of them; else the three most common), up to eight.
  columns() {
    this.refresh();
    if (this.cache.columns) return this.cache.columns;
    const counts = new Map();
    let objects = 0;
    for (const entry of this.entries.values()) {
      const fields = fieldsOf(entry.opened?.value);
      if (!fields) continue;
      objects += 1;
      for (const name of Object.keys(fields)) counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    const ranked = [...counts].sort((a, b) => b[1] - a[1]); // stable: ties keep first-seen order
    let chosen = ranked.filter(([, n]) => n * 2 >= objects);
    if (chosen.length === 0) chosen = ranked.slice(0, 3);
    // Shown in the order the fields first appear (a CSV's header order), not by how common they are.
    const names = new Set(chosen.slice(0, MAX_COLUMNS).map(([name]) => name));
    this.cache.columns = [...counts.keys()].filter((name) => names.has(name));
    return this.cache.columns;
  }

  // Every field any item has, in the order they first appear: the columns of a CSV export.
  allFields() {
    const names = new Set();
    for (const entry of this.entries.values()) {
      for (const name of Object.keys(fieldsOf(entry.opened?.value) ?? {})) names.add(name);
    }
    return [...names];
  }

  // The items matching `query` (case-insensitive substring of any value), in `sort` order.
  view(query, sort) {
    const needle = query.trim().toLowerCase();
    const sorted = this.sorted(sort);
    if (!needle) return sorted;
    // Typing narrows a search: a query that extends the last one only looks among the last one's matches.
    const last = this.cache.search;
    const among = last && last.from === sorted && needle.startsWith(last.needle) ? last.matches : sorted;
    const matches = among.filter((entry) => entry.opened?.ok && entry.opened.haystack.includes(needle));
    this.cache.search = { from: sorted, needle, matches };
    return matches;
  }

  sorted(sort) {
    this.refresh();
    const key = sort ? `${sort.field}\u0001${sort.direction}` : "";
    if (this.cache.sorted && this.cache.sortKey === key) return this.cache.sorted;
    let list = [...this.entries.values()];
    if (sort) {
      const keyed = list.map((entry) => [sortValue(entry, sort.field), entry]);
      const sign = sort.direction === "descending" ? -1 : 1;
      keyed.sort((a, b) => compareValues(a[0], b[0], sign));
      list = keyed.map(([, entry]) => entry);
    }
    this.cache.sorted = list;
    this.cache.sortKey = key;
    return list;
  }

  refresh() {
    if (this.cache.version === this.version) return;
    this.cache = { columns: null, sorted: null, sortKey: null, search: null, version: this.version };
  }
}

function sortValue(entry, field) {
  if (field === UPDATED) return entry.object.updated_at;
  const fields = fieldsOf(entry.opened?.value);
  const value = fields ? fields[field] : undefined;
  if (value === undefined || value === null || typeof value === "number") return value;
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

// Numbers before text, missing values last whichever the direction.
function compareValues(a, b, sign) {
  const aMissing = a === undefined || a === null || a === "";
  const bMissing = b === undefined || b === null || b === "";
  if (aMissing || bMissing) return aMissing === bMissing ? 0 : aMissing ? 1 : -1;
  if (typeof a === "number" && typeof b === "number") return sign * (a - b);
  if (typeof a === "number") return -sign;
  if (typeof b === "number") return sign;
  return sign * collator.compare(a, b);
}
