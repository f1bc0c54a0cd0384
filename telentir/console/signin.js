// Sign-in: email and password (the session cookie), the two-factor code and the phone step when needed,
// or an API key.

import { Api, PendingSignIn } from "./api.js";
import { $, busy, h, say, show } from "./dom.js";

export class SignIn {
  constructor(app) {
    this.app = app;
    this.api = new Api();
    this.pending = null; // the limited token of a sign-in awaiting its code
    this.section = $("#signin-view");
    this.error = $("#signin-error");
    $("#login-form").addEventListener("submit", (event) => this.login(event));
    $("#phone-send").addEventListener("click", (event) => this.sendCode(event));
    $("#phone-form").addEventListener("submit", (event) => this.verify(event));
    $("#twofa-form").addEventListener("submit", (event) => this.verifyCode(event));
    $("#apikey-form").addEventListener("submit", (event) => this.useApiKey(event));
  }

  show(api, step) {
    this.api = api;
    show(this.section);
    this.step(step);
  }

  hide() {
    show(this.section, false);
  }

  step(step) {
    show($("#login-form"), step === "login");
    show($("#apikey-details"), step === "login");
    show($("#phone-form"), step === "phone");
    show($("#twofa-form"), step === "twofa");
    // The code field exists only at this step: the page holds one field named like "Code" at a time.
    $("#twofa-slot").replaceChildren(...(step === "twofa" ? codeField() : []));
    const focus = { phone: "#phone-send", twofa: "#twofa-code" }[step] ?? "#login-email";
    $(focus).focus();
  }

  async login(event) {
    event.preventDefault();
    const form = event.target;
    const api = new Api();
    await busy(form.querySelector("button"), this.error, async () => {
      const answer = await api.post("/auth/login", { email: form.email.value, password: form.password.value });
      form.password.value = "";
      if (answer.status === "2fa_required") {
        this.pending = new PendingSignIn(answer.token);
        return this.step("twofa");
      }
      await this.continue(api, answer.status);
    });
  }

  async continue(api, status) {
    this.api = api;
    if (status !== "ok") return this.step("phone");
    const auth = await api.get("/auth");
    await this.app.enter(api, auth.auth);
  }

  async sendCode(event) {
    await busy(event.target, this.error, async () => {
      await this.api.post("/auth/phone/send");
      say(this.error, "A code is on its way to your phone.");
      $("#phone-code").focus();
    });
  }

  async verify(event) {
    event.preventDefault();
    const form = event.target;
    await busy(form.querySelector("button[type=submit]"), this.error, async () => {
      await this.api.post("/auth/phone/verify", { code: form.code.value.trim() });
      await this.continue(this.api, "ok");
    });
  }

  // The TOTP or recovery code: the limited token becomes a full session (the cookie), then on as usual.
  async verifyCode(event) {
    event.preventDefault();
    const form = event.target;
    await busy(form.querySelector("button[type=submit]"), this.error, async () => {
      await this.pending.post("/auth/2fa/verify", { code: form.code.value.trim() });
      this.pending = null;
      const session = new Api();
      const auth = await session.get("/auth");
      await this.continue(session, auth.status);
    });
  }

  async useApiKey(event) {
    event.preventDefault();
    const form = event.target;
    const api = new Api(form.key.value.trim());
    await busy(form.querySelector("button"), this.error, async () => {
      const auth = await api.get("/auth");
      api.remember();
      form.key.value = "";
      await this.continue(api, auth.status);
    });
  }
}

function codeField() {
  return [
    h("label", { for: "twofa-code" }, "Authentication code"),
    h("input", {
      id: "twofa-code",
      name: "code",
      autocomplete: "one-time-code",
      spellcheck: "false",
      maxlength: "64",
      required: true,
    }),
  ];
}
