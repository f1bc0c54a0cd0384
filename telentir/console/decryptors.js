// A small pool of decrypt workers (decrypt-worker.js): bulk opening of objects whose key records are known.
// Should workers fail to start (or die), the page opens the objects itself (opener.js), more slowly.

import { Opener } from "./opener.js";

const BATCH = 50; // objects per message: enough to amortise a message, small enough to spread over the workers

export class Decryptors {
  constructor(size = Math.max(2, Math.min(4, navigator.hardwareConcurrency || 2))) {
    this.size = size;
    this.workers = [];
    this.pending = new Map(); // message id -> {resolve, reject}
    this.next = 0;
    this.keys = new Map();
    this.broken = false; // a worker failed: open in the page from now on
    this.local = new Opener();
  }

  start() {
    if (this.workers.length || this.broken) return;
    for (let n = 0; n < this.size; n += 1) {
      let worker;
      try {
        worker = new Worker(new URL("./decrypt-worker.js", import.meta.url), { type: "module" });
      } catch {
        this.broken = true;
        return;
      }
      worker.onmessage = ({ data }) => this.answered(data);
      worker.onerror = (event) => this.failed(worker, event);
      worker.postMessage({ type: "keys", keys: this.keys });
      this.workers.push({ worker, load: 0, ids: new Set() });
    }
  }

  // The private keys changed (one was added): every worker gets the new set.
  useKeys(keys) {
    this.keys = new Map(keys);
    this.local.useKeys(this.keys);
    for (const { worker } of this.workers) worker.postMessage({ type: "keys", keys: this.keys });
  }

  // items: [{content, auth_tag, key: key record}] -> results in the same order.
  async open(items) {
    this.start();
    if (this.broken) return Promise.all(items.map((item) => this.local.open(item)));
    const batches = [];
    for (let i = 0; i < items.length; i += BATCH) batches.push(this.send(items.slice(i, i + BATCH)));
    return (await Promise.all(batches)).flat();
  }

  send(items) {
    if (this.broken) return Promise.all(items.map((item) => this.local.open(item)));
    const slot = this.workers.reduce((best, w) => (w.load < best.load ? w : best));
    const id = (this.next += 1);
    slot.load += items.length;
    slot.ids.add(id);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, slot, size: items.length, items });
      slot.worker.postMessage({ type: "open", id, items });
    });
  }

  answered({ id, results }) {
    const entry = this.pending.get(id);
    if (!entry) return;
    this.pending.delete(id);
    entry.slot.load -= entry.size;
    entry.slot.ids.delete(id);
    entry.resolve(results);
  }

  // A worker died or never started: its batches, and all later ones, are opened in the page instead.
  failed(worker, event) {
    event.preventDefault?.();
    this.broken = true;
    for (const { worker: other } of this.workers) other.terminate();
    for (const [id, entry] of this.pending) {
      this.pending.delete(id);
      entry.resolve(Promise.all(entry.items.map((item) => this.local.open(item))));
    }
    this.workers = [];
  }
}
