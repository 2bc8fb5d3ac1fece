// The cloud's REST API and the dashboard's live event stream.

import { ApiFailure, Client, TokenStream } from "./client.js";

export { ApiFailure };

/** The dashboard's routes over the apps' client (the same key, errors and JSON). */
export class Api extends Client {
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
 * The dashboard's live event stream: a `TokenStream` whose token is a dashboard session
 * traded for the API key. Each event is {kind, store, at, dropped, data}; `onEvent(kind,
 * data)` gets the change's data with store, at and dropped merged in (the envelope wins:
 * data cannot fake its store).
 */
export class LiveStream extends TokenStream {
  constructor(api, { onEvent, onState, onOpen, onAuthFailure }) {
    super("/api/v1/dashboard/events", async () => (await api.session()).token, {
      onEvent: (body) => {
        if (!body || typeof body.kind !== "string" || body.kind === "hello") return;
        onEvent(body.kind, { ...(body.data ?? {}), store: body.store, at: body.at, dropped: body.dropped });
      },
      onState,
      onOpen,
      onAuthFailure,
    });
  }
}
