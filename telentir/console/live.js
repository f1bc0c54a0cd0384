// Live event streams (docs/protocol.md §6), read with a streaming fetch as the SDK does.
//
// fetch rather than EventSource: it can send `Authorization` (API-key mode) and
// `Last-Event-ID` itself, so both sign-in modes share one code path and the console decides
// when and how to reconnect. Each stream remembers the last id it saw and resumes from
// it, so events that happen while the connection is down are replayed, not lost.
//
// A browser keeps at most six HTTP/1.1 connections per server and each stream holds one:
// the console opens four (created, updated, deleted, publish) for the whole session.

const MAX_DELAY_MS = 30000;

// Server-Sent Events framing (the WHATWG rules): fields per line, a blank line ends a frame.
export class SseParser {
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.frame = { id: null, event: "", data: [], retry: null };
  }

  push(text) {
    this.buffer += text;
    // A trailing \r may be the first half of \r\n: leave it, and its line, for the next chunk.
    const end = this.buffer.endsWith("\r") ? this.buffer.length - 1 : this.buffer.length;
    const lines = this.buffer.slice(0, end).split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + this.buffer.slice(end); // the last piece is an unfinished line
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      const { id, event, data, retry } = this.frame;
      if (data.length || event || id !== null || retry !== null) this.onFrame({ id, event, data: data.join("\n"), retry });
      this.reset();
      return;
    }
    if (line.startsWith(":")) return; // a comment: the server's keep-alive
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.frame.data.push(value);
    else if (field === "event") this.frame.event = value;
    else if (field === "id" && !value.includes("\0")) this.frame.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.frame.retry = Number(value);
  }
}

// One resumable stream of one event type. States: connecting, live, reconnecting, stopped.
export class EventStream {
  constructor(api, type, { onEvent, onState }) {
    this.api = api;
    this.type = type;
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastId = null;
    this.retryMs = 3000;
    this.failures = 0;
    this.controller = null;
    this.stopped = false;
    this.state = "connecting";
  }

  start() {
    this.loop();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
    this.setState("stopped");
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.onState(this);
  }

  async loop() {
    while (!this.stopped) {
      try {
        await this.follow();
        this.failures = 0; // the server ended a healthy stream: come back after `retry`
      } catch (error) {
        if (this.stopped) return;
        if (error.status === 401) return this.stop();
        this.failures += 1;
      }
      if (this.stopped) return;
      this.setState("reconnecting");
      await sleep(this.delay());
    }
  }

  delay() {
    // The server's `retry:` first, doubling while the server stays unreachable.
    const backoff = this.retryMs * 2 ** Math.min(Math.max(this.failures - 1, 0), 4);
    return Math.min(backoff, MAX_DELAY_MS) * (0.8 + Math.random() * 0.4);
  }

  async follow() {
    this.controller = new AbortController();
    const extra = { Accept: "text/event-stream" };
    if (this.lastId !== null) extra["Last-Event-ID"] = this.lastId;
    const init = { ...this.api.init(extra), signal: this.controller.signal };
    const response = await fetch(`/api/events/${this.type}`, init);
    if (!response.ok) throw await this.api.failure(response);
    this.setState("live");
    this.failures = 0;
    const parser = new SseParser((frame) => this.frame(frame));
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      parser.push(value);
    }
  }

  frame({ id, event, data, retry }) {
    if (retry !== null) this.retryMs = retry;
    if (id !== null) this.lastId = id;
    if (!data) return;
    // `resync`: the cursor was older than the kept history; the view must reload.
    this.onEvent({ type: event || "message", id, data: JSON.parse(data) });
  }
}

// The console's streams, with one overall state for the status line.
export class LiveFeed {
  constructor(api, types, { onEvent, onState }) {
    this.onState = onState;
    this.streams = types.map((type) => new EventStream(api, type, { onEvent, onState: () => this.changed() }));
  }

  start() {
    for (const stream of this.streams) stream.start();
    return this;
  }

  stop() {
    for (const stream of this.streams) stream.stop();
  }

  get state() {
    const states = this.streams.map((s) => s.state);
    if (states.includes("reconnecting")) return "reconnecting";
    if (states.every((s) => s === "live")) return "live";
    if (states.every((s) => s === "stopped")) return "stopped";
    return "connecting";
  }

  // Resolves once every stream is open: anything committed later will arrive.
  opened() {
    return new Promise((resolve) => {
      const check = () => (this.state === "live" ? resolve() : setTimeout(check, 25));
      check();
    });
  }

  changed() {
    this.onState(this.state);
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
