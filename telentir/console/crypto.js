// The envelope of docs/protocol.md §3–§4 on WebCrypto, and the codecs it needs.
//
// A key record holds an AES-256 key wrapped with RSA-OAEP (SHA-256, MGF1-SHA-256) for one
// server, and a 12-byte IV. An object holds AES-GCM ciphertext and its tag, kept apart on
// the wire (hex). Raw AES keys and private keys only ever exist here as CryptoKey objects
// marked non-extractable, except for the moments noted below.

const subtle = globalThis.crypto.subtle;
const RSA = { name: "RSA-OAEP", hash: "SHA-256" };
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

export const IV_BYTES = 12;
const TAG_BYTES = 16;

// --- codecs -----------------------------------------------------------------------------

export function hexToBytes(hex) {
  if (typeof hex !== "string" || hex.length % 2 !== 0) throw new Error("not hex");
  // Character codes, not parseInt per byte: a whole store's keys and ciphertexts go through here.
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i += 1) {
    const high = nibble(hex.charCodeAt(2 * i));
    const low = nibble(hex.charCodeAt(2 * i + 1));
    if (high < 0 || low < 0) throw new Error("not hex");
    bytes[i] = (high << 4) | low;
  }
  return bytes;
}

function nibble(code) {
  if (code >= 48 && code <= 57) return code - 48; // 0-9
  const lower = code | 32;
  return lower >= 97 && lower <= 102 ? lower - 87 : -1; // a-f, A-F
}

export function bytesToHex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

export function base64ToBytes(text) {
  // Standard or URL-safe alphabet, padded or not (the server's keys are base64url, unpadded).
  const core = text.replace(/\s+/g, "").replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  const binary = atob(core + "=".repeat((4 - (core.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

export function bytesToBase64(bytes) {
  let binary = "";
  for (const b of new Uint8Array(bytes)) binary += String.fromCharCode(b);
  return btoa(binary);
}

export function bytesToBase64url(bytes) {
  return bytesToBase64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// --- RSA keys ---------------------------------------------------------------------------

export function importPrivateKey(pkcs8) {
  // Non-extractable: once imported, not even this page's scripts can read the key back.
  return subtle.importKey("pkcs8", pkcs8, RSA, false, ["decrypt", "unwrapKey"]);
}

export function importPublicKey(spki) {
  return subtle.importKey("spki", spki, RSA, false, ["encrypt", "wrapKey"]);
}

// A private key as a person pastes or picks it: PEM ("BEGIN PRIVATE KEY", PKCS#8) or the
// base64/base64url DER the server hands out. Returns the DER bytes.
export function privateKeyBytes(text) {
  const trimmed = text.trim();
  if (trimmed.includes("BEGIN RSA PRIVATE KEY")) {
    throw new Error("This is a PKCS#1 key; convert it to PKCS#8 (openssl pkcs8 -topk8 -nocrypt).");
  }
  const pem = trimmed.match(/-----BEGIN PRIVATE KEY-----([\s\S]+?)-----END PRIVATE KEY-----/);
  try {
    return base64ToBytes(pem ? pem[1] : trimmed);
  } catch {
    throw new Error("This is not a PEM or base64 PKCS#8 private key.");
  }
}

export function pemFromPkcs8(der) {
  const lines = bytesToBase64(der).match(/.{1,64}/g);
  return `-----BEGIN PRIVATE KEY-----\n${lines.join("\n")}\n-----END PRIVATE KEY-----\n`;
}

// Does `privateKey` belong to `publicKey`? A throwaway secret wrapped with one must unwrap with the other.
export async function keysMatch(publicKey, privateKey) {
  const probe = globalThis.crypto.getRandomValues(new Uint8Array(32));
  try {
    const sealed = await subtle.encrypt(RSA, publicKey, probe);
    const opened = new Uint8Array(await subtle.decrypt(RSA, privateKey, sealed));
    return opened.length === probe.length && opened.every((b, i) => b === probe[i]);
  } catch {
    return false;
  }
}

// An RSA-2048 key pair for a BYOK server, made in this browser. The private half is exported
// once, as PKCS#8 bytes, so the person can download it; the page keeps a non-extractable copy.
export async function generateServerKeys() {
  const pair = await subtle.generateKey(
    { ...RSA, modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]) },
    true,
    ["encrypt", "decrypt"],
  );
  const spki = new Uint8Array(await subtle.exportKey("spki", pair.publicKey));
  const pkcs8 = new Uint8Array(await subtle.exportKey("pkcs8", pair.privateKey));
  return { publicKey: bytesToBase64url(spki), pkcs8, privateKey: await importPrivateKey(pkcs8) };
}

// --- content keys and objects -------------------------------------------------------------

// The AES key of a key record, unwrapped straight into a non-extractable AES-GCM key.
export function unwrapContentKey(privateKey, wrappedHex) {
  return subtle.unwrapKey("raw", hexToBytes(wrappedHex), privateKey, RSA, { name: "AES-GCM" }, false, ["decrypt"]);
}

// Plaintext (UTF-8 text) of an object. WebCrypto wants ciphertext||tag in one buffer; the
// wire keeps the tag apart, and it may be 12 to 16 bytes long.
export async function openObject(aesKey, ivHex, contentHex, tagHex) {
  const content = hexToBytes(contentHex);
  const tag = hexToBytes(tagHex);
  const sealed = new Uint8Array(content.length + tag.length);
  sealed.set(content);
  sealed.set(tag, content.length);
  const params = { name: "AES-GCM", iv: hexToBytes(ivHex), tagLength: tag.length * 8 };
  return decoder.decode(await subtle.decrypt(params, aesKey, sealed));
}

// Encrypt `plaintext` for a server under a FRESH AES-256 key and IV. GCM must never see one
// key and IV twice with different plaintexts (that leaks their XOR and the authentication
// key), and a key record holds a single IV: so every write gets a new key record, exactly
// as the server's own ingestion does. The raw key leaves this function only wrapped.
export async function sealForServer(publicKey, plaintext) {
  // Extractable only so that wrapKey can read it; the object goes out of scope right after.
  const aes = await subtle.generateKey({ name: "AES-GCM", length: 256 }, true, ["encrypt"]);
  const iv = globalThis.crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const sealed = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv }, aes, encoder.encode(plaintext)));
  const wrapped = new Uint8Array(await subtle.wrapKey("raw", aes, publicKey, RSA));
  return {
    key: bytesToHex(wrapped),
    iv: bytesToHex(iv),
    content: bytesToHex(sealed.subarray(0, sealed.length - TAG_BYTES)),
    authTag: bytesToHex(sealed.subarray(sealed.length - TAG_BYTES)),
  };
}
