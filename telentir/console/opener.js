// Opening objects whose key records are known: unwrap each content key (RSA-OAEP, once per key id) and
// decrypt (AES-GCM). The decrypt workers run it; the page runs it itself when workers cannot start.

import { openObject, unwrapContentKey } from "./crypto.js";
import { parseContent, searchText } from "./values.js";

const CACHE_LIMIT = 2000;

export class Opener {
  constructor() {
    this.privateKeys = new Map(); // server name -> CryptoKey
    this.contentKeys = new Map(); // key id -> Promise<CryptoKey>, for objects that share a key
  }

  useKeys(keys) {
    this.privateKeys = keys;
    this.contentKeys.clear();
  }

  // {content, auth_tag, key: key record} -> {ok, value, haystack} or {ok: false, reason} (vault.js's reasons).
  async open(item) {
    if (item.content === null) return { ok: false, reason: "Cannot decrypt: its content is gone." };
    let aes;
    try {
      aes = await this.contentKey(item.key);
    } catch (error) {
      return { ok: false, reason: `Cannot decrypt: ${error.message}` };
    }
    let text;
    try {
      text = await openObject(aes, item.key.iv, item.content, item.auth_tag);
    } catch {
      return { ok: false, reason: "Cannot decrypt: the ciphertext does not authenticate under its key." };
    }
    const value = parseContent(text);
    return { ok: true, value, haystack: searchText(value) };
  }

  contentKey(record) {
    let entry = this.contentKeys.get(record.id);
    if (!entry) {
      const privateKey = this.privateKeys.get(record.server);
      if (!privateKey) {
        const reason = `its key is wrapped for server “${record.server}”, whose private key is not in this page.`;
        return Promise.reject(new Error(reason));
      }
      entry = unwrapContentKey(privateKey, record.key).catch(() => {
        this.contentKeys.delete(record.id);
        throw new Error(`its key does not unwrap with the private key of “${record.server}”.`);
      });
      if (this.contentKeys.size >= CACHE_LIMIT) this.contentKeys.delete(this.contentKeys.keys().next().value);
      this.contentKeys.set(record.id, entry);
    }
    return entry;
  }
}
