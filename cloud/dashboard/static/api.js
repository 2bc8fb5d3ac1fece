// The cloud's REST API and the dashboard's live event stream.

export class ApiFailure extends Error {
  constructor(status, error, detail) {
    super(detail || error || `HTTP ${status}`);
    this.status = status;
    this.error = error;
    this.detail = detail;
  }
}

export class Api {
  constructor(key) {
    this.key = key;
  }

  async request(method, path) {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: { Authorization: `Bearer ${this.key}`, Accept: "application/json" },
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiFailure(0, "network", `cannot reach the cloud (${err.message})`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      throw new ApiFailure(response.status, body?.error, body?.detail);
    }
    return body;
  }

  get(path) { return this.request("GET", path); }
  post(path) { return this.request("POST", path); }

  session() { return this.post("/api/v1/dashboard/session"); }
  stores() { return this.get("/api/v1/stores"); }
  nodes(store) { return this.get(`/api/v1/stores/${encodeURIComponent(store)}/nodes`); }
  inventory(store) { return this.get(`/api/v1/stores/${encodeURIComponent(store)}/inventory`); }
  // Provided by the inventory and lockers domains: 404 when a domain is not installed.
  openAlerts(store) {
    const q = new URLSearchParams({ store, state: "raised", limit: 500 });
    return this.get(`/api/v1/alerts?${q}`);
  }
  compartments(store) { return this.get(`/api/v1/stores/${encodeURIComponent(store)}/lockers`); }
  // What happened before the page opened (the dashboard domain's lists)
  orders(store) { return this.get(`/api/v1/dashboard/orders?${new URLSearchParams({ store, limit: 50 })}`); }
  offers(store) { return this.get(`/api/v1/dashboard/offers?${new URLSearchParams({ store, limit: 50 })}`); }
  acknowledge(alertId) { return this.post(`/api/v1/alerts/${encodeURIComponent(alertId)}/ack`); }
  // The catalogue's names for GTINs (404 when the catalogue domain is not installed)
  products(gtins) { return this.get(`/api/v1/products?${new URLSearchParams({ gtins: gtins.join(","), limit: 200 })}`); }
  history(store, gtin, minutes = 60, points = 120) {
    const q = new URLSearchParams({ store, gtin, minutes, points });
    return this.get(`/api/v1/dashboard/history?${q}`);
  }
}

/**
 * A self-healing event stream. EventSource cannot send headers, so each (re)connection
 * first trades the API key for a short-lived session token. `onOpen(reconnected)` lets the
 * caller re-read state it may have missed while disconnected.
 */
export class LiveStream {
  constructor(api, { onEvent, onState, onOpen, onAuthFailure }) {
    this.api = api;
    this.handlers = { onEvent, onState, onOpen, onAuthFailure };
    this.source = null;
    this.retry = 0;
    this.opened = false;
    this.stopped = false;
    this.timer = null;
  }

  async start() {
    if (this.stopped) return;
    this.handlers.onState(this.opened ? "reconnecting" : "connecting");
    let session;
    try {
      session = await this.api.session();
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        this.handlers.onAuthFailure(err);
        return;
      }
      this.scheduleRetry();
      return;
    }
    const source = new EventSource(`/api/v1/dashboard/events?token=${encodeURIComponent(session.token)}`);
    this.source = source;
    source.onmessage = (event) => this.dispatch(event);
    source.onerror = () => {
      // The token only opens a stream: a reconnect needs a new one, so always do it ourselves.
      if (source !== this.source) return;
      source.close();
      this.source = null;
      this.scheduleRetry();
    };
  }

  // Each event is {kind, store, at, dropped, data}; the handlers get the change's data with
  // store, at and dropped merged in (the envelope wins: data cannot fake its store).
  dispatch(event) {
    let body;
    try {
      body = JSON.parse(event.data);
    } catch {
      return; // not JSON: nothing we could show
    }
    if (!body || typeof body.kind !== "string") return;
    const kind = body.kind;
    const data = { ...(body.data ?? {}), store: body.store, at: body.at, dropped: body.dropped };
    if (kind === "hello") {
      const reconnected = this.opened;
      this.opened = true;
      this.retry = 0;
      this.handlers.onState("live");
      this.handlers.onOpen(reconnected);
      return;
    }
    this.handlers.onEvent(kind, data);
  }

  scheduleRetry() {
    if (this.stopped) return;
    this.handlers.onState("reconnecting");
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
