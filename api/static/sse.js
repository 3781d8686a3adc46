// Server-Sent Events over fetch(): EventSource cannot send an Authorization header, so the page reads
// active_calls_stream as a ReadableStream and parses it itself (WHATWG event-stream rules), sending
// Last-Event-ID on every reconnect so the server resumes with exactly the missed changes.
// A watchdog drops a connection that stays silent past the server's keepalive (2 s): a dead peer — a cut
// network, no FIN, no reset — is noticed within 4.5 s.
"use strict";
(() => {
  class SseParser {
    constructor(onEvent) {
      this.onEvent = onEvent;
      this.buf = "";
      this.data = [];
      this.event = "";
      this.lastEventId = null;
      this.retry = null;
    }

    push(text) {
      let from = this.buf.length;  // only the new text can hold the next line end
      this.buf += text;
      let start = 0;
      for (;;) {
        const nl = this.buf.indexOf("\n", from);
        if (nl < 0) break;
        let line = this.buf.slice(start, nl);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        start = from = nl + 1;
        this.line(line);
      }
      if (start) this.buf = this.buf.slice(start);
    }

    line(line) {
      if (line === "") { this.dispatch(); return; }
      if (line[0] === ":") return;  // comment (": keepalive")
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "event") this.event = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id") { if (!value.includes("\0")) this.lastEventId = value; }
      else if (field === "retry") { if (/^\d+$/.test(value)) this.retry = Number(value); }
    }

    dispatch() {
      const type = this.event || "message";
      this.event = "";
      if (!this.data.length) return;  // id-only blocks (keepalives) just move lastEventId
      const data = this.data.join("\n");
      this.data = [];
      this.onEvent({ type, data, lastEventId: this.lastEventId });
    }
  }

  // Why an answer is not a stream: MOR's error envelope (JSON with format=json), or the HTTP status.
  async function errorText(resp) {
    const text = await resp.text().catch(() => "");
    try {
      const doc = JSON.parse(text);
      if (doc && (doc.error || doc.message)) return doc.error || doc.message;
    } catch (_e) { /* not JSON */ }
    return `HTTP ${resp.status}`;
  }

  // Options: url, request() -> {body, headers} (fresh per attempt: tokens refresh), onEvent(ev),
  // onState(state, detail) with state "connecting" | "live" | "down" | "failed", onData() per chunk read
  // (keepalives too), watchdogMs, maxDelayMs.
  class EventStream {
    constructor(opts) {
      this.opts = Object.assign({ watchdogMs: 4500, maxDelayMs: 10000, retryMs: 2000 }, opts);
      this.lastEventId = opts.lastEventId || null;
      this.stopped = false;
      this.ctrl = null;
      this.wake = null;
      this.attempt = 0;
      this.bytes = 0;
      this.silent = false;  // the watchdog (not the network, not stop()) ended the last attempt
    }

    start() { this.loop(); return this; }

    stop() {
      this.stopped = true;
      if (this.ctrl) this.ctrl.abort();
      if (this.wake) this.wake();
    }

    reconnectNow() {  // e.g. the tab became visible again
      if (this.ctrl) this.ctrl.abort();
      if (this.wake) this.wake();
    }

    async loop() {
      const o = this.opts;
      while (!this.stopped) {
        let fatal = false;
        o.onState("connecting", this.attempt ? `attempt ${this.attempt + 1}` : "");
        const ctrl = this.ctrl = new AbortController();
        let timer = 0;
        const arm = () => {
          clearTimeout(timer);
          timer = setTimeout(() => { this.silent = true; ctrl.abort(); }, o.watchdogMs);
        };
        this.silent = false;
        try {
          const { body, headers } = o.request();
          const h = Object.assign({ Accept: "text/event-stream" }, headers);
          if (this.lastEventId) h["Last-Event-ID"] = this.lastEventId;
          arm();
          const resp = await fetch(o.url, { method: "POST", body, headers: h, cache: "no-store",
            signal: ctrl.signal });
          const type = resp.headers.get("Content-Type") || "";
          if (!resp.ok || !type.startsWith("text/event-stream")) {
            const why = await errorText(resp);
            // server trouble (5xx) is retried; a refusal of these credentials is not, except 401
            // under a token (the session refreshes it)
            fatal = resp.status < 500 && !(resp.status === 401 && o.retryUnauthorized);
            o.onState(fatal ? "failed" : "down", why);
            clearTimeout(timer);
            if (fatal) { this.stopped = true; break; }
          } else {
            const parser = new SseParser((ev) => {
              if (ev.lastEventId != null) this.lastEventId = ev.lastEventId;
              o.onEvent(ev);
            });
            const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
            let live = false;
            for (;;) {
              const { value, done } = await reader.read();
              if (done) break;
              arm();
              this.bytes += value.length;
              if (o.onData) o.onData();
              parser.push(value);
              if (parser.lastEventId != null) this.lastEventId = parser.lastEventId;
              if (parser.retry != null) o.retryMs = parser.retry;
              if (!live) { live = true; this.attempt = 0; o.onState("live", ""); }
            }
            clearTimeout(timer);
            o.onState("down", "stream ended");
          }
        } catch (err) {
          clearTimeout(timer);
          if (this.stopped) break;
          o.onState("down", this.silent ? "no data from the server" : "connection lost");
        }
        if (this.stopped) break;
        this.attempt++;
        const delay = Math.min(o.retryMs * Math.min(this.attempt, 5), o.maxDelayMs);
        await new Promise((resolve) => {
          const t = setTimeout(resolve, delay);
          this.wake = () => { clearTimeout(t); resolve(); };
        });
        this.wake = null;
      }
    }
  }

  window.ActiveCallsSse = { SseParser, EventStream };
})();
