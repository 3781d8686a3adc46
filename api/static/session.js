// v2 login for the Active Calls page: username + password → a JWT kept only in this module's memory
// (a private field: never localStorage/sessionStorage, a cookie or the URL), refreshed ~60 s before it
// expires and once after a 401, plus a confirmed hang-up. Text is only ever set with textContent.
//
//   ActiveCallsSession.mountLogin(form, (session) => ...)  fills `form` with username/password/submit and an
//       error line; POSTs /billing/api/v2/authentication/login with Basic and shows the server's error text
//       (with its Retry-After on a 429 or 503). Returns {showError(text)} for the page (e.g. "Session expired").
//   ActiveCallsSession.login(username, password) -> Promise<Session> (rejects with the error text).
//   session.user {id, username, role, name}, .mayHangUp, .expiresAt (Date, browser clock), .active
//   session.authorize(headers) -> the same headers (Headers or a plain object) with Authorization: Bearer
//   session.fetch(url, init) -> Response: authorized, refreshed first if about to expire, retried once
//       after refreshing on a 401. session.request(path, params) -> JSON (the params as a POST form, MOR's
//       method, to path?format=json; the shape ActiveCallsGraph's `request` has).
//   session.hangUp(callId, label) -> Promise<{ok, status, body}>: a <dialog> asks "Hang up call N (label)?";
//       Cancel (or Escape) resolves {ok: false, status: 0, body: null} without a request, "Hang up" sends
//       DELETE /billing/api/v2/active_calls/{id}. A network failure is {ok: false, status: 0, body: {error}}.
//   session.logout() forgets the token. session.onchange / session.onexpire(reason): optional callbacks.
"use strict";
(() => {
  const V2 = "/billing/api/v2/";
  const LOGIN = V2 + "authentication/login";
  const REFRESH = V2 + "authentication/refresh";
  const LEAD = 60;  // seconds before expiry to refresh (a quarter of the lifetime when that is shorter)

  /** Basic credentials of UTF-8 text (btoa alone only takes Latin-1). */
  function basic(username, password) {
    let bin = "";
    for (const b of new TextEncoder().encode(`${username}:${password}`)) bin += String.fromCharCode(b);
    return "Basic " + btoa(bin);
  }

  async function jsonOrNull(resp) {
    try {
      return await resp.json();
    } catch {
      return null;
    }
  }

  /** "(retry in N s)" from a Retry-After of delta-seconds or an HTTP date; "" when absent or past. */
  function retryAfter(value) {
    if (!value) return "";
    const v = value.trim();
    const secs = /^\d+$/.test(v) ? Number(v) : Math.ceil((Date.parse(v) - Date.now()) / 1000);
    return Number.isFinite(secs) && secs > 0 ? ` (retry in ${secs} s)` : "";
  }

  function errorText(resp, body, what) {
    const msg = body && typeof body.error === "string" && body.error ? body.error : `${what} (HTTP ${resp.status})`;
    return msg + retryAfter(resp.headers.get("Retry-After"));  // 429, and a 503 "busy" says when, too
  }

  function confirmDialog(text) {
    return new Promise((resolve) => {
      const dialog = document.createElement("dialog");
      dialog.className = "ac-confirm";
      const question = document.createElement("p");
      question.textContent = text;
      const form = document.createElement("form");
      form.method = "dialog";
      const cancel = document.createElement("button");
      cancel.value = "cancel";
      cancel.dataset.action = "cancel";
      cancel.textContent = "Cancel";
      const ok = document.createElement("button");
      ok.value = "hangup";
      ok.dataset.action = "hangup";
      ok.className = "danger";
      ok.textContent = "Hang up";
      form.append(cancel, " ", ok);
      dialog.append(question, form);
      dialog.addEventListener("close", () => {
        resolve(dialog.returnValue === "hangup");
        dialog.remove();
      }, { once: true });
      document.body.append(dialog);
      dialog.showModal();
      cancel.focus();  // Enter on a freshly opened dialog must not hang up
    });
  }

  class Session {
    #token = null;
    #timer = 0;
    #refreshing = null;

    constructor(body) {
      this.onchange = null;
      this.onexpire = null;
      this.#apply(body);
    }

    #apply(body) {
      if (!body || typeof body.token !== "string" || !body.token) throw new Error("Login answer without a token");
      const secs = Number(body.expires_in);
      this.#token = body.token;
      this.user = body.user || null;
      this.mayHangUp = body.may_hang_up === true;
      this.expiresAt = new Date(Date.now() + (Number.isFinite(secs) ? secs : 0) * 1000);
      this.serverExpiresAt = typeof body.expires_at === "string" ? body.expires_at : null;  // API zone text
      clearTimeout(this.#timer);
      if (secs > 0) {
        const lead = Math.min(LEAD, secs / 4);
        this.#timer = setTimeout(() => { this.refresh(); }, (secs - lead) * 1000);
      }
    }

    #expire(reason) {
      this.logout();
      if (typeof this.onexpire === "function") this.onexpire(reason);
    }

    get active() {
      return this.#token !== null;
    }

    /** Adds the Bearer header to `headers` in place (a Headers or a plain object; a new object when
     *  absent) and returns it; after logout it adds nothing. */
    authorize(headers) {
      const out = headers || {};
      if (!this.#token) return out;
      if (out instanceof Headers) out.set("Authorization", `Bearer ${this.#token}`);
      else out.Authorization = `Bearer ${this.#token}`;
      return out;
    }

    /** A new token for the current one; resolves true when renewed. A 401/403 ends the session (onexpire);
     *  a network or server error keeps the token and tries again in 15 s while it is still valid. */
    refresh() {
      if (!this.#token) return Promise.resolve(false);
      if (!this.#refreshing) {
        this.#refreshing = (async () => {
          let resp;
          try {
            resp = await fetch(REFRESH, { method: "POST", headers: this.authorize({}), cache: "no-store" });
          } catch {
            resp = null;
          }
          const body = resp ? await jsonOrNull(resp) : null;
          if (resp && resp.ok && this.#token) {
            this.#apply(body);
            if (typeof this.onchange === "function") this.onchange(this);
            return true;
          }
          if (resp && (resp.status === 401 || resp.status === 403)) {
            this.#expire(errorText(resp, body, "Session expired"));
          } else if (this.#token && this.expiresAt.getTime() - Date.now() > 15000) {
            clearTimeout(this.#timer);
            this.#timer = setTimeout(() => { this.refresh(); }, 15000);
          }
          return false;
        })().finally(() => { this.#refreshing = null; });
      }
      return this.#refreshing;
    }

    async fetch(url, init) {
      if (this.#token && this.expiresAt.getTime() - Date.now() < 5000) await this.refresh();  // slept past it
      const send = () => fetch(url, { ...(init || {}), headers: this.authorize(new Headers((init || {}).headers)) });
      const resp = await send();
      if (resp.status !== 401 || !this.#token) return resp;
      return (await this.refresh()) ? send() : resp;
    }

    /** POST `params` as a form (MOR's method; GET is off by default) to `path?format=json` (the API reads
     *  `format` from the query string only) → the answer's JSON. */
    async request(path, params) {
      const url = /[?&]format=/.test(path) ? path : `${path}${path.includes("?") ? "&" : "?"}format=json`;
      const resp = await this.fetch(url, { method: "POST", body: new URLSearchParams(params || {}), cache: "no-store" });
      const body = await jsonOrNull(resp);
      if (!resp.ok) throw new Error(errorText(resp, body, "Request failed"));
      return body;
    }

    async hangUp(callId, label) {
      const text = label ? `Hang up call ${callId} (${label})?` : `Hang up call ${callId}?`;
      if (!(await confirmDialog(text))) return { ok: false, status: 0, body: null };
      if (!this.#token) return { ok: false, status: 0, body: { error: "Not logged in" } };
      try {
        const resp = await this.fetch(`${V2}active_calls/${encodeURIComponent(String(callId))}`, { method: "DELETE" });
        return { ok: resp.ok, status: resp.status, body: await jsonOrNull(resp) };
      } catch (e) {
        return { ok: false, status: 0, body: { error: `Network error: ${e && e.message ? e.message : e}` } };
      }
    }

    logout() {
      this.#token = null;
      clearTimeout(this.#timer);
    }
  }

  async function login(username, password) {
    let resp;
    try {
      resp = await fetch(LOGIN, { method: "POST", headers: { Authorization: basic(username, password) },
        cache: "no-store", credentials: "omit" });
    } catch (e) {
      throw new Error(`Login failed: ${e && e.message ? e.message : "network error"}`);
    }
    const body = await jsonOrNull(resp);
    if (!resp.ok) throw new Error(errorText(resp, body, "Login failed"));
    return new Session(body);
  }

  function mountLogin(form, onLogin) {
    const field = (label, attrs) => {
      const wrap = document.createElement("label");
      const input = document.createElement("input");
      for (const [k, v] of Object.entries(attrs)) input.setAttribute(k, v);
      wrap.append(label + " ", input);
      form.append(wrap);
      return input;
    };
    form.replaceChildren();
    form.setAttribute("method", "post");  // never a GET: a submit without this script must not put the password in a URL
    const username = field("Username", { name: "username", autocomplete: "username", required: "" });
    const password = field("Password", { name: "password", type: "password", autocomplete: "current-password",
      required: "" });
    const submit = document.createElement("button");
    submit.type = "submit";
    submit.textContent = "Log in";
    const error = document.createElement("span");
    error.className = "error";
    error.dataset.role = "login-error";
    error.setAttribute("role", "alert");
    form.append(submit, " ", error);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (submit.disabled) return;
      submit.disabled = true;
      error.textContent = "";
      try {
        const session = await login(username.value, password.value);
        password.value = "";
        onLogin(session);
      } catch (e) {
        error.textContent = e && e.message ? e.message : String(e);
      } finally {
        submit.disabled = false;
      }
    });
    return { showError(text) { error.textContent = text; } };
  }

  window.ActiveCallsSession = Object.freeze({ mountLogin, login, Session });
})();
