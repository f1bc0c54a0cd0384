// The Account tab: two-factor sign-in, the password, the data export, the audit log, deleting the account.
//
// Its fields are built when the tab opens and dropped when it closes: the page never holds a second
// field named like the sign-in form's "Email" or "Password" (a script or test asking for one finds one).

import { AuditLog } from "./audit.js";
import { AccountDeletion } from "./deletion.js";
import { $, busy, h, say } from "./dom.js";
import { download } from "./exporter.js";
import { TwoFactorPanel } from "./twofactor.js";

export class AccountView {
  constructor(app) {
    this.app = app;
    this.section = $("#account-view");
    this.body = $("#account-body");
    this.twoFactor = null;
  }

  async show() {
    const session = this.app.api.mode === "session";
    const audit = new AuditLog(this.app.api);
    this.twoFactor = session ? new TwoFactorPanel(this.app.api) : null;
    this.body.replaceChildren(
      ...(session ? [this.twoFactor.element, this.passwordForm()] : [sessionOnlyHint()]),
      this.exportCard(),
      audit.element,
      ...(session ? [new AccountDeletion(this.app).element] : []),
    );
    await Promise.all([this.twoFactor?.load(), audit.load()]);
  }

  hide() {
    this.twoFactor?.dispose();
    this.body.replaceChildren();
  }

  onEvent() {}

  passwordForm() {
    const status = h("p", { role: "status", hidden: true });
    const error = h("p", { class: "error", role: "alert", hidden: true });
    return h(
      "form",
      { class: "card", "aria-labelledby": "password-title", onsubmit: (event) => this.changePassword(event, status, error) },
      h("h3", { id: "password-title" }, "Change password"),
      h("label", { for: "current-password" }, "Current password"),
      passwordInput("current-password", "currentPassword", "current-password"),
      h("label", { for: "new-password" }, "New password"),
      passwordInput("new-password", "newPassword", "new-password"),
      h("button", { type: "submit" }, "Change password"),
      status,
      error,
    );
  }

  // Every session is revoked; the answer's new one replaces this page's cookie, so the page goes on
  // (its event streams, ended by the server, come back with the new cookie).
  async changePassword(event, status, error) {
    event.preventDefault();
    const form = event.target;
    say(status, "");
    await busy(form.querySelector("button"), error, async () => {
      const body = { currentPassword: form.currentPassword.value, newPassword: form.newPassword.value };
      await this.app.api.post("/auth/password", body);
      form.reset();
      say(status, "Password changed. Your other sessions are signed out; this page goes on with a new one.");
    });
  }

  exportCard() {
    const status = h("p", { role: "status", "aria-live": "polite", hidden: true });
    const error = h("p", { class: "error", role: "alert", hidden: true });
    const button = h("button", { type: "button", onclick: () => this.exportData(button, status, error) }, "Download the export");
    return h(
      "section",
      { class: "card", "aria-labelledby": "account-export-title" },
      h("h3", { id: "account-export-title" }, "Your data"),
      h("p", { class: "hint" }, "Every record as the server holds it (encrypted), with the keys that open it: a JSON object a line."),
      button,
      status,
      error,
    );
  }

  async exportData(button, status, error) {
    say(status, "Preparing the export…");
    const file = await busy(button, error, () => this.app.api.blob("/account/export"));
    if (!file) return say(status, "");
    download(`${this.app.user.email}-export.ndjson`, file, "application/x-ndjson");
    say(status, "Export downloaded.");
  }
}

function sessionOnlyHint() {
  return h(
    "p",
    { class: "hint" },
    "Two-factor sign-in, the password and deleting the account need a sign-in with your password, not an API key.",
  );
}

function passwordInput(id, name, autocomplete) {
  return h("input", { id, name, autocomplete, type: "password", required: true });
}
