// Active Calls graph: concurrent calls in 15 s buckets from /billing/api/active_calls_history, today
// against yesterday over 00:00-24:00 in the browser's local time, plus a small panel for the last 60
// minutes and the current total/answered as text. Plain SVG, no library, text only via textContent.
//
//   const g = window.ActiveCallsGraph.startGraph(container, request);   // -> {stop(), refresh()}
//
// `request(path, params)` resolves to the endpoint's JSON (it does the auth; the graph only names the path
// and its params). Optional third argument: {intervalMs (15000), params: () => extra params such as
// {s_server}}. Each series is a <path data-series="today|yesterday|hour" data-points="t:v,..."> whose
// data-points lists every bucket exactly (t = epoch of the bucket start, v = total) while the drawn line is
// reduced to at most two points per pixel column, so a day (5,760 buckets) stays cheap to draw. The handle
// also carries `stats` {loads, draws, drawMs, points, lastPeriodStart}: cheap self-measurement for the tests.
// Colours come from CSS variables (--ac-graph-today, --ac-graph-yesterday, --ac-graph-hour, --ac-graph-grid)
// and text uses currentColor, so a dark "wall" theme only has to set `color` and, if it likes, the variables.
// After the first load a refresh asks only for the last two minutes (the newest buckets are still filling).
"use strict";
(() => {
  const PATH = "/billing/api/active_calls_history";
  const BUCKET = 15;            // seconds, the history sampler's bucket (the answer's bucket_seconds wins)
  const REFETCH = 120;          // seconds re-read on each refresh: the buckets that may still change
  const SVGNS = "http://www.w3.org/2000/svg";
  const COLOR = {
    today: "var(--ac-graph-today, #2f81f7)",
    yesterday: "var(--ac-graph-yesterday, #8c959f)",
    hour: "var(--ac-graph-hour, #2f81f7)",
    grid: "var(--ac-graph-grid, rgba(128, 128, 128, 0.35))",
  };

  const svg = (name, attrs) => {
    const el = document.createElementNS(SVGNS, name);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    return el;
  };
  const pad2 = (n) => String(n).padStart(2, "0");
  const clockText = (epoch) => {
    const d = new Date(epoch * 1000);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  };

  /** Local midnight `offset` days from the day containing `epoch` (DST-safe: built from calendar fields). */
  function midnight(epoch, offset) {
    const d = new Date(epoch * 1000);
    return new Date(d.getFullYear(), d.getMonth(), d.getDate() + offset).getTime() / 1000;
  }

  /** A round step near span/parts (1, 2, 5 × 10^k), and the axis top it gives. */
  function axis(max, parts) {
    const raw = Math.max(max, 1) / parts;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const s = Math.max(1, Math.round(step));
    return { step: s, top: Math.max(s, Math.ceil(Math.max(max, 1) / s) * s) };
  }

  /** Screen points for a series, at most two per pixel column (its min and max, in time order); a gap
   *  of more than two buckets without data breaks the line instead of bridging it. */
  function pathData(points, xOf, yOf, bucket) {
    let d = "", col = null, move = false, lo = null, hi = null, prevT = null;
    const flush = () => {
      if (col === null) return;
      const pair = lo === hi ? [lo] : lo.i <= hi.i ? [lo, hi] : [hi, lo];
      pair.forEach((p, k) => { d += `${k === 0 && move ? "M" : "L"}${col} ${yOf(p.v).toFixed(1)}`; });
      col = null;
    };
    points.forEach(([t, v], i) => {
      const c = Math.round(xOf(t));
      const brk = prevT !== null && t - prevT > 2 * bucket;
      prevT = t;
      if (c !== col || brk) {
        flush();
        move = brk || d === "";
        col = c;
        lo = hi = { v, i };
        return;
      }
      if (v < lo.v) lo = { v, i };
      if (v > hi.v) hi = { v, i };
    });
    flush();
    return d;
  }

  function startGraph(container, request, options) {
    const opts = options || {};
    const intervalMs = opts.intervalMs || 15000;
    const st = { pts: [], bucket: BUCKET, day0: null, until: null, now: Date.now() / 1000, inflight: null,
      timer: 0, frame: 0, stopped: false, error: "" };

    const stats = { loads: 0, draws: 0, drawMs: 0, points: 0, lastPeriodStart: null };  // self-measurement
    const root = document.createElement("div");
    root.className = "ac-graph";
    root.style.color = "inherit";
    const now = document.createElement("div");
    now.className = "ac-graph-now";
    const total = document.createElement("strong");
    total.dataset.role = "current-total";
    const answered = document.createElement("strong");
    answered.dataset.role = "current-answered";
    const at = document.createElement("span");
    at.dataset.role = "current-at";
    const err = document.createElement("span");
    err.dataset.role = "graph-error";
    err.setAttribute("role", "status");
    now.append("Latest 15 s peak: ", total, " calls, ", answered, " answered ", at, " ");
    for (const name of ["today", "yesterday"]) {
      const key = document.createElement("span");
      key.dataset.legend = name;
      key.style.color = COLOR[name];
      key.style.marginLeft = "0.8em";
      key.textContent = name === "today" ? "\u2014 today" : "\u2504 yesterday";
      now.append(key);
    }
    now.append(" ", err);
    const day = svg("svg", { "data-panel": "day", role: "img", "aria-label": "Concurrent calls today and yesterday" });
    const hour = svg("svg", { "data-panel": "hour", role: "img", "aria-label": "Concurrent calls, last 60 minutes" });
    for (const el of [day, hour]) {
      el.style.display = "block";
      el.style.width = "100%";
      el.style.overflow = "visible";
    }
    root.append(now, day, hour);
    container.append(root);

    /** Today, yesterday and the last hour cut out of the kept buckets, against one `now`. */
    function series(nowEpoch) {
      const t0 = midnight(nowEpoch, 0), t1 = midnight(nowEpoch, 1), y0 = midnight(nowEpoch, -1);
      const hourStart = nowEpoch - 3600;
      const out = { today: [], yesterday: [], hour: [], t0, t1, y0, hourStart };
      for (const p of st.pts) {
        if (p[0] >= t0 && p[0] < t1) out.today.push(p);
        else if (p[0] >= y0 && p[0] < t0) out.yesterday.push(p);
        if (p[0] + st.bucket > hourStart) out.hour.push(p);
      }
      return out;
    }

    function drawPanel(el, width, height, spec) {
      const m = { l: 36, r: 8, t: 8, b: 20 };
      const pw = Math.max(10, width - m.l - m.r), ph = Math.max(10, height - m.t - m.b);
      const ax = axis(spec.max, 4);
      const yOf = (v) => m.t + ph - (v / ax.top) * ph;
      el.replaceChildren();
      el.setAttribute("viewBox", `0 0 ${width} ${height}`);
      el.setAttribute("width", String(width));
      el.setAttribute("height", String(height));
      const grid = svg("g", { "data-role": "grid", "font-size": 11, fill: "currentColor" });
      grid.style.stroke = COLOR.grid;
      for (let v = 0; v <= ax.top; v += ax.step) {
        const y = yOf(v).toFixed(1);
        grid.append(svg("line", { x1: m.l, x2: m.l + pw, y1: y, y2: y }));
        const label = svg("text", { x: m.l - 4, y, "text-anchor": "end", "dominant-baseline": "middle",
          stroke: "none", "data-role": "y-label" });
        label.textContent = String(v);
        grid.append(label);
      }
      for (const [t, text] of spec.ticks) {
        const x = (m.l + spec.frac(t) * pw).toFixed(1);
        grid.append(svg("line", { x1: x, x2: x, y1: m.t, y2: m.t + ph }));
        const label = svg("text", { x, y: m.t + ph + 14, "text-anchor": "middle", stroke: "none",
          "data-role": "x-label" });
        label.textContent = text;
        grid.append(label);
      }
      el.append(grid);
      for (const s of spec.series) {
        const xOf = (t) => m.l + s.frac(t) * pw;
        const path = svg("path", { "data-series": s.name, fill: "none", "stroke-width": s.name === "yesterday" ? 1.25 : 1.75,
          "stroke-linejoin": "round", d: pathData(s.points, xOf, yOf, st.bucket) || `M${m.l} ${yOf(0)}` });
        path.style.stroke = COLOR[s.name];
        if (s.name === "yesterday") path.setAttribute("stroke-dasharray", "4 3");
        path.setAttribute("data-points", s.points.map((p) => `${p[0]}:${p[1]}`).join(","));
        el.append(path);
      }
      if (spec.nowFrac !== null) {
        const x = (m.l + spec.nowFrac * pw).toFixed(1);
        const line = svg("line", { x1: x, x2: x, y1: m.t, y2: m.t + ph, "data-role": "now", "stroke-width": 1 });
        line.style.stroke = "currentColor";
        line.style.opacity = "0.5";
        el.append(line);
      }
    }

    function draw() {
      st.frame = 0;
      if (st.stopped) return;
      const started = performance.now();
      const width = Math.max(240, Math.floor(container.clientWidth || 600));
      const n = st.now;
      const s = series(n);
      for (const el of [day, hour]) el.dataset.now = String(n);
      const dayFrac = (a, b) => (t) => Math.min(1, Math.max(0, (t - a) / (b - a)));
      const todayFrac = dayFrac(s.t0, s.t1), yesterdayFrac = dayFrac(s.y0, s.t0);
      const step = [1, 2, 3, 4, 6, 12].find((k) => (width - 44) / (24 / k) >= 44) || 12;
      const ticks = [];
      const d0 = new Date(s.t0 * 1000);
      for (let h = 0; h <= 24; h += step) {
        ticks.push([new Date(d0.getFullYear(), d0.getMonth(), d0.getDate(), h).getTime() / 1000, `${pad2(h)}:00`]);
      }
      const maxOf = (pts) => pts.reduce((acc, p) => Math.max(acc, p[1]), 0);
      drawPanel(day, width, Math.round(Math.min(320, Math.max(140, width * 0.28))), {
        max: Math.max(maxOf(s.today), maxOf(s.yesterday)), ticks, frac: todayFrac, nowFrac: todayFrac(n),
        series: [{ name: "yesterday", points: s.yesterday, frac: yesterdayFrac },
          { name: "today", points: s.today, frac: todayFrac }],
      });
      const hourFrac = dayFrac(s.hourStart, n);
      // ticks on the local clock's round minutes (a +05:45 zone is not aligned with epoch multiples)
      const every = [600, 900, 1200, 1800].find((k) => (width - 44) / (3600 / k) >= 48) || 1800;
      const hourTicks = [];
      const localOffset = (t) => -new Date(t * 1000).getTimezoneOffset() * 60;
      const first = Math.ceil((s.hourStart + localOffset(s.hourStart)) / every) * every - localOffset(s.hourStart);
      for (let t = first; t <= n; t += every) hourTicks.push([t, clockText(t)]);
      drawPanel(hour, width, 110, { max: maxOf(s.hour), ticks: hourTicks, frac: hourFrac, nowFrac: null,
        series: [{ name: "hour", points: s.hour, frac: hourFrac }] });
      // the newest bucket, with its time: an idle system may store no bucket at all, so the age shows
      const last = st.pts[st.pts.length - 1];
      total.textContent = last ? String(last[1]) : "–";
      answered.textContent = last ? String(last[2]) : "–";
      at.textContent = last ? `(at ${clockText(last[0])}:${pad2(new Date(last[0] * 1000).getSeconds())})` : "";
      err.textContent = st.error;
      stats.draws += 1;
      stats.drawMs = performance.now() - started;
      stats.points = st.pts.length;
    }

    const schedule = () => { if (!st.frame && !st.stopped) st.frame = requestAnimationFrame(draw); };

    /** Full load of yesterday+today on the first call and after local midnight, else the last minutes. */
    async function load() {
      const n = Date.now() / 1000;
      const y0 = midnight(n, -1);
      const full = st.day0 !== y0 || st.until === null;
      const since = full ? y0 : Math.max(y0, Math.floor(st.until / st.bucket) * st.bucket - REFETCH);
      const until = Math.ceil(n);
      const extra = typeof opts.params === "function" ? opts.params() : {};
      const body = await request(PATH, { ...extra, period_start: String(since), period_end: String(until) });
      if (st.stopped) return;
      if (!body || !Array.isArray(body.points)) {   // e.g. a MOR-style {"error": "Access Denied"}
        throw new Error(body && typeof body.error === "string" ? body.error : "no points in the answer");
      }
      const got = [];
      for (const p of body.points) {
        const t = Number(p.time), v = Number(p.total), a = Number(p.answered);
        if (Number.isFinite(t) && Number.isFinite(v) && t >= since) got.push([t, v, Number.isFinite(a) ? a : 0]);
      }
      got.sort((a, b) => a[0] - b[0]);
      if (Number(body.bucket_seconds) > 0) st.bucket = Number(body.bucket_seconds);
      st.pts = full ? got : st.pts.filter((p) => p[0] >= y0 && p[0] < since).concat(got);
      stats.loads += 1;
      stats.lastPeriodStart = since;
      st.day0 = y0;
      st.until = until;
      st.now = n;
      st.error = "";
    }

    /** Fetch and redraw; resolves once the new data is drawn (a call during a fetch shares it). */
    function refresh() {
      if (st.stopped) return Promise.resolve();
      if (!st.inflight) {
        st.inflight = load().catch((e) => {
          st.error = `History unavailable: ${e && e.message ? e.message : e}`;
        }).finally(() => {
          st.inflight = null;
          if (st.frame) cancelAnimationFrame(st.frame);
          draw();  // resolved means drawn: a caller may read the DOM right after
        });
      }
      return st.inflight;
    }

    const observer = typeof ResizeObserver === "function" ? new ResizeObserver(schedule) : null;
    if (observer) observer.observe(container);
    st.timer = setInterval(refresh, intervalMs);
    refresh();

    return {
      refresh,
      stats,
      stop() {
        st.stopped = true;
        clearInterval(st.timer);
        if (st.frame) cancelAnimationFrame(st.frame);
        if (observer) observer.disconnect();
      },
    };
  }

  window.ActiveCallsGraph = Object.freeze({ startGraph });
})();
