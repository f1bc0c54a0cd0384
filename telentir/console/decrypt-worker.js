// A decrypt worker: opens objects (opener.js) off the page's main thread, so a whole store decrypts on
// every core while the page stays responsive. It holds the private keys the page gives it
// (non-extractable CryptoKeys, cloned), and answers plaintext only to the page.

import { Opener } from "./opener.js";

const opener = new Opener();

self.onmessage = async ({ data }) => {
  if (data.type === "keys") {
    opener.useKeys(data.keys);
    return;
  }
  const results = await Promise.all(data.items.map((item) => opener.open(item)));
  self.postMessage({ id: data.id, results });
};
