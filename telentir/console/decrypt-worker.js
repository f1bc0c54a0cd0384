// A decrypt worker: unwraps content keys (RSA-OAEP) and opens objects (AES-GCM) off the page's main thread,
// so a whole store decrypts on every core while the page stays responsive. It holds the private keys the
// page gives it (non-extractable CryptoKeys, cloned), and answers plaintext only to the page.

import { openObject, unwrapContentKey } from "./crypto.js";
import { parseContent, searchText } from "./values.js";

const CACHE_LIMIT = 2000;
let privateKeys = new Map(); // server name -> CryptoKey
const contentKeys = new Map(); // key id -> Promise<CryptoKey>, for objects that share a key

self.onmessage = async ({ data }) => {
  if (data.type === "keys") {
    privateKeys = data.keys;
    contentKeys.clear();
    return;
  }
  const results = await Promise.all(data.items.map(open));
  self.postMessage({ id: data.id, results });
};

// {ok, value, haystack} or {ok: false, reason}; the reasons read as the page's own (vault.js).
async function open(item) {
  if (item.content === null) return { ok: false, reason: "Cannot decrypt: its content is gone." };
  let aes;
  try {
    aes = await contentKey(item.key);
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

function contentKey(record) {
  let entry = contentKeys.get(record.id);
  if (!entry) {
    const privateKey = privateKeys.get(record.server);
    if (!privateKey) {
      return Promise.reject(
        new Error(`its key is wrapped for server “${record.server}”, whose private key is not in this page.`),
      );
    }
    entry = unwrapContentKey(privateKey, record.key).catch(() => {
      contentKeys.delete(record.id);
      throw new Error(`its key does not unwrap with the private key of “${record.server}”.`);
    });
    if (contentKeys.size >= CACHE_LIMIT) contentKeys.delete(contentKeys.keys().next().value);
    contentKeys.set(record.id, entry);
  }
  return entry;
}
