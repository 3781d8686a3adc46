// Active Calls page: signs in (u + API-secret hash, or username + password → v2 token via session.js),
// follows active_calls_stream through fetch() (sse.js), keeps every row in memory and paints only the
// visible ones (table.js). Changes only mark ids dirty; one requestAnimationFrame applies them all.
// Dropdown filters go to the server (they restart the stream); status and search filter in the page,
// as you type. The view state lives in the URL query (never credentials), so a wall screen can be
// bookmarked. Text is only ever set with textContent (caller IDs are attacker-controlled).
"use strict";
(() => {
  const API = "/billing/api/";
  const { COLUMNS, haystack, two } = window.ActiveCallsColumns;
  const { EventStream } = window.ActiveCallsSse;
  const { VirtualTable } = window.ActiveCallsTable;
  const Panels = window.ActiveCallsPanels;
  const $ = (id) => document.getElementById(id);

  const st = {
    rows: new Map(),   // id → row (the API's JSON fields, plus page estimates prefixed "_")
    dirty: new Set(),
    full: false,
    frame: 0,
    stream: null,
    auth: null,        // {kind: "key", u, hash} | {kind: "session", session}
    graph: null,
    skew: null,        // server clock − page clock, seconds (durations count on the server's clock)
    conn: "offline",
    lastData: 0,       // Date.now() of the last byte from the stream
    stats: { events: 0, snapshots: 0, firstRows: 0 },
  };

  // ------------------------------------------------------------------ auth + requests
  function authorize(params, headers) {
    const a = st.auth;
    if (!a) return;
    if (a.kind === "key") { params.set("u", a.u); params.set("hash", a.hash); }
    else a.session.authorize(headers);
  }

  // JSON from an API endpoint (POST: credentials never in a URL); `path` relative to /billing/api/ or absolute
  async function request(path, params) {
    const body = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v != null && v !== "") body.set(k, v);
    const headers = {};
    authorize(body, headers);
    const url = (path.startsWith("/") ? path : API + path) + "?format=json";
    const resp = await fetch(url, { method: "POST", body, headers, cache: "no-store" });
    const doc = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
    if (!resp.ok && !doc.error) doc.error = `HTTP ${resp.status}`;
    return doc;
  }

  // ------------------------------------------------------------------ the table
  const ctx = () => ({ now: serverNow() });
  const serverNow = () => Date.now() / 1000 + (st.skew || 0);
  const table = new VirtualTable({
    scroller: $("scroller"), table: $("calls"), columns: COLUMNS, rowHeight: rowHeight(), ctx,
    onRowClick: (r) => showDetails(r),
    actions: {
      label: "Hang up",
      visible: () => mayHangUp(),
      run: (r, btn) => hangUp(r, btn),
    },
  });
  table.onSortClick = (col) => {
    const same = table.sort.col === col;
    table.setSort(col, same ? -table.sort.dir : (col === "time" ? -1 : 1));
    saveUrl();
    table.paint();
  };

  function rowHeight() {
    return parseFloat(getComputedStyle(document.body).getPropertyValue("--row-h")) || 26;
  }

  function mayHangUp() { return !!(st.auth && st.auth.kind === "session" && st.auth.session.mayHangUp); }

  // page-side estimates where the JSON extras are missing, kept while the status stays the same so
  // the row's sort key does not wobble with each update
  function derive(r, prev, now) {
    if (r.answer_epoch != null && r.duration != null) {
      const est = r.answer_epoch + r.duration + 0.5 - Date.now() / 1000;  // duration is whole seconds
      if (st.skew == null || Math.abs(est - st.skew) > 1.5) st.skew = est;
    }
    if (r.start_epoch == null) r._startEst = prev && prev._startEst != null ? prev._startEst : now;
    if (r.answer_epoch == null && r.duration != null) {
      r._answerEst = prev && prev.status === r.status && prev._answerEst != null ? prev._answerEst : now - r.duration;
    }
    return r;
  }

  function onEvent(ev) {
    if (ev.type === "snapshot") {
      st.stats.snapshots++;
      const rows = new Map(), now = Math.floor(serverNow());  // one "now" for the whole list
      for (const r of JSON.parse(ev.data).active_calls) rows.set(r.id, derive(r, st.rows.get(r.id), now));
      st.rows = rows;
      st.full = true;
    } else if (ev.type === "call_added" || ev.type === "call_updated") {
      st.stats.events++;
      const r = JSON.parse(ev.data);
      st.rows.set(r.id, derive(r, st.rows.get(r.id), Math.floor(serverNow())));
      st.dirty.add(r.id);
    } else if (ev.type === "call_removed") {
      st.stats.events++;
      const r = JSON.parse(ev.data);
      st.rows.delete(r.id);
      st.dirty.add(r.id);
    } else if (ev.type === "error" || ev.type === "closed") {
      showError(`stream: ${ev.data}`);  // the server ends the stream next; we reconnect and resume
      return;
    } else {
      return;
    }
    schedule();
    Panels.changed();
  }

  function schedule() { if (!st.frame) st.frame = requestAnimationFrame(render); }

  function render() {
    st.frame = 0;
    if (st.full) {
      st.full = false;
      st.dirty.clear();
      table.replaceAll(st.rows);
    } else if (st.dirty.size) {
      table.update(st.dirty);
      st.dirty.clear();
    }
    table.paint();
    counters();
    stamp();
    if (!st.stats.firstRows && st.rows.size) st.stats.firstRows = performance.now();  // ms since navigation
  }

  function counters() {
    let answered = 0;
    for (const r of st.rows.values()) if (r.status === "Answered") answered++;
    $("total").textContent = st.rows.size;
    $("answered").textContent = answered;
    const shown = table.ids().length;
    $("shown").textContent = shown === st.rows.size ? "" : `${shown} shown`;
  }

  // ------------------------------------------------------------------ filters (page side) + URL
  const statusSel = $("f-status"), search = $("f-search");

  function applyLocalFilter() {
    const status = statusSel.value, words = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    table.setMatch(status || words.length ? (r) => {
      if (status && (r.status || "").toLowerCase() !== status) return false;
      const hay = haystack(r);
      for (const w of words) if (!hay.includes(w)) return false;
      return true;
    } : null);
    table.paint();
    counters();
  }

  function saveUrl() {
    const q = Panels.filterParams();
    if (statusSel.value) q.set("status", statusSel.value);
    if (search.value) q.set("q", search.value);
    if (table.sort.col !== "time" || table.sort.dir !== -1) {
      q.set("sort", table.sort.col);
      q.set("dir", table.sort.dir < 0 ? "desc" : "asc");
    }
    if (Panels.group() !== "server") q.set("group", Panels.group());
    if (document.body.classList.contains("wall")) q.set("wall", "1");
    const qs = q.toString();
    history.replaceState(null, "", location.pathname + (qs ? "?" + qs : "") + location.hash);
  }

  statusSel.addEventListener("change", () => { applyLocalFilter(); saveUrl(); });
  search.addEventListener("input", () => { applyLocalFilter(); saveUrl(); });

  // ------------------------------------------------------------------ connection
  function showError(text) { $("error").textContent = text || ""; }

  function setConn(state, detail) {
    st.conn = state;
    const el = $("conn");
    const text = { connecting: "connecting…", live: "live", down: "disconnected — reconnecting",
      failed: "disconnected", offline: "offline" }[state] || state;
    el.className = "conn " + (state === "live" ? "on" : "off");
    el.dataset.state = state;
    el.textContent = detail && state !== "live" ? `${text} (${detail})` : text;
    const banner = $("banner");
    banner.hidden = state === "live" || state === "offline";
    banner.textContent = el.textContent;
    if (state === "failed") showError(detail);
    if (state === "live") showError("");
  }

  function connect() {
    if (st.stream) st.stream.stop();
    st.stream = null;
    if (!st.auth) return;
    const filters = Panels.filterParams();
    st.stream = new EventStream({
      url: API + "active_calls_stream?format=json",
      request: () => {
        const body = new URLSearchParams(filters);
        const headers = {};
        authorize(body, headers);
        return { body, headers };
      },
      retryUnauthorized: st.auth.kind === "session",
      onEvent,
      onData: () => { st.lastData = Date.now(); if (!st.frame) stamp(); },
      onState: setConn,
    }).start();
    Panels.refresh();
  }

  function signedIn(auth, who) {
    st.auth = auth;
    document.body.classList.add("signed-in");
    document.body.classList.toggle("can-hangup", mayHangUp());
    $("who").textContent = who;
    if (auth.kind === "session") {
      auth.session.onexpire = (text) => { signOut(); showError(text || "Session expired: log in again"); };
    }
    Panels.load().then(() => { connect(); startGraph(); saveUrl(); });  // the URL's filters are set by then
  }

  // the history graph follows the server filter where the role has per-server series (admin, accountant);
  // a reseller's or user's one series is their own, and the API refuses s_server for them: ask without
  function startGraph() {
    if (st.graph) st.graph.stop();
    st.graph = null;
    if (!window.ActiveCallsGraph || !st.auth) return;
    const server = Panels.filterParams().get("s_server");
    let withServer = !!server;
    const graphRequest = async (path, params) => {
      if (withServer) {
        const doc = await request(path, Object.assign({}, params, { s_server: server }));
        if (!doc.error) return doc;
        withServer = false;
      }
      return request(path, params);
    };
    st.graph = window.ActiveCallsGraph.startGraph($("graph"), graphRequest);
  }

  function signOut() {
    if (st.stream) st.stream.stop();
    st.stream = null;
    if (st.graph) st.graph.stop();
    st.graph = null;
    if (st.auth && st.auth.kind === "session") st.auth.session.logout();
    st.auth = null;
    st.rows = new Map();
    st.full = true;
    schedule();
    document.body.classList.remove("signed-in", "can-hangup");
    setConn("offline");
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);  // #u=…&hash=…
  }

  async function keyLogin(u, secretOrHash) {
    const hash = /^[0-9a-f]{40}$/.test(secretOrHash) ? secretOrHash : await window.ActiveCallsAuth.sha1hex(u + secretOrHash);
    st.auth = { kind: "key", u, hash };
    const doc = await request("active_calls_totals").catch((err) => ({ error: `API unreachable: ${err}` }));
    if (doc.error) { st.auth = null; showError(doc.error); setConn("failed", doc.error); return; }
    signedIn(st.auth, u);
  }

  // ------------------------------------------------------------------ hang-up, details
  async function hangUp(r, btn) {
    btn.disabled = true;
    try {
      const label = [r.src, r.localized_dst || r.dst].filter(Boolean).join(" → ");
      const res = await st.auth.session.hangUp(r.id, label);
      if (res && res.ok) flash(`Call ${r.id} hung up`);
      else if (res && res.status) flash(`Call ${r.id}: ${(res.body && res.body.error) || "HTTP " + res.status}`, true);
    } catch (err) {
      flash(`Call ${r.id}: ${err}`, true);
    } finally {
      btn.disabled = false;
    }
  }

  function flash(text, bad) {
    const el = $("flash");
    el.textContent = text;
    el.className = bad ? "flash bad" : "flash";
    el.hidden = false;
    clearTimeout(flash.t);
    flash.t = setTimeout(() => { el.hidden = true; }, 6000);
  }

  function showDetails(r) {
    const dl = $("details-list");
    const frag = document.createDocumentFragment();
    for (const [k, v] of Object.entries(r)) {
      if (k.startsWith("_") || v == null || v === "") continue;
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = String(v);
      frag.append(dt, dd);
    }
    dl.replaceChildren(frag);
    $("details").hidden = false;
  }
  $("details-close").addEventListener("click", () => { $("details").hidden = true; });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") $("details").hidden = true; });

  // ------------------------------------------------------------------ wall mode, clock
  function setWall(on, fromClick) {
    document.body.classList.toggle("wall", on);
    $("wall-toggle").setAttribute("aria-pressed", String(on));
    table.rowHeight = rowHeight();
    if (fromClick && document.fullscreenEnabled) {
      if (on && !document.fullscreenElement) document.documentElement.requestFullscreen().catch(() => {});
      if (!on && document.fullscreenElement) document.exitFullscreen().catch(() => {});
    }
    saveUrl();
    table.paint();
  }
  $("wall-toggle").addEventListener("click", () => setWall(!document.body.classList.contains("wall"), true));

  const hms = (d) => `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  function stamp() {  // when the stream last said anything (data or keepalive)
    const text = st.lastData ? `updated ${hms(new Date(st.lastData))}` : "";
    if ($("updated").textContent !== text) $("updated").textContent = text;
  }

  function tick() {  // durations move with the clock, not with events
    table.paint();
    $("clock").textContent = hms(new Date());
    stamp();
  }
  setInterval(tick, 1000);
  tick();

  // ------------------------------------------------------------------ wiring
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    keyLogin($("u").value, $("secret").value);
  });
  $("logout").addEventListener("click", signOut);
  // the browser knows before the socket does: say so now, and try again as soon as there is a network
  window.addEventListener("offline", () => { if (st.stream) setConn("down", "browser offline"); });
  window.addEventListener("online", () => { if (st.stream) st.stream.reconnectNow(); });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && st.stream && st.conn === "down") st.stream.reconnectNow();
  });
  Panels.init({ request, onServerFilter: () => { connect(); startGraph(); saveUrl(); }, onGroup: saveUrl });
  if (window.ActiveCallsSession) {
    window.ActiveCallsSession.mountLogin($("session-login"), (session) => {
      const u = session.user || {};
      signedIn({ kind: "session", session }, u.name || u.username || "");
    });
  } else {
    $("session-login").hidden = true;
  }

  // the view from the URL query: ?wall=1&sort=…&dir=…&status=…&q=…&group=…&s_*=…
  const query = new URLSearchParams(location.search);
  const frag = new URLSearchParams(location.hash.slice(1));
  for (const [k, v] of frag) if (k.startsWith("s_") && !query.has(k)) query.set(k, v);  // old #…&s_*= links
  if (query.get("status")) statusSel.value = query.get("status");
  if (query.get("q")) search.value = query.get("q");
  if (query.get("sort")) table.setSort(query.get("sort"), query.get("dir") === "asc" ? 1 : -1);
  Panels.restore(query);
  applyLocalFilter();
  if (query.get("wall") === "1") setWall(true, false);
  setConn("offline");

  // #u=NAME&hash=HEX (or &secret=…) signs in directly; the fragment never reaches the server's logs.
  if (frag.get("u") && (frag.get("hash") || frag.get("secret"))) {
    $("u").value = frag.get("u");
    keyLogin(frag.get("u"), frag.get("hash") || frag.get("secret"));
  }

  window.activeCalls = { st, table, connect, setWall, request };  // for debugging, the tests and the bench
})();
