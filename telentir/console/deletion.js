// Deleting the account: a dialog that asks for the email typed out, the password, and a code when
// two-factor sign-in is on (DELETE /api/account). Built when opened, removed when closed.

import { busy, h } from "./dom.js";

export class AccountDeletion {
  constructor(app) {
    this.app = app;
    this.opener = h("button", { type: "button", class: "danger", onclick: () => this.open() }, "Delete account…");
    this.element = h(
      "section",
      { class: "card", "aria-labelledby": "delete-title" },
      h("h3", { id: "delete-title" }, "Delete the account"),
      h(
        "p",
        { class: "hint" },
        "Everything goes, for good: the stores and their records, keys, servers, publications and API keys. " +
          "Download the export first to keep a copy.",
      ),
      this.opener,
    );
  }

  async open() {
    const { auth } = await this.app.api.get("/auth");
    const dialog = h("dialog", { id: "delete-account", "aria-labelledby": "delete-dialog-title" }, this.form(auth));
    dialog.addEventListener("close", () => {
      dialog.remove();
      this.opener.focus();
    });
    document.body.append(dialog);
    dialog.showModal();
  }

  form(auth) {
    const error = h("p", { class: "error", role: "alert", hidden: true });
    const confirm = h("input", { id: "delete-confirm", name: "confirm", autocomplete: "off", spellcheck: "false", required: true });
    const submit = h("button", { type: "submit", class: "danger", disabled: true }, "Delete my account");
    // Typed confirmation: the button wakes only once the address is typed exactly.
    confirm.addEventListener("input", () => {
      submit.disabled = confirm.value.trim() !== auth.email;
    });
    const code = auth.twoFactorEnabled
      ? [
          h("label", { for: "delete-code" }, "Code from your app, or a recovery code"),
          h("input", { id: "delete-code", name: "code", autocomplete: "one-time-code", required: true, maxlength: "64" }),
        ]
      : [];
    const onsubmit = (event) => {
      event.preventDefault();
      busy(submit, error, () => this.erase(event.target, auth.twoFactorEnabled));
    };
    return h(
      "form",
      { onsubmit },
      h("h2", { id: "delete-dialog-title" }, "Delete the account"),
      h("p", {}, "This cannot be undone. To confirm, type ", h("strong", {}, auth.email), "."),
      h("label", { for: "delete-confirm" }, "Type the account's address to confirm"),
      confirm,
      h("label", { for: "delete-password" }, "Your password"),
      h("input", { id: "delete-password", name: "password", type: "password", autocomplete: "current-password", required: true }),
      ...code,
      error,
      h(
        "div",
        { class: "actions" },
        submit,
        h("button", { type: "button", onclick: (event) => event.target.closest("dialog").close() }, "Cancel"),
      ),
    );
  }

  async erase(form, twoFactor) {
    const body = { password: form.password.value };
    if (twoFactor) body.code = form.code.value.trim();
    await this.app.api.del("/account", { body });
    this.app.accountDeleted();
  }
}
