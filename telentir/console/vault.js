// The signed-in user's keys, held in this page only: decrypt objects, encrypt new ones.
//
// Private keys: the custodial `default` one from GET /api/root, and BYOK ones generated
// here or pasted/picked by the person. All are non-extractable CryptoKeys in memory; a
// reload forgets the BYOK ones (the person gives them again).

import * as webcrypto from "./crypto.js";
import { Decryptors } from "./decryptors.js";
import { parseContent, searchText } from "./values.js";

// Key records the console made (one per object it wrote) carry this metadata, so that
// replacing or deleting that object can delete its key too. No other key is ever deleted.
export const CONSOLE_KEY_METADATA = { createdBy: "telentir-console" };
const CACHE_LIMIT = 5000;
const KEYS_PER_READ = 100; // GET /api/keys?ids= takes up to 100
const KEY_READS_AT_ONCE = 2; // the connections the event streams leave free

export class CannotDecrypt extends Error {}

// What open() answers for content this page wrote itself: its plaintext is known, nothing to decrypt.
export function openedValue(data, keyRecord) {
  const value = { json: true, data };
  return { ok: true, text: JSON.stringify(data), value, haystack: searchText(value), server: keyRecord.server, keyRecord };
}

export class Vault {
  constructor(api, root) {
    this.api = api;
    this.root = root;
    this.privateKeys = new Map(); // server name -> CryptoKey (RSA-OAEP, decrypt/unwrap)
    this.publicKeys = new Map(); // server name -> Promise<CryptoKey>
    this.contentKeys = new Map(); // key id -> Promise<{record, aes}>, most recently used last
    this.decryptors = new Decryptors();
  }

  async init() {
    const custodial = this.root.servers.default.privateKey;
    this.privateKeys.set("default", await webcrypto.importPrivateKey(webcrypto.base64ToBytes(custodial)));
    this.decryptors.useKeys(this.privateKeys);
    return this;
  }

  // Servers as the root lists them: default first, then the registered ones, oldest first.
  servers() {
    return Object.entries(this.root.servers).map(([name, server]) => ({
      name,
      publicKey: server.publicKey,
      deprecated: Boolean(server.deprecated),
      custodial: name === "default",
      hasPrivateKey: this.privateKeys.has(name),
    }));
  }

  addServer(name, publicKey) {
    this.root.servers[name] = { publicKey, deprecated: false };
  }

  hasPrivateKey(server) {
    return this.privateKeys.has(server);
  }

  publicKey(server) {
    const entry = this.root.servers[server];
    if (!entry) throw new Error(`No server named ${server}.`);
    if (!this.publicKeys.has(server)) {
      this.publicKeys.set(server, webcrypto.importPublicKey(webcrypto.base64ToBytes(entry.publicKey)));
    }
    return this.publicKeys.get(server);
  }

  // Hold a private key for `server` after checking that it matches the server's public key.
  async usePrivateKey(server, pkcs8) {
    let privateKey;
    try {
      privateKey = await webcrypto.importPrivateKey(pkcs8);
    } catch {
      throw new Error("This is not an RSA private key in PKCS#8 form.");
    }
    if (!(await webcrypto.keysMatch(await this.publicKey(server), privateKey))) {
      throw new Error(`This private key does not belong to server ${server}.`);
    }
    this.privateKeys.set(server, privateKey);
    this.forgetFailures();
  }

  holdPrivateKey(server, privateKey) {
    this.privateKeys.set(server, privateKey);
    this.forgetFailures();
  }

  forgetFailures() {
    this.decryptors.useKeys(this.privateKeys);
    for (const [id, entry] of this.contentKeys) if (entry.failed) this.contentKeys.delete(id);
  }

  // The key record and its unwrapped AES key, fetched and unwrapped once per key id.
  contentKey(keyId) {
    let entry = this.contentKeys.get(keyId);
    if (entry) {
      this.contentKeys.delete(keyId); // move to the end: most recently used
    } else {
      entry = { failed: false };
      entry.promise = this.unwrap(keyId).catch((error) => {
        entry.failed = true; // a later private key or a retry may succeed
        throw error;
      });
      if (this.contentKeys.size >= CACHE_LIMIT) this.contentKeys.delete(this.contentKeys.keys().next().value);
    }
    this.contentKeys.set(keyId, entry);
    return entry.promise;
  }

  async unwrap(keyId) {
    let record;
    try {
      record = await this.api.get(`/keys/${keyId}`);
    } catch (error) {
      if (error.status === 404) throw new CannotDecrypt("its key no longer exists.");
      throw error;
    }
    const privateKey = this.privateKeys.get(record.server);
    if (!privateKey) {
      throw new CannotDecrypt(`its key is wrapped for server “${record.server}”, whose private key is not in this page.`);
    }
    try {
      return { record, aes: await webcrypto.unwrapContentKey(privateKey, record.key) };
    } catch {
      throw new CannotDecrypt(`its key does not unwrap with the private key of “${record.server}”.`);
    }
  }

  // An object record (or an object_created payload) opened: {ok, value, text, server} or {ok: false, reason}.
  async open(object) {
    const keyId = object.key_id;
    try {
      if (object.content === null) throw new CannotDecrypt("its content is gone.");
      const { record, aes } = await this.contentKey(keyId);
      let text;
      try {
        text = await webcrypto.openObject(aes, record.iv, object.content, object.auth_tag);
      } catch {
        throw new CannotDecrypt("the ciphertext does not authenticate under its key.");
      }
      const value = parseContent(text);
      return { ok: true, text, value, haystack: searchText(value), server: record.server, keyRecord: record };
    } catch (error) {
      if (error instanceof CannotDecrypt) return { ok: false, reason: `Cannot decrypt: ${error.message}` };
      return { ok: false, reason: `Cannot decrypt now: ${error.message}`, retry: true };
    }
  }

  // Many objects opened at once (a whole store, for its search): their key records are read 100 per
  // request and the objects decrypted by the worker pool. Answers what open() answers, in order.
  // `records` (from keyRecords) may be given, read ahead while other objects decrypt.
  async openMany(objects, signal, records = null) {
    records ??= await this.keyRecords(objects.map((object) => object.key_id), signal);
    const known = objects.filter((object) => records.has(object.key_id));
    const results = await this.decryptors.open(
      known.map((object) => ({ content: object.content, auth_tag: object.auth_tag, key: records.get(object.key_id) })),
    );
    const opened = new Map(known.map((object, index) => [object, results[index]]));
    return objects.map((object) => {
      const result = opened.get(object);
      if (!result) return { ok: false, reason: "Cannot decrypt: its key no longer exists." };
      if (!result.ok) return result;
      const keyRecord = records.get(object.key_id);
      return { ...result, server: keyRecord.server, keyRecord };
    });
  }

  // key id -> key record, for the ids that are the caller's keys.
  async keyRecords(keyIds, signal) {
    const ids = [...new Set(keyIds.filter(Boolean))];
    const chunks = [];
    for (let i = 0; i < ids.length; i += KEYS_PER_READ) chunks.push(ids.slice(i, i + KEYS_PER_READ));
    const records = new Map();
    const reader = async () => {
      while (chunks.length) {
        const chunk = chunks.shift();
        for (const record of await this.api.get(`/keys?ids=${chunk.join(",")}`, { signal })) {
          records.set(record.id, record);
        }
      }
    };
    await Promise.all(Array.from({ length: KEY_READS_AT_ONCE }, reader));
    return records;
  }

  // The platform's current server and its public key (GET /api/server): what publishing encrypts for.
  platform() {
    if (!this.platformKey) {
      this.platformKey = this.api.get("/server").then(async (answer) => {
        const spki = answer.keys[answer.current]["application/pkix-spki"];
        return { name: answer.current, publicKey: await webcrypto.importPublicKey(webcrypto.base64ToBytes(spki)) };
      });
      this.platformKey.catch(() => (this.platformKey = null)); // ask again next time
    }
    return this.platformKey;
  }

  // Encrypt `value` as JSON for `server` under a fresh key: {keyId, keyRecord, content, authTag}.
  // Only the wrapped key, the IV and the ciphertext are sent. `publicKey` defaults to the server's in the root.
  async seal(server, value, publicKey = null) {
    const key = publicKey ?? (await this.publicKey(server));
    const sealed = await webcrypto.sealForServer(key, JSON.stringify(value));
    const record = await this.api.post("/keys", {
      server,
      key: sealed.key,
      iv: sealed.iv,
      metadata: CONSOLE_KEY_METADATA,
    });
    return { keyId: record.id, keyRecord: record, content: sealed.content, authTag: sealed.authTag };
  }

  // Delete a key the console made for one object, now that the object no longer uses it.
  async retireKey(keyRecord) {
    if (!keyRecord || keyRecord.metadata?.createdBy !== CONSOLE_KEY_METADATA.createdBy) return;
    this.contentKeys.delete(keyRecord.id);
    try {
      await this.api.del(`/keys/${keyRecord.id}`);
    } catch {
      // already gone, or a store's default key: nothing to undo
    }
  }
}
