// What the calls table shows: one definition per column (its text and its sort key), plus the clock
// arithmetic. Sort keys never depend on "now": the time column sorts by the epoch the time counts from,
// so live durations never reorder rows — a row moves only when its own data changes.
"use strict";
(() => {
  const two = (n) => String(n).padStart(2, "0");

  function fmtDuration(s) {
    if (s == null || !Number.isFinite(s)) return "";
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return h ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
  }

  const join = (...parts) => parts.filter((p) => p != null && p !== "").join(" / ");
  const clock = (stamp) => (stamp ? String(stamp).slice(11) : "");  // "YYYY-MM-DD HH:MM:SS" → time
  const answered = (r) => r.status === "Answered";

  // The epoch the time column counts from: the answer for talking calls, the start for ringing ones.
  // Without the JSON extras (older daemon) the page's own estimate is used (see app.js `derive`).
  const answerEpoch = (r) => (r.answer_epoch != null ? r.answer_epoch : r._answerEst);
  const startEpoch = (r) => (r.start_epoch != null ? r.start_epoch : r._startEst);

  function timeKey(r) {  // larger = longer: answered calls by talk time above ringing ones by ring time
    if (answered(r)) { const a = answerEpoch(r); return a == null ? null : 4e9 - a; }
    const s = startEpoch(r);
    return s == null ? null : -s;
  }

  function timeText(r, ctx) {
    if (answered(r)) { const a = answerEpoch(r); return a == null ? fmtDuration(r.duration) : fmtDuration(ctx.now - a); }
    const s = startEpoch(r);
    return s == null ? "" : fmtDuration(ctx.now - s);
  }

  const lower = (v) => (v == null || v === "" ? null : String(v).toLowerCase());
  // digits sort as numbers would (same length first), the rest as lower-case text
  const numberish = (v) => (v == null || v === "" ? null : String(v).padStart(20, " "));

  const callerNames = (r) => join(r.user, r.device_name);
  const destName = (r) => r.destination_name || join(r.dst_user, r.dst_device_name);
  const dialled = (r) => r.localized_dst || r.dst || "";
  const status = (r) => (r.phase ? `${r.status} (${String(r.phase).replace(/_/g, " ")})` : r.status || "");
  const server = (r) => r.server_name || (r.server_id == null ? "" : String(r.server_id));

  const COLUMNS = [
    { id: "time", label: "Time", cls: "time", title: "talk time (answered) or ringing time (ringing)",
      text: timeText, key: timeKey },
    { id: "status", label: "Status", cls: "status", text: status, key: (r) => lower(status(r)) },
    { id: "start", label: "Start", cls: "start", text: (r) => clock(r.start_time),
      key: (r) => (startEpoch(r) == null ? null : startEpoch(r)) },
    { id: "answer", label: "Answered at", cls: "answer", text: (r) => clock(r.answer_time),
      key: (r) => (answered(r) && answerEpoch(r) != null ? answerEpoch(r) : null) },
    { id: "src", label: "Caller", cls: "src", text: (r) => r.src || "", key: (r) => numberish(r.src) },
    { id: "caller", label: "User / device", cls: "caller", text: callerNames, key: (r) => lower(callerNames(r)) },
    { id: "dst", label: "Destination", cls: "dst", text: dialled, key: (r) => numberish(dialled(r)) },
    { id: "country", label: "Country", cls: "country", text: (r) => r.direction_name || "",
      key: (r) => lower(r.direction_name) },
    { id: "dest", label: "Destination name", cls: "dest", text: destName, key: (r) => lower(destName(r)) },
    { id: "did", label: "DID", cls: "did", text: (r) => r.did || "", key: (r) => numberish(r.did) },
    { id: "provider", label: "Provider", cls: "provider", text: (r) => r.provider_name || "",
      key: (r) => lower(r.provider_name) },
    { id: "server", label: "Server", cls: "server", text: server, key: (r) => lower(server(r)) },
    { id: "actions", label: "", cls: "actions", text: null, key: null },
  ];

  // what free-text search looks through (lower-case, cached on the row object: rows are replaced, not
  // mutated, on every update)
  function haystack(r) {
    if (r._hay === undefined) {
      r._hay = [r.id, r.uniqueid, r.channel, r.src, r.user, r.device_name, r.localized_dst, r.dst, r.direction_name,
        r.destination_name, r.dst_user, r.dst_device_name, r.did, r.provider_name, server(r), r.status]
        .filter((v) => v != null && v !== "").join("\u0001").toLowerCase();
    }
    return r._hay;
  }

  window.ActiveCallsColumns = { COLUMNS, fmtDuration, haystack, two };
})();
