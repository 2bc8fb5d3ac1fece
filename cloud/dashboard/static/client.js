// The apps' way to the cloud: JSON requests with the API key, a queue for actions taken
// while the store's Wi-Fi is down, and a one-use-token event stream.

export class ApiFailure extends Error {
  constructor(status, error, detail) {
    super(detail || error || `HTTP ${status}`);
    this.status = status;
    this.error = error;
    this.detail = detail;
  }

  // The route itself does not exist on this cloud (a feature another release brings),
  // as opposed to a 404 about a missing order or product.
  get missingRoute() {
    return this.status === 405 || (this.status === 404 && this.detail === "Not Found");
  }

  get offline() { return this.status === 0; }
}

export class Client {
  constructor(key) {
    this.key = key;
  }

  async request(method, path, body, contentType = "application/json") {
    const headers = { Authorization: `Bearer ${this.key}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = contentType;
      init.body = contentType === "application/json" ? JSON.stringify(body) : body;
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiFailure(0, "network", `cannot reach the cloud (${err.message})`);
    }
    let parsed = null;
    try {
      parsed = await response.json();
    } catch {
      parsed = null;
    }
    if (!response.ok) throw new ApiFailure(response.status, parsed?.error, parsed?.detail);
    return parsed;
  }

  get(path) { return this.request("GET", path); }
  post(path, body = {}) { return this.request("POST", path, body); }
  put(path, body) { return this.request("PUT", path, body); }
}

export const q = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "")).toString();
export const enc = encodeURIComponent;

/**
 * Actions (acknowledge, stage, cancel, ...) go through here. Sent at once when the cloud is
 * reachable; when it is not, they wait in localStorage (they survive a reload) and go out
 * in order as soon as it is, and the page says so. An action the cloud then refuses is
 * reported as failed, never dropped silently. At most `limit` wait; past that a new one
 * fails at once ("too many actions waiting").
 */
export class ActionQueue {
  constructor(storageKey, { onChange, limit = 50 }) {
    this.storageKey = storageKey;
    this.onChange = onChange;
    this.limit = limit;
    this.client = null;
    this.flushing = false;
    window.addEventListener("online", () => this.flush());
    setInterval(() => this.flush(), 10_000);
  }

  get waiting() {
    try {
      return JSON.parse(localStorage.getItem(this.storageKey) ?? "[]");
    } catch {
      return [];
    }
  }

  save(items) {
    localStorage.setItem(this.storageKey, JSON.stringify(items));
    this.onChange?.({ waiting: items });
  }

  /** Resolves with the answer, or with {queued: true} when it waits for the network. */
  async send(label, method, path, body) {
    if (this.waiting.length === 0) {
      try {
        return await this.client.request(method, path, body);
      } catch (err) {
        if (!err.offline) throw err;
      }
    }
    const items = this.waiting;
    if (items.length >= this.limit) {
      throw new ApiFailure(0, "queue_full", `too many actions waiting for the network (${this.limit}); try again when online`);
    }
    items.push({ label, method, path, body, at: Date.now() });
    this.save(items);
    return { queued: true };
  }

  async flush() {
    if (this.flushing || !this.client) return;
    this.flushing = true;
    try {
      let items = this.waiting;
      while (items.length) {
        const [first, ...rest] = items;
        try {
          await this.client.request(first.method, first.path, first.body);
          this.onChange?.({ sent: first });
        } catch (err) {
          if (err.offline) break; // still offline: keep it, try later
          this.onChange?.({ failed: first, error: err });
        }
        items = rest;
        this.save(items);
      }
    } finally {
      this.flushing = false;
    }
  }
}

/**
 * A self-healing event stream opened with a one-use token (EventSource cannot send the
 * key, and a token opens one stream only, so every reconnect is ours). `openToken()`
 * returns the token; `onEvent(body)` gets each parsed event; `onOpen(reconnected)` lets
 * the caller re-read what it may have missed while disconnected.
 */
export class TokenStream {
  constructor(url, openToken, { onEvent, onState, onOpen, onAuthFailure }) {
    this.url = url;
    this.openToken = openToken;
    this.handlers = { onEvent, onState, onOpen, onAuthFailure };
    this.retry = 0;
    this.opened = false;
    this.stopped = false;
    this.source = null;
    this.timer = null;
  }

  async start() {
    if (this.stopped) return;
    this.handlers.onState?.(this.opened ? "reconnecting" : "connecting");
    let token;
    try {
      token = await this.openToken();
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        this.handlers.onAuthFailure?.(err);
        return;
      }
      this.again();
      return;
    }
    const source = new EventSource(`${this.url}?token=${enc(token)}`);
    this.source = source;
    source.onmessage = (event) => {
      let body;
      try {
        body = JSON.parse(event.data);
      } catch {
        return;
      }
      if (body?.kind === "hello") {
        const reconnected = this.opened;
        this.opened = true;
        this.retry = 0;
        this.handlers.onState?.("live");
        this.handlers.onOpen?.(reconnected);
      }
      this.handlers.onEvent(body);
    };
    source.onerror = () => {
      if (source !== this.source) return;
      source.close();
      this.source = null;
      this.again();
    };
  }

  again() {
    if (this.stopped) return;
    this.handlers.onState?.("reconnecting");
    const delay = Math.min(15000, 500 * 2 ** this.retry);
    this.retry += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.start(), delay);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.source?.close();
    this.source = null;
  }
}

/** Register the app's service worker (it caches the shell for flaky Wi-Fi). */
export function installWorker(scope) {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.register(`${scope}sw.js`, { scope }).catch(() => {
    // an app without its worker still works online; nothing to tell the user
  });
}

/** Show the network state in `el` and keep it current. */
export function watchNetwork(el, queue) {
  const draw = () => {
    const waiting = queue?.waiting.length ?? 0;
    const online = navigator.onLine;
    el.dataset.state = online ? (waiting ? "sending" : "online") : "offline";
    el.textContent = online
      ? (waiting ? `sending ${waiting} waiting action${waiting > 1 ? "s" : ""}…` : "online")
      : `offline${waiting ? ` · ${waiting} action${waiting > 1 ? "s" : ""} waiting` : ""}`;
  };
  window.addEventListener("online", draw);
  window.addEventListener("offline", draw);
  draw();
  return draw;
}

/**
 * A failure in words for the person holding the app. `forbidden` and `offline` are what
 * this app says when its key may not do that, or when the cloud cannot be reached.
 */
export function explainFailure(err, { forbidden, offline }) {
  if (!(err instanceof ApiFailure)) return `Unexpected error: ${err.message}`;
  if (err.status === 401) return `That key was not accepted (${err.detail || "unauthorized"}).`;
  if (err.status === 403) return `${forbidden}: ${err.detail || "forbidden"}.`;
  if (err.offline) return `${offline}: ${err.detail}`;
  return err.detail || err.error || `HTTP ${err.status}`;
}

/** Show `text` in the page's #notice line (hidden when empty); tone: info, ok or bad. */
export function notice(text, tone = "info") {
  const el = document.getElementById("notice");
  el.hidden = !text;
  el.textContent = text ?? "";
  el.dataset.tone = tone;
}
