// Small DOM helpers: elements are built node by node, so nothing the server sends is ever parsed as HTML.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

export function show(element, visible = true) {
  element.hidden = !visible;
}

export function count(n) {
  return Number(n).toLocaleString("en");
}

export function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, " UTC") : "";
}

export function money(amount, currency) {
  return `${(amount / 100).toFixed(2)} ${String(currency).toUpperCase()}`;
}

// Show a message in an element (role=alert or status); empty text hides it.
export function say(element, text) {
  element.textContent = text || "";
  element.hidden = !text;
}

// Run an async action from a button or form, disabling it meanwhile and reporting failures in `out`.
export async function busy(control, out, action) {
  control.disabled = true;
  say(out, "");
  try {
    return await action();
  } catch (error) {
    if (error.name !== "AbortError") say(out, error.message || String(error));
    return undefined;
  } finally {
    control.disabled = false;
  }
}
