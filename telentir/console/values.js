// Decrypted values as the table, the search and the CSV see them: pure functions, also used by the decrypt workers.

const COMPACT_CHARS = 80; // nested values: a glimpse, the detail view has the rest
const TEXT_CHARS = 160;

// An item's content: {json: true, data} when its text is JSON, else {json: false, data: text}.
export function parseContent(text) {
  try {
    return { json: true, data: JSON.parse(text) };
  } catch {
    return { json: false, data: text };
  }
}

// The top-level fields of an item's content (none when it is not a JSON object).
export function fieldsOf(value) {
  const data = value?.data;
  return value?.json && data !== null && typeof data === "object" && !Array.isArray(data) ? data : null;
}

// Every scalar value of a content, nested ones included, lower-cased and joined: what a search looks in.
export function searchText(value) {
  const parts = [];
  const walk = (node) => {
    if (node === null || node === undefined) return;
    if (typeof node === "object") {
      for (const child of Array.isArray(node) ? node : Object.values(node)) walk(child);
    } else {
      parts.push(String(node));
    }
  };
  walk(value.data);
  return parts.join("\n").toLowerCase();
}

// One value in one table cell: scalars as they are, nested values as short JSON.
export function compact(value) {
  if (value === undefined) return "";
  if (value === null) return "null";
  if (typeof value !== "object") return shorten(String(value), TEXT_CHARS);
  if (Array.isArray(value) && value.every((v) => v === null || typeof v !== "object")) {
    return shorten(value.map((v) => String(v)).join(", "));
  }
  return shorten(JSON.stringify(value));
}

function shorten(text, limit = COMPACT_CHARS) {
  return text.length > limit ? `${text.slice(0, limit - 1)}…` : text;
}

// A value as a CSV cell holds it: strings as they are, nested values as JSON, nothing for a missing one.
export function cellText(value) {
  if (value === undefined) return "";
  if (value !== null && typeof value === "object") return JSON.stringify(value);
  return String(value);
}
