// The calls table, virtualised: all rows live in a sorted id array, only the ones on screen (plus a few)
// exist as <tr>. Order is kept incrementally (a changed row is taken out by its old key and put back by
// its new one), so a row moves only when its own sort key changes; while the view is scrolled, the first
// unchanged visible row is kept where it was on screen (inserts above do not push the text you read).
// Cells are written with textContent only, and only when their text changed.
"use strict";
(() => {
  const OVERSCAN = 6;

  // null/undefined/"" sort last in both directions; numbers before strings
  function cmpKeys(a, b) {
    const na = a == null || a === "", nb = b == null || b === "";
    if (na || nb) return na === nb ? 0 : (na ? 2 : -2);  // ±2: "empty" survives the direction flip
    if (a < b) return -1;
    if (a > b) return 1;
    return 0;
  }

  class VirtualTable {
    // columns: [{id, label, cls, text(row, ctx) -> string, key(row, ctx) -> number|string|null, title?}]
    // ctx(): {now} for time-dependent text. match(row) -> bool is the client-side filter.
    constructor({ scroller, table, columns, rowHeight, ctx, onRowClick, actions }) {
      this.scroller = scroller;
      this.table = table;
      this.columns = columns;
      this.rowHeight = rowHeight;
      this.ctx = ctx;
      this.actions = actions || null;  // {label, visible(row) -> bool, run(row, button)}
      this.actionsAt = columns.findIndex((c) => c.id === "actions");  // its cell holds the button
      this.onRowClick = onRowClick;
      this.rows = new Map();
      this.keys = new Map();  // id -> sort key at the time it was placed in `order`
      this.order = [];  // ids by (key, dir) then id
      this.view = null;  // order filtered by `match`, or null when it is `order` itself
      this.match = null;
      this.sort = { col: columns[0].id, dir: -1 };
      this.pool = [];  // <tr> reused for the visible window
      this.stats = { renders: 0, renderMs: 0, maxMs: 0 };
      this.tbody = table.tBodies[0];
      this.topPad = document.createElement("tr");
      this.topPad.className = "pad";
      this.bottomPad = document.createElement("tr");
      this.bottomPad.className = "pad";
      this.buildHead();
      scroller.addEventListener("scroll", () => this.paint(), { passive: true });
      new ResizeObserver(() => this.paint()).observe(scroller);
    }

    col(id) { return this.columns.find((c) => c.id === id) || this.columns[0]; }

    buildHead() {
      const tr = document.createElement("tr");
      for (const c of this.columns) {
        const th = document.createElement("th");
        th.className = c.cls;
        th.dataset.col = c.id;
        th.textContent = c.label;
        if (c.title) th.title = c.title;
        if (c.key) {
          th.tabIndex = 0;
          th.classList.add("sortable");
          const toggle = () => this.onSortClick && this.onSortClick(c.id);
          th.addEventListener("click", toggle);
          th.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); toggle(); } });
        }
        tr.appendChild(th);
      }
      this.table.tHead.replaceChildren(tr);
      this.markSort();
    }

    markSort() {
      for (const th of this.table.tHead.rows[0].cells) {
        const on = th.dataset.col === this.sort.col;
        th.classList.toggle("sorted", on);
        th.setAttribute("aria-sort", on ? (this.sort.dir < 0 ? "descending" : "ascending") : "none");
        th.dataset.dir = on ? (this.sort.dir < 0 ? "desc" : "asc") : "";
      }
    }

    setSort(col, dir) {
      this.sort = { col: this.col(col).id, dir: dir < 0 ? -1 : 1 };
      this.markSort();
      this.resort();
    }

    keyOf(row) { return this.col(this.sort.col).key(row, this.ctx()); }

    cmp(ida, ka, idb, kb) {
      const c = cmpKeys(ka, kb);
      if (c === 2 || c === -2) return c;
      if (c) return c * this.sort.dir;
      return ida - idb;
    }

    // position of (id, key) in order: binary search
    bisect(id, key) {
      const order = this.order, keys = this.keys;
      let lo = 0, hi = order.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1, other = order[mid];
        if (this.cmp(other, keys.get(other), id, key) < 0) lo = mid + 1; else hi = mid;
      }
      return lo;
    }

    resort() {
      const keys = new Map();
      for (const [id, r] of this.rows) keys.set(id, this.keyOf(r));
      this.keys = keys;
      this.order = Array.from(this.rows.keys()).sort((a, b) => this.cmp(a, keys.get(a), b, keys.get(b)));
      this.refilter();
    }

    replaceAll(rows) {
      this.rows = rows;
      this.resort();
    }

    // apply changed ids (already updated/deleted in `rows` by the caller)
    update(dirty) {
      if (!dirty.size) return;
      const anchor = this.anchor(dirty);
      if (dirty.size > 200 && dirty.size > this.order.length / 8) {  // a burst: one sort beats many splices
        this.resort();
      } else {
        for (const id of dirty) {
          if (this.keys.has(id)) {
            const at = this.bisect(id, this.keys.get(id));
            if (this.order[at] === id) this.order.splice(at, 1);
            else { const i = this.order.indexOf(id); if (i >= 0) this.order.splice(i, 1); }
            this.keys.delete(id);
          }
          const r = this.rows.get(id);
          if (r) {
            const key = this.keyOf(r);
            this.order.splice(this.bisect(id, key), 0, id);
            this.keys.set(id, key);
          }
        }
        this.refilter();
      }
      this.restore(anchor);
    }

    setMatch(match) { this.match = match; this.refilter(); }

    refilter() {
      this.view = this.match ? this.order.filter((id) => this.match(this.rows.get(id))) : null;
      this.dirtyAll = true;
    }

    ids() { return this.view || this.order; }

    // the first visible row whose position we keep while the list changes around it
    anchor(dirty) {
      const top = this.scroller.scrollTop;
      if (top <= 0) return null;
      const ids = this.ids(), first = Math.floor(top / this.rowHeight);
      for (let i = first; i < Math.min(ids.length, first + 60); i++) {
        if (!dirty.has(ids[i])) return { id: ids[i], offset: i * this.rowHeight - top };
      }
      return null;
    }

    restore(anchor) {
      if (!anchor) return;
      const at = this.ids().indexOf(anchor.id);
      if (at >= 0) this.scroller.scrollTop = at * this.rowHeight - anchor.offset;
    }

    // how many rows the scroller shows at once (the wall-mode test reads it)
    capacity() {
      const head = this.table.tHead.offsetHeight;
      return Math.floor((this.scroller.clientHeight - head) / this.rowHeight);
    }

    makeRow() {
      const tr = document.createElement("tr");
      for (const c of this.columns) {
        const td = document.createElement("td");
        td.className = c.cls;
        tr.appendChild(td);
      }
      if (this.actions) {
        const btn = document.createElement("button");
        btn.type = "button";
        btn.className = "hangup";
        btn.textContent = this.actions.label;
        btn.addEventListener("click", (ev) => {
          ev.stopPropagation();
          const r = this.rows.get(Number(tr.dataset.id));
          if (r) this.actions.run(r, btn);
        });
        tr.cells[this.actionsAt].appendChild(btn);
      }
      tr.addEventListener("click", () => {
        const r = this.rows.get(Number(tr.dataset.id));
        if (r && this.onRowClick) this.onRowClick(r);
      });
      return tr;
    }

    // write the visible window; cheap enough to call every frame and every second (ticking durations)
    paint() {
      const t0 = performance.now();
      const ids = this.ids(), h = this.rowHeight;
      const top = this.scroller.scrollTop, height = this.scroller.clientHeight;
      const first = Math.max(0, Math.floor(top / h) - OVERSCAN);
      const last = Math.min(ids.length, Math.ceil((top + height) / h) + OVERSCAN);
      const n = Math.max(0, last - first);
      while (this.pool.length < n) this.pool.push(this.makeRow());
      const ctx = this.ctx();
      const cols = this.columns;
      const tbody = this.tbody;
      const want = [this.topPad];
      for (let i = 0; i < n; i++) {
        const id = ids[first + i], r = this.rows.get(id), tr = this.pool[i];
        if (tr.dataset.id !== String(id)) tr.dataset.id = id;
        if (tr.dataset.uniqueid !== (r.uniqueid || "")) tr.dataset.uniqueid = r.uniqueid || "";
        const cls = (r.status || "").toLowerCase() + (r.stale ? " stale" : "") + (r.phase ? " phase" : "");
        if (tr.className !== cls) tr.className = cls;
        const title = `id ${r.id} · uniqueid ${r.uniqueid || ""} · channel ${r.channel || ""}`;
        if (tr.title !== title) tr.title = title;
        for (let c = 0; c < cols.length; c++) {
          if (!cols[c].text) continue;  // the actions cell keeps its button
          const text = cols[c].text(r, ctx);
          const td = tr.cells[c];
          if (td.textContent !== text) td.textContent = text;
        }
        if (this.actions) {
          const btn = tr.cells[this.actionsAt].firstChild;
          const show = this.actions.visible(r);
          if (btn.hidden === show) btn.hidden = !show;
        }
        want.push(tr);
      }
      want.push(this.bottomPad);
      this.topPad.style.height = `${first * h}px`;
      this.bottomPad.style.height = `${(ids.length - last) * h}px`;
      // replace the children only when the set of <tr> changed (scrolling, fewer/more rows)
      const kids = tbody.children;
      let same = kids.length === want.length;
      for (let i = 0; same && i < want.length; i++) same = kids[i] === want[i];
      if (!same) tbody.replaceChildren(...want);
      this.dirtyAll = false;
      const ms = performance.now() - t0;
      this.stats.renders++;
      this.stats.renderMs += ms;
      if (ms > this.stats.maxMs) this.stats.maxMs = ms;
    }
  }

  window.ActiveCallsTable = { VirtualTable, cmpKeys };
})();
