// Import…: a CSV file (with a header row), a JSON array or NDJSON becomes items of the open store. The whole
// file is read and checked first (a bad file creates nothing); then each record is encrypted in this page
// under a fresh key and IV (vault.seal) and created, a few at a time, with progress and a Cancel button.

import { CsvError, parseCsv } from "./csv.js";
import { CONSOLE_KEY_METADATA } from "./vault.js";
import { $, count, say, show } from "./dom.js";

// Records written at once: each is two requests (its key, then the object), and the event streams leave
// the page two connections; four keeps both busy without queueing a file's worth of requests.
const AT_ONCE = 4;
const SERVER = "default"; // imports are encrypted for the custodial server, like the editor's default
// A busy server answers 429 or 503 and changes nothing: such a request is tried again, a little later.
const RETRIES = 3;
const RETRY_STATUSES = new Set([429, 503]);
const RETRY_DELAY_MS = 1000;

export class ImportError extends Error {}

export class Importer {
  constructor(view) {
    this.view = view;
    this.file = $("#import-file");
    this.button = $("#import-button");
    this.controller = null;
    this.button.addEventListener("click", () => this.file.click());
    this.file.addEventListener("change", () => this.picked());
    $("#import-cancel").addEventListener("click", () => this.controller?.abort());
  }

  async picked() {
    const file = this.file.files[0];
    this.file.value = ""; // the same file can be picked again
    if (file) await this.run(file);
  }

  async run(file) {
    show($("#import-panel"));
    say($("#import-error"), "");
    let records;
    try {
      records = parseImport(await file.text(), file.name);
    } catch (error) {
      this.progress(0, 1, "");
      $("#import-status").textContent = "";
      say($("#import-error"), `${file.name} cannot be imported: ${error.message} Nothing was created.`);
      this.button.focus();
      return;
    }
    this.controller = new AbortController();
    this.button.disabled = true;
    show($("#import-cancel"));
    $("#import-cancel").focus();
    try {
      await this.view.opened; // a file picked before the first store opens goes into that store
      const collection = this.view.collection;
      const outcome = await this.create(collection, records, this.controller.signal);
      this.progress(outcome.done, records.length, summary(outcome, records.length));
    } finally {
      this.controller = null;
      this.button.disabled = false;
      show($("#import-cancel"), false);
      this.button.focus();
    }
  }

  // Create every record, AT_ONCE at a time; stops starting new ones once cancelled.
  async create(collection, records, signal) {
    const outcome = { created: 0, failed: 0, firstError: null, done: 0, cancelled: false };
    let next = 0;
    this.progress(0, records.length, `Importing ${count(records.length)} items into ${collection.name}…`);
    const worker = async () => {
      while (next < records.length && !signal.aborted) {
        const index = next++;
        try {
          await this.createOne(collection, records[index].value, signal);
          outcome.created += 1;
        } catch (error) {
          if (error.name === "AbortError") break;
          outcome.failed += 1;
          outcome.firstError ??= `${records[index].label}: ${error.message}`;
        }
        outcome.done += 1;
        this.progress(outcome.done, records.length, `Importing: ${count(outcome.done)} of ${count(records.length)}…`);
      }
    };
    await Promise.all(Array.from({ length: AT_ONCE }, worker));
    outcome.cancelled = signal.aborted;
    return outcome;
  }

  async createOne(collection, value, signal) {
    const { api, vault } = this.view.app;
    const sealed = await retrying(() => vault.seal(SERVER, value), signal);
    const known = { value, keyRecord: sealed.keyRecord };
    this.view.expect(sealed.keyId, known);
    let record;
    try {
      const body = { keyId: sealed.keyId, content: sealed.content, authTag: sealed.authTag, relatedId: collection.storeId };
      record = await retrying(() => api.post("/objects", body, { signal }), signal);
    } catch (error) {
      // Not created (or not known to be): its key is no one's. An aborted request may still have landed;
      // its event then shows the item, under a key that is kept.
      if (error.name !== "AbortError") await vault.retireKey({ id: sealed.keyId, metadata: CONSOLE_KEY_METADATA });
      throw error;
    } finally {
      this.view.unexpect(sealed.keyId);
    }
    if (collection === this.view.collection) this.view.ownWrite(record, known);
  }

  progress(done, total, text) {
    const bar = $("#import-progress");
    bar.max = Math.max(total, 1);
    bar.value = done;
    if (text) $("#import-status").textContent = text;
  }
}

async function retrying(request, signal) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await request();
    } catch (error) {
      if (attempt > RETRIES || !RETRY_STATUSES.has(error.status) || signal.aborted) throw error;
      await new Promise((resolve) => setTimeout(resolve, RETRY_DELAY_MS * attempt));
    }
  }
}

function plural(n) {
  return `${count(n)} ${n === 1 ? "item" : "items"}`;
}

// "Imported 120 items", and what failed or was cancelled.
export function summary({ created, failed, firstError, cancelled }, total) {
  let text = `Imported ${plural(created)}`;
  if (cancelled) text = `Import cancelled: imported ${count(created)} of ${plural(total)}`;
  if (failed) text += `; ${count(failed)} failed (first error: ${firstError})`;
  return text;
}

// The records of a file: [{value, label}], or an ImportError saying what is wrong with it.
export function parseImport(text, name = "") {
  const lower = name.toLowerCase();
  const first = text.replace(/^\uFEFF/, "").trimStart()[0];
  if (first === undefined) throw new ImportError("The file is empty.");
  const json = lower.endsWith(".json") || lower.endsWith(".ndjson") || lower.endsWith(".jsonl");
  if (json || ((first === "[" || first === "{") && !lower.endsWith(".csv"))) return parseJsonItems(text);
  try {
    return parseCsv(text).map((value, index) => ({ value, label: `row ${index + 2}` }));
  } catch (error) {
    if (error instanceof CsvError) throw new ImportError(error.message);
    throw error;
  }
}

// A JSON array of objects, or NDJSON (one object per line).
function parseJsonItems(text) {
  const body = text.replace(/^\uFEFF/, "").trim();
  if (body.startsWith("[")) {
    let items;
    try {
      items = JSON.parse(body);
    } catch (error) {
      throw new ImportError(`This is not JSON (${error.message}).`);
    }
    if (!Array.isArray(items) || items.length === 0) throw new ImportError("The JSON array has no items.");
    return items.map((value, index) => objectItem(value, `item ${index + 1}`));
  }
  const records = [];
  body.split(/\r?\n/).forEach((line, index) => {
    if (!line.trim()) return;
    let value;
    try {
      value = JSON.parse(line);
    } catch {
      throw new ImportError(`Line ${index + 1} is not JSON: a JSON file holds an array, an NDJSON file one object per line.`);
    }
    records.push(objectItem(value, `line ${index + 1}`));
  });
  if (records.length === 0) throw new ImportError("The file has no items.");
  return records;
}

function objectItem(value, label) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ImportError(`${label[0].toUpperCase()}${label.slice(1)} is not a JSON object.`);
  }
  return { value, label };
}
