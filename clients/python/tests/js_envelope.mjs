// The other side of the cross-language tests: JavaScript reads and writes the envelope.
//
// Two implementations, both from the JavaScript world: the console's own module
// (telentir/console/crypto.js, WebCrypto; copied next to this file as console_crypto.mjs by
// the test), and the TypeScript SDK's NodeCrypto provider (node:crypto: createCipheriv
// "aes-256-gcm", publicEncrypt with RSA_PKCS1_OAEP_PADDING and oaepHash "sha256").
//
// stdin: {"privateKey": b64url PKCS#8, "publicKey": b64url SPKI,
//         "open": [{"key", "iv", "content", "auth_tag"}], "seal": "<plaintext>",
//         "defaultKey": {"key", "iv"} (a store's default key record, as GET /keys/{id} answers it)}
// stdout: {"console": {"opened": [...], "sealed": {...}},
//          "sdk": {"opened": [...], "sealed": {...}, "sealedUnderDefault": {"content", "authTag"}}}
import * as nodeCrypto from "node:crypto";

// Node 18 (Debian bookworm's) has WebCrypto, but not yet as a global: the browser's name for it.
globalThis.crypto ??= nodeCrypto.webcrypto;
const webcrypto = await import("./console_crypto.mjs");

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString("utf-8"));

async function consoleSide() {
  const privateKey = await webcrypto.importPrivateKey(webcrypto.base64ToBytes(input.privateKey));
  const opened = [];
  for (const item of input.open) {
    const aes = await webcrypto.unwrapContentKey(privateKey, item.key);
    opened.push(await webcrypto.openObject(aes, item.iv, item.content, item.auth_tag));
  }
  const publicKey = await webcrypto.importPublicKey(webcrypto.base64ToBytes(input.publicKey));
  return { opened, sealed: await webcrypto.sealForServer(publicKey, input.seal) };
}

function sdkSide() {
  const der = (text) => Buffer.from(text.replace(/-/g, "+").replace(/_/g, "/"), "base64");
  const privateKey = nodeCrypto.createPrivateKey({ key: der(input.privateKey), format: "der", type: "pkcs8" });
  const publicKey = nodeCrypto.createPublicKey({ key: der(input.publicKey), format: "der", type: "spki" });
  const oaep = (key) => ({ key, padding: nodeCrypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" });
  const opened = input.open.map((item) => {
    const aes = nodeCrypto.privateDecrypt(oaep(privateKey), Buffer.from(item.key, "hex"));
    const decipher = nodeCrypto.createDecipheriv("aes-256-gcm", aes, Buffer.from(item.iv, "hex"));
    decipher.setAuthTag(Buffer.from(item.auth_tag, "hex"));
    return Buffer.concat([decipher.update(Buffer.from(item.content, "hex")), decipher.final()]).toString("utf-8");
  });
  // The SDK's createContext(): a random key and IV, the key wrapped for the server.
  const aes = nodeCrypto.randomBytes(32);
  const iv = nodeCrypto.randomBytes(12);
  const cipher = nodeCrypto.createCipheriv("aes-256-gcm", aes, iv);
  const content = Buffer.concat([cipher.update(Buffer.from(input.seal, "utf-8")), cipher.final()]);
  const sealed = {
    key: nodeCrypto.publicEncrypt(oaep(publicKey), aes).toString("hex"),
    iv: iv.toString("hex"),
    content: content.toString("hex"),
    authTag: cipher.getAuthTag().toString("hex"),
  };
  // The SDK's create() into a store: AES-GCM under the store's default key record (its key and IV).
  const defaultAes = nodeCrypto.privateDecrypt(oaep(privateKey), Buffer.from(input.defaultKey.key, "hex"));
  const underDefault = nodeCrypto.createCipheriv("aes-256-gcm", defaultAes, Buffer.from(input.defaultKey.iv, "hex"));
  const defaultContent = Buffer.concat([underDefault.update(Buffer.from(input.seal, "utf-8")), underDefault.final()]);
  const sealedUnderDefault = {
    content: defaultContent.toString("hex"),
    authTag: underDefault.getAuthTag().toString("hex"),
  };
  return { opened, sealed, sealedUnderDefault };
}

process.stdout.write(JSON.stringify({ console: await consoleSide(), sdk: sdkSide() }));
