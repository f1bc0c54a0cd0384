// Sign-in: email and password (the session cookie), the phone step when needed, or an API key.

import { Api } from "./api.js";
import { $, busy, say, show } from "./dom.js";

export class SignIn {
  constructor(app) {
    this.app = app;
    this.api = new Api();
    this.section = $("#signin-view");
    this.error = $("#signin-error");
    $("#login-form").addEventListener("submit", (event) => this.login(event));
    $("#phone-send").addEventListener("click", (event) => this.sendCode(event));
    $("#phone-form").addEventListener("submit", (event) => this.verify(event));
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
    (step === "phone" ? $("#phone-send") : $("#login-email")).focus();
  }

  async login(event) {
    event.preventDefault();
    const form = event.target;
    const api = new Api();
    await busy(form.querySelector("button"), this.error, async () => {
      const answer = await api.post("/auth/login", { email: form.email.value, password: form.password.value });
      form.password.value = "";
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
