// Two-factor sign-in in the Account tab: set up (the QR code and the secret), enable (the recovery codes,
// shown once), turn off. The QR code is the server's SVG (GET /api/auth/2fa/qr.svg), fetched with the
// session and shown from a blob: URL, so the page draws nothing itself and the CSP stays strict.

import { busy, h, say } from "./dom.js";

export class TwoFactorPanel {
  constructor(api) {
    this.api = api;
    this.qrUrl = null;
    this.body = h("div");
    this.error = h("p", { class: "error", role: "alert", hidden: true });
    this.element = h(
      "section",
      { class: "card", "aria-labelledby": "twofa-title" },
      h("h3", { id: "twofa-title" }, "Two-factor sign-in"),
      this.body,
      this.error,
    );
  }

  async load() {
    const { auth } = await this.api.get("/auth");
    this.render(auth.twoFactorEnabled);
  }

  // The state's controls, after `extra` (the recovery codes, once; a status line).
  render(enabled, ...extra) {
    this.dispose();
    say(this.error, "");
    this.body.replaceChildren(...extra, ...(enabled ? this.onView() : this.offView()));
  }

  offView() {
    const onclick = () => busy(start, this.error, () => this.setup());
    const start = h("button", { type: "button", onclick }, "Turn on two-factor sign-in");
    return [h("p", {}, "Off: signing in asks for your password only."), start];
  }

  onView() {
    return [
      h("p", {}, "On: signing in also asks for a code from your authenticator app (or a recovery code)."),
      this.codeForm("Turn off", "Code from your app, or a recovery code", (code) => this.disable(code)),
    ];
  }

  async setup() {
    const { secret } = await this.api.post("/auth/2fa/setup");
    const qr = await this.api.blob("/auth/2fa/qr.svg");
    this.dispose();
    this.qrUrl = URL.createObjectURL(qr);
    this.body.replaceChildren(
      h("p", {}, "Scan this QR code with an authenticator app, or type the secret into it, then enter the code it shows."),
      h("img", { class: "qr", src: this.qrUrl, alt: "QR code of the two-factor secret", width: "164", height: "164" }),
      h("p", {}, "Secret: ", h("code", { id: "twofa-secret", class: "secret" }, secret)),
      this.codeForm("Enable", "Code from your app", (code) => this.enable(code)),
    );
  }

  async enable(code) {
    const { recoveryCodes } = await this.api.post("/auth/2fa/enable", { code });
    this.render(true, recoveryList(recoveryCodes));
  }

  async disable(code) {
    await this.api.post("/auth/2fa/disable", { code });
    this.render(false, h("p", { role: "status" }, "Two-factor sign-in is off."));
  }

  codeForm(action, label, submit) {
    const input = h("input", {
      id: "account-code",
      name: "code",
      autocomplete: "one-time-code",
      spellcheck: "false",
      maxlength: "64",
      required: true,
    });
    const button = h("button", { type: "submit" }, action);
    const onsubmit = (event) => {
      event.preventDefault();
      busy(button, this.error, () => submit(input.value.trim()));
    };
    return h("form", { onsubmit }, h("label", { for: input.id }, label), input, button);
  }

  dispose() {
    if (this.qrUrl) URL.revokeObjectURL(this.qrUrl);
    this.qrUrl = null;
  }
}

function recoveryList(codes) {
  return h(
    "div",
    { class: "recovery" },
    h(
      "p",
      { role: "status" },
      h("strong", {}, "Two-factor sign-in is on. Save these recovery codes now:"),
      " each signs you in once without the app, and they are not shown again.",
    ),
    h("ol", { class: "codes", "aria-label": "Recovery codes" }, codes.map((code) => h("li", {}, h("code", {}, code)))),
  );
}
