// Named filters and the group panels. The dropdowns are filled from active_calls_entities, which lists
// exactly what the signed-in role may filter by; picking one restarts the stream with the s_* filter
// (the server filters, so counters, panels and rows agree). The group panels show active_calls_totals
// with group_by, refreshed at most once a second while changes arrive, with each provider's / user's
// call limit beside its live count ("48 / 100").
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  // select id → [entities list, filter parameter, option value, option label]
  const SELECTS = {
    "f-user": ["users", "s_user_id", (e) => e.id, (e) => (e.name && e.username && e.name !== e.username ? `${e.name} (${e.username})` : e.name || e.username)],
    "f-device": ["devices", "s_device", (e) => e.id, (e) => e.name],
    "f-provider": ["providers", "s_provider", (e) => e.id, (e) => e.name],
    "f-server": ["servers", "s_server", (e) => e.id, (e) => e.name],
    "f-direction": ["directions", "s_country", (e) => e.name, (e) => e.name],
    "f-dgroup": ["destination_groups", "s_destination_group", (e) => e.id, (e) => e.name],
    "f-did": ["dids", "s_did", (e) => e.number, (e) => e.number],
  };
  const GROUPS = ["server", "provider", "user", "direction", "destination_group"];
  const REFRESH_MS = 1000;

  const ps = {
    request: null,
    onServerFilter: () => {},
    onGroup: () => {},
    entities: null,
    wanted: new Map(),  // param → value from the URL, applied once the options exist
    group: "server",
    timer: 0,
    last: 0,
    seq: 0,
  };

  function init({ request, onServerFilter, onGroup }) {
    Object.assign(ps, { request, onServerFilter, onGroup });
    for (const id of Object.keys(SELECTS)) {
      $(id).addEventListener("change", () => {
        if (id === "f-device") {  // s_device works only together with its user's s_user_id
          const dev = (ps.entities?.devices || []).find((d) => String(d.id) === $(id).value);
          if (dev) $("f-user").value = String(dev.user_id);
        } else if (id === "f-user") {
          const dev = (ps.entities?.devices || []).find((d) => String(d.id) === $("f-device").value);
          if (dev && String(dev.user_id) !== $("f-user").value) $("f-device").value = "";
        }
        ps.onServerFilter();
      });
    }
    const tabs = $("group-tabs");
    for (const g of GROUPS) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.group = g;
      b.textContent = g.replace("_", " ");
      b.addEventListener("click", () => { setGroup(g); ps.onGroup(); });
      tabs.appendChild(b);
    }
    markTab();
  }

  function setGroup(g) {
    if (!GROUPS.includes(g)) return;
    ps.group = g;
    markTab();
    refresh();
  }

  function markTab() {
    for (const b of $("group-tabs").children) b.setAttribute("aria-pressed", String(b.dataset.group === ps.group));
  }

  function restore(query) {
    for (const [, param] of Object.values(SELECTS)) if (query.get(param)) ps.wanted.set(param, query.get(param));
    if (query.get("s_user_id")) ps.wanted.set("s_user_id", query.get("s_user_id"));
    if (query.get("group")) setGroup(query.get("group"));
  }

  async function load() {
    let doc;
    try {
      doc = await ps.request("active_calls_entities");
    } catch (err) {
      doc = { error: String(err) };
    }
    ps.entities = doc.error ? null : doc;
    for (const [id, [list, param, value, label]] of Object.entries(SELECTS)) {
      const sel = $(id);
      const keep = sel.value || ps.wanted.get(param) || "";
      const frag = document.createDocumentFragment();
      const any = document.createElement("option");
      any.value = "";
      any.textContent = "any";
      frag.appendChild(any);
      for (const e of (ps.entities && ps.entities[list]) || []) {
        const o = document.createElement("option");
        o.value = String(value(e));
        o.textContent = label(e) || o.value;
        frag.appendChild(o);
      }
      sel.replaceChildren(frag);
      sel.value = keep;
      if (sel.value !== keep) sel.value = "";  // not (or no longer) visible to this user
      sel.disabled = !ps.entities;
    }
    ps.wanted.clear();
  }

  function filterParams() {
    const q = new URLSearchParams();
    for (const [id, [, param]] of Object.entries(SELECTS)) {
      const v = $(id).value;
      if (v) q.set(param, v);
    }
    return q;
  }

  // totals: now, or at most once per REFRESH_MS while changes keep coming
  function changed() {
    if (ps.timer) return;
    const wait = Math.max(0, ps.last + REFRESH_MS - Date.now());
    ps.timer = setTimeout(() => { ps.timer = 0; refresh(); }, wait);
  }

  async function refresh() {
    if (!ps.request) return;
    ps.last = Date.now();
    const seq = ++ps.seq;
    const params = Object.fromEntries(filterParams());
    params.group_by = ps.group;
    let doc;
    try {
      doc = await ps.request("active_calls_totals", params);
    } catch (_err) {
      return;  // the stream's state says we are disconnected
    }
    if (seq !== ps.seq || doc.error) return;  // a newer request is under way, or signed out
    draw(doc);
  }

  function limitOf(g) {
    if (g.call_limit != null) return g.call_limit;
    const list = ps.group === "provider" ? ps.entities?.providers : ps.group === "user" ? ps.entities?.users : null;
    const e = list && list.find((x) => x.id === g.key);
    return e && e.call_limit != null ? e.call_limit : null;
  }

  function draw(doc) {
    const body = $("groups").tBodies[0];
    const frag = document.createDocumentFragment();
    for (const g of doc.groups || []) {
      const tr = document.createElement("tr");
      tr.dataset.key = g.key == null ? "" : String(g.key);
      const limit = limitOf(g);
      if (limit != null && g.total >= limit) tr.className = "at-limit";
      for (const v of [g.name || "(none)", limit != null ? `${g.total} / ${limit}` : String(g.total), String(g.answered)]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      frag.appendChild(tr);
    }
    body.replaceChildren(frag);
    $("groups").dataset.group = doc.group_by || ps.group;
  }

  window.ActiveCallsPanels = { init, load, restore, filterParams, changed, refresh, group: () => ps.group };
})();
