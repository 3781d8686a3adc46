// Active Calls page: signs in with u + sha1(u + secret), validates with active_calls_totals, then follows
// active_calls_stream (EventSource, no polling). Rows are keyed by id; changes only mark ids dirty and one
// requestAnimationFrame applies them, so thousands of rows and bursts of events stay cheap. Text is only
// ever set with textContent (caller IDs are attacker-controlled).
"use strict";
(() => {
  const API = "/billing/api/";
  const FILTERS = ["s_status", "s_provider", "s_server", "s_country", "s_source", "s_destination", "s_did",
    "s_user_id"];
  const $ = (id) => document.getElementById(id);
  const st = {
    rows: new Map(),   // id → row object (the API's JSON fields)
    seen: new Map(),   // id → performance.now() when its duration was received
    trs: new Map(),    // id → <tr>
    order: [],         // ids in DOM order (ascending, as the API lists them)
    dirty: new Set(),
    full: false,
    frame: 0,
    es: null,
    auth: null,
    lastEventId: null,
    stats: { events: 0, renders: 0, renderMs: 0 },  // cheap self-measurement (see the browser test)
  };

  // ------------------------------------------------------------------ hashing
  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

  async function sha1hex(text) {
    const data = new TextEncoder().encode(text);
    if (window.crypto && crypto.subtle) {  // secure contexts only (https, localhost)
      return hex(new Uint8Array(await crypto.subtle.digest("SHA-1", data)));
    }
    return sha1Plain(data);
  }

  // Fallback for plain-http pages on other hosts, where SubtleCrypto is not exposed.
  function sha1Plain(bytes) {
    const len = bytes.length, size = ((len + 9 + 63) >> 6) << 6;
    const m = new Uint8Array(size);
    m.set(bytes);
    m[len] = 0x80;
    const dv = new DataView(m.buffer);
    dv.setUint32(size - 4, (len * 8) >>> 0);
    dv.setUint32(size - 8, Math.floor(len / 0x20000000));
    let h0 = 0x67452301, h1 = 0xefcdab89, h2 = 0x98badcfe, h3 = 0x10325476, h4 = 0xc3d2e1f0;
    const w = new Uint32Array(80);
    for (let off = 0; off < size; off += 64) {
      for (let i = 0; i < 16; i++) w[i] = dv.getUint32(off + i * 4);
      for (let i = 16; i < 80; i++) { const x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]; w[i] = (x << 1) | (x >>> 31); }
      let a = h0, b = h1, c = h2, d = h3, e = h4;
      for (let i = 0; i < 80; i++) {
        let f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5a827999; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ed9eba1; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8f1bbcdc; }
        else { f = b ^ c ^ d; k = 0xca62c1d6; }
        const t = (((a << 5) | (a >>> 27)) + f + e + k + w[i]) >>> 0;
        e = d; d = c; c = ((b << 30) | (b >>> 2)) >>> 0; b = a; a = t;
      }
      h0 = (h0 + a) >>> 0; h1 = (h1 + b) >>> 0; h2 = (h2 + c) >>> 0; h3 = (h3 + d) >>> 0; h4 = (h4 + e) >>> 0;
    }
    return [h0, h1, h2, h3, h4].map((v) => v.toString(16).padStart(8, "0")).join("");
  }

  // ------------------------------------------------------------------ connection
  function params() {
    const p = new URLSearchParams({ u: st.auth.u, hash: st.auth.hash });
    const form = new FormData($("filters"));
    for (const name of FILTERS) {
      const v = form.get(name);
      if (v) p.set(name, v);
    }
    return p;
  }

  function setConn(on, text) {
    const el = $("conn");
    el.className = "conn " + (on ? "on" : "off");
    el.textContent = text;
  }

  function showError(text) { $("error").textContent = text || ""; }

  async function connect() {
    if (st.es) { st.es.close(); st.es = null; }
    const p = params();
    showError("");
    let doc;
    try {  // POST is always allowed: it tells us MOR's exact error before we open the stream
      const r = await fetch(API + "active_calls_totals?format=json", { method: "POST", body: p });
      doc = await r.json();
    } catch (err) {
      showError("API unreachable: " + err);
      return;
    }
    if (doc.error) { showError(doc.error); setConn(false, "offline"); return; }
    const es = new EventSource(API + "active_calls_stream?" + p.toString());
    st.es = es;
    es.onopen = () => setConn(true, "live");
    es.addEventListener("snapshot", (ev) => {
      const now = performance.now();
      st.rows = new Map();
      st.seen = new Map();
      for (const r of JSON.parse(ev.data).active_calls) { st.rows.set(r.id, r); st.seen.set(r.id, now); }
      st.full = true;
      st.lastEventId = ev.lastEventId;
      schedule();
    });
    const upsert = (ev) => {
      st.stats.events++;
      const r = JSON.parse(ev.data);
      st.rows.set(r.id, r);
      st.seen.set(r.id, performance.now());
      st.dirty.add(r.id);
      st.lastEventId = ev.lastEventId;
      schedule();
    };
    es.addEventListener("call_added", upsert);
    es.addEventListener("call_updated", upsert);
    es.addEventListener("call_removed", (ev) => {
      const r = JSON.parse(ev.data);
      st.rows.delete(r.id);
      st.seen.delete(r.id);
      st.dirty.add(r.id);
      st.lastEventId = ev.lastEventId;
      schedule();
    });
    es.addEventListener("error", (ev) => {
      // our "event: error" (e.g. "too slow": the browser reconnects and resumes by itself) or a
      // connection failure (EventSource retries unless the server answered with a non-stream page)
      if (ev.data) showError("stream: " + ev.data);
      setConn(false, es.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
    });
  }

  // ------------------------------------------------------------------ rendering
  function schedule() {
    if (!st.frame) st.frame = requestAnimationFrame(render);
  }

  const two = (n) => String(n).padStart(2, "0");
  function fmtDuration(s) {
    if (s == null) return "";
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return h ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
  }

  function durationOf(id, r) {
    if (r.duration == null) return null;
    return r.duration + Math.floor((performance.now() - (st.seen.get(id) || performance.now())) / 1000);
  }

  function makeRow() {
    const tr = document.createElement("tr");
    for (const cls of ["id", "status", "dur", "caller", "who", "dest", "prov", "server"]) {
      const td = document.createElement("td");
      td.className = cls;
      tr.appendChild(td);
    }
    return tr;
  }

  function fill(tr, r) {
    const c = tr.cells;
    const status = r.status || "";
    tr.className = status.toLowerCase();
    tr.dataset.id = r.id;
    tr.dataset.uniqueid = r.uniqueid || "";
    c[0].textContent = r.id;
    c[1].textContent = status;
    c[2].textContent = fmtDuration(durationOf(r.id, r));
    c[3].textContent = r.src || "";
    const from = [r.user, r.device_name].filter(Boolean).join(" / ");
    const to = [r.dst_user, r.dst_device_name].filter(Boolean).join(" / ");
    c[4].textContent = to ? (from ? `${from} → ${to}` : `→ ${to}`) : from;
    c[5].textContent = (r.localized_dst || "") + (r.direction_name ? ` (${r.direction_name})` : "");
    c[5].title = r.destination_name || "";
    c[6].textContent = r.provider_name || "";
    c[7].textContent = r.server_id == null ? "" : r.server_id;
  }

  function position(id) {  // binary search in st.order
    let lo = 0, hi = st.order.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (st.order[mid] < id) lo = mid + 1; else hi = mid; }
    return lo;
  }

  function render() {
    const t0 = performance.now();
    st.frame = 0;
    const tbody = $("calls").tBodies[0];
    if (st.full) {
      st.full = false;
      st.dirty.clear();
      const ids = Array.from(st.rows.keys()).sort((a, b) => a - b);
      const keep = new Map();
      const frag = document.createDocumentFragment();
      for (const id of ids) {
        const tr = st.trs.get(id) || makeRow();
        fill(tr, st.rows.get(id));
        keep.set(id, tr);
        frag.appendChild(tr);
      }
      tbody.replaceChildren(frag);
      st.trs = keep;
      st.order = ids;
    } else {
      for (const id of st.dirty) {
        const r = st.rows.get(id);
        let tr = st.trs.get(id);
        if (!r) {
          if (tr) { tr.remove(); st.trs.delete(id); st.order.splice(position(id), 1); }
          continue;
        }
        if (!tr) {
          tr = makeRow();
          const at = position(id);
          const next = st.order[at];
          st.order.splice(at, 0, id);
          st.trs.set(id, tr);
          tbody.insertBefore(tr, next === undefined ? null : st.trs.get(next));
        }
        fill(tr, r);
      }
      st.dirty.clear();
    }
    counters();
    st.stats.renders++;
    st.stats.renderMs += performance.now() - t0;
  }

  function counters() {
    let answered = 0;
    const prov = new Map();
    for (const r of st.rows.values()) {
      const ans = r.status === "Answered";
      if (ans) answered++;
      const key = r.provider_name || "(none)";
      let p = prov.get(key);
      if (!p) prov.set(key, (p = { total: 0, answered: 0 }));
      p.total++;
      if (ans) p.answered++;
    }
    $("total").textContent = st.rows.size;
    $("answered").textContent = answered;
    const body = $("providers").tBodies[0];
    const frag = document.createDocumentFragment();
    for (const [name, p] of [...prov].sort((a, b) => b[1].total - a[1].total || a[0].localeCompare(b[0]))) {
      const tr = document.createElement("tr");
      for (const v of [name, p.total, p.answered]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      frag.appendChild(tr);
    }
    body.replaceChildren(frag);
  }

  function tick() {  // durations move with the clock, not with events
    for (const [id, tr] of st.trs) {
      const r = st.rows.get(id);
      if (r && r.duration != null) tr.cells[2].textContent = fmtDuration(durationOf(id, r));
    }
  }
  setInterval(tick, 1000);

  // ------------------------------------------------------------------ wiring
  async function login(u, secretOrHash) {
    const hash = /^[0-9a-f]{40}$/.test(secretOrHash) ? secretOrHash : await sha1hex(u + secretOrHash);
    st.auth = { u, hash };
    await connect();
  }

  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    login($("u").value, $("secret").value);
  });
  $("filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (st.auth) connect();
  });

  // #u=NAME&hash=HEX (or &secret=…) signs in directly; the fragment never reaches the server's logs.
  const frag = new URLSearchParams(location.hash.slice(1));
  if (frag.get("u") && (frag.get("hash") || frag.get("secret"))) {
    $("u").value = frag.get("u");
    for (const name of FILTERS) {
      const v = frag.get(name);
      if (v && $("filters").elements[name]) $("filters").elements[name].value = v;
    }
    login(frag.get("u"), frag.get("hash") || frag.get("secret"));
  }

  window.activeCalls = st;  // for debugging and the browser test
})();
