// Ingestion and credits: start a connect job, watch its store fill, its summary; plan, usage, balance.

import { $, busy, count, h, money, say, show } from "./dom.js";

export class IngestView {
  constructor(app) {
    this.app = app;
    this.section = $("#ingest-view");
    this.job = null;
    const stores = Object.keys(app.vault.root.stores);
    $("#connect-repository").replaceChildren(...stores.map((name) => h("option", { value: name }, name)));
    $("#connect-form").addEventListener("submit", (event) => this.start(event));
    $("#topup").addEventListener("click", (event) => this.topUp(event));
    // Shown only when this server says Stripe is configured (GET /console/config.json).
    show($("#topup"), Boolean(app.config.stripe));
  }

  async show() {
    await this.loadBilling();
  }

  onEvent({ type, data }) {
    if (this.job?.running && type === "object_created" && data.related_object_id === this.job.storeId) {
      this.job.arrived += 1;
      this.renderJob();
    }
  }

  async loadBilling() {
    const error = $("#billing-error");
    try {
      const state = await this.app.api.get("/billing/state");
      const plan = state.plan;
      const facts = [
        ["Plan", plan ? `${plan.name} (${plan.key})` : "none (it left the catalog)"],
        ["Leads included each month", plan ? count(plan.includedLeads) : "—"],
        ["Leads used this month", count(state.usage.leads)],
        ["Price per lead past the allowance", plan ? `${plan.leadOverageUsdPerLead} USD` : "—"],
        ["Prepaid balance", money(state.balance.amount, state.balance.currency)],
        ["Card on file", state.hasCard ? "yes" : "no"],
      ];
      $("#billing").replaceChildren(...facts.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
      say(error, "");
    } catch (failure) {
      say(error, `The billing state cannot be read: ${failure.message}`);
    }
  }

  params() {
    const text = $("#connect-params").value.trim();
    let extra = {};
    if (text) {
      try {
        extra = JSON.parse(text);
      } catch (error) {
        throw new Error(`More parameters: this is not JSON (${error.message}).`);
      }
      if (typeof extra !== "object" || extra === null || Array.isArray(extra)) {
        throw new Error("More parameters must be a JSON object.");
      }
    }
    return { ...extra, credits: Number($("#connect-credits").value) };
  }

  async start(event) {
    event.preventDefault();
    const error = $("#connect-error");
    if (this.job?.running) return say(error, "A job is already running; wait for its summary.");
    let params;
    try {
      params = this.params();
    } catch (failure) {
      return say(error, failure.message);
    }
    say(error, "");
    const repository = $("#connect-repository").value;
    const path = $("#connect-path").value.trim();
    this.job = { repository, storeId: this.app.vault.root.stores[repository].id, arrived: 0, running: true };
    show($("#job-summary"), false);
    show($("#job-panel"));
    this.renderJob();
    // Watch the store fill while the request is open (the server answers when the job ends).
    await this.app.open("stores", false);
    if (this.app.views.stores.store !== repository) await this.app.views.stores.select(repository);
    await this.run(repository, path, params);
  }

  async run(repository, path, params) {
    const job = this.job;
    try {
      const answer = await this.app.api.request("POST", "/connect", { body: { repository, path, params } });
      job.id = answer.headers.get("X-Connect-Job");
      job.summary = await this.app.api.get(`/connect/jobs/${job.id}`);
    } catch (failure) {
      job.error = failure.message;
    } finally {
      job.running = false;
      this.renderJob();
      if (this.app.current === "ingest") this.loadBilling();
    }
  }

  renderJob() {
    const job = this.job;
    const status = $("#job-status");
    $("#job-panel").dataset.state = job.running ? "running" : job.error ? "failed" : job.summary.status;
    if (job.running) {
      status.textContent = `Running: ${count(job.arrived)} new items in ${job.repository} so far…`;
      return;
    }
    if (job.error) {
      status.textContent = `The job could not run: ${job.error}`;
      return;
    }
    const s = job.summary;
    status.textContent = `Job ${s.id} ${s.status}: ${count(s.created)} created, ${count(s.skipped)} skipped.`;
    const c = s.credits;
    const facts = [
      ["Status", s.status],
      ["Store", s.repository],
      ["Path", s.path],
      ["Created", count(s.created)],
      ["Skipped", count(s.skipped)],
      ["Leads requested / granted / used", `${c.requested} / ${c.granted} / ${c.used}`],
      ["From the monthly allowance", count(c.allowance_used)],
      ["Charged / refunded", `${money(c.charged, "usd")} / ${money(c.refunded, "usd")}`],
      ["Settlement", c.settlement],
      ["Error", s.error ?? "none"],
    ];
    $("#job-summary").replaceChildren(...facts.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
    show($("#job-summary"));
  }

  async topUp(event) {
    await busy(event.currentTarget, $("#billing-error"), async () => {
      const answer = await this.app.api.post(`/credits/add?returnTo=${encodeURIComponent(location.href)}`);
      if (!answer?.url) throw new Error("The server gave no payment page.");
      location.assign(answer.url);
    });
  }
}
