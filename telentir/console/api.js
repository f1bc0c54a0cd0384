// The HTTP client of the console: one place that knows how requests are authenticated.
//
// Two modes (docs/protocol.md §1.2):
// - session: the HttpOnly `token` cookie set by POST /api/auth/login. Every request also
//   carries X-Requested-With, which the server requires of cookie-authenticated writes
//   (a page on another site cannot add it: the CSRF rule of §1.2).
// - API key: `Authorization: Bearer tlk_…`. The key cannot live in the cookie, so it stays
//   in this tab's sessionStorage (gone when the tab closes or on sign-out) and cookies are
//   not sent at all.

export const CSRF_HEADER = "X-Requested-With";
const API_KEY_SLOT = "telentir.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor(apiKey = null) {
    this.apiKey = apiKey;
    this.onUnauthorized = () => {};
  }

  static fromSession() {
    return new Api(sessionStorage.getItem(API_KEY_SLOT));
  }

  remember() {
    if (this.apiKey) sessionStorage.setItem(API_KEY_SLOT, this.apiKey);
  }

  static forget() {
    sessionStorage.removeItem(API_KEY_SLOT);
  }

  get mode() {
    return this.apiKey ? "apiKey" : "session";
  }

  headers(extra = {}) {
    const headers = { [CSRF_HEADER]: "telentir-console", ...extra };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    return headers;
  }

  // fetch options for /api: the caller adds method, body and signal.
  init(extra = {}) {
    return { headers: this.headers(extra), credentials: this.apiKey ? "omit" : "same-origin", cache: "no-store" };
  }

  // One request to /api + path; answers {data, headers, status}; throws ApiError.
  async request(method, path, { body, signal } = {}) {
    const init = this.init(body === undefined ? {} : { "Content-Type": "application/json" });
    init.method = method;
    init.signal = signal;
    if (body !== undefined) init.body = JSON.stringify(body);
    let response;
    try {
      response = await fetch(`/api${path}`, init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "network", "The server cannot be reached.");
    }
    if (!response.ok) throw await this.failure(response);
    const text = await response.text();
    return { data: text ? JSON.parse(text) : null, headers: response.headers, status: response.status };
  }

  async failure(response) {
    let body = {};
    try {
      body = await response.json();
    } catch {
      // not JSON: a proxy's page, say; the status says enough
    }
    const error = new ApiError(response.status, body.error || "http_error", body.message || response.statusText);
    if (response.status === 401) this.onUnauthorized(error);
    return error;
  }

  // GET /api + path as a Blob (the 2FA QR code, the account's export), with the credential; throws ApiError.
  async blob(path) {
    let response;
    try {
      response = await fetch(`/api${path}`, this.init());
    } catch {
      throw new ApiError(0, "network", "The server cannot be reached.");
    }
    if (!response.ok) throw await this.failure(response);
    return await response.blob();
  }

  async get(path, options) {
    return (await this.request("GET", path, options)).data;
  }

  async post(path, body, options) {
    return (await this.request("POST", path, { ...options, body })).data;
  }

  async patch(path, body, options) {
    return (await this.request("PATCH", path, { ...options, body })).data;
  }

  async del(path, options) {
    return (await this.request("DELETE", path, options)).data;
  }
}

// The limited token of a sign-in awaiting its second factor (POST /api/auth/2fa/verify). It goes as a
// bearer token, but with cookies on: the full session the answer sets as the cookie is kept.
export class PendingSignIn extends Api {
  constructor(token) {
    super();
    this.token = token;
  }

  headers(extra = {}) {
    return { ...super.headers(extra), Authorization: `Bearer ${this.token}` };
  }
}
