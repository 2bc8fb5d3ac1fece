// Everything the dashboard knows, per store, and how each live change updates it.
// Change handlers read only the fields they need: unknown fields are ignored, and a change
// missing what a view needs is kept in the activity log instead of breaking the page.

const FEED_LIMIT = 50;
const ACTIVITY_LIMIT = 40;
const CHART_WINDOW_MS = 60 * 60 * 1000;

const str = (v) => (v === undefined || v === null ? "" : String(v));
const int = (v) => (Number.isFinite(Number(v)) ? Number(v) : null);

function storeState() {
  return {
    nodes: new Map(),       // node -> {node, status, last_seen, health_at, outbox, drivers, version}
    shelves: new Map(),     // "shelf|gtin" -> {shelf, gtin, count, updated_at, changed_at}
    alerts: new Map(),      // id -> {id, type, shelf, gtin, count, at}
    banks: new Map(),       // bank -> Map(compartment -> {state, flags, door_open, occupied})
    orders: new Map(),      // order_id -> order
    offers: new Map(),      // offer_id -> offer
    presence: new Map(),    // zone -> count
    liveStock: new Map(),   // gtin -> [{t, total}] observed since the page opened
  };
}

export class DashboardState {
  constructor() {
    this.stores = [];        // [{id, name, nodes}]
    this.byStore = new Map();
    this.activity = [];      // newest first
    this.dropped = 0;
    this.products = new Map(); // gtin -> the catalogue's product
  }

  store(id) {
    if (!this.byStore.has(id)) this.byStore.set(id, storeState());
    return this.byStore.get(id);
  }

  setStores(stores) {
    this.stores = stores;
    for (const s of stores) this.store(s.id);
  }

  setNodes(storeId, nodes) {
    const s = this.store(storeId);
    s.nodes.clear();
    for (const n of nodes) s.nodes.set(n.node, { ...n });
  }

  setInventory(storeId, items) {
    const s = this.store(storeId);
    s.shelves.clear();
    for (const item of items) {
      s.shelves.set(`${item.shelf}|${item.gtin}`, {
        shelf: item.shelf, gtin: item.gtin, count: item.count, updated_at: item.updated_at, changed_at: null,
      });
    }
    // what was read is a point on the chart, too (history may lag behind the live state)
    const now = Date.now();
    for (const gtin of new Set(items.map((item) => item.gtin))) {
      recordStock(s, gtin, now, this.gtinTotal(storeId, gtin));
    }
  }

  setAlerts(storeId, alerts) {
    const s = this.store(storeId);
    s.alerts.clear();
    for (const a of alerts) HANDLERS.alert(this, storeId, { ...a, quiet: true });
  }

  setOrders(storeId, rows) {
    const s = this.store(storeId);
    s.orders.clear();
    // the list is newest first; the map keeps insertion order oldest first
    for (const row of [...rows].reverse()) {
      s.orders.set(String(row.order_id), { ...row, order_id: String(row.order_id), state: str(row.state ?? row.status), at: row.updated_at });
    }
  }

  setOffers(storeId, rows) {
    const s = this.store(storeId);
    s.offers.clear();
    for (const row of [...rows].reverse()) {
      s.offers.set(String(row.offer_id), { ...row, offer_id: String(row.offer_id), at: row.decided_at });
    }
  }

  setProducts(products) {
    for (const p of products) this.products.set(p.gtin, p);
  }

  setCompartments(storeId, rows) {
    const s = this.store(storeId);
    s.banks.clear();
    for (const row of rows) HANDLERS.compartment(this, storeId, row);
  }

  gtinTotal(storeId, gtin) {
    let total = 0;
    let seen = false;
    for (const row of this.store(storeId).shelves.values()) {
      if (row.gtin === gtin && row.count !== null) { total += row.count; seen = true; }
    }
    return seen ? total : null;
  }

  log(kind, store, text, tone = "info") {
    this.activity.unshift({ kind, store, text, tone, at: new Date() });
    this.activity.length = Math.min(this.activity.length, ACTIVITY_LIMIT);
  }

  /** Apply one live change; returns the names of the views that need drawing again. */
  apply(kind, data) {
    if (Number.isFinite(data.dropped) && data.dropped > this.dropped) this.dropped = data.dropped;
    const storeId = str(data.store);
    const handler = HANDLERS[kind];
    if (!handler || (!storeId && kind !== "dead_letter")) {
      this.log(kind, storeId, summarize(data));
      return ["activity"];
    }
    return handler(this, storeId, data);
  }
}

function summarize(data) {
  return Object.entries(data)
    .filter(([k, v]) => !["store", "at", "dropped"].includes(k) && (typeof v !== "object" || v === null))
    .slice(0, 5)
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}

const HANDLERS = {
  node_status(state, storeId, d) {
    const node = str(d.node);
    if (!node) return [];
    const s = state.store(storeId);
    const prev = s.nodes.get(node) ?? { node };
    s.nodes.set(node, { ...prev, status: str(d.status) || "unknown", bd_seq: d.bd_seq, status_at: d.at, last_seen: d.at ?? prev.last_seen });
    state.log("node_status", storeId, `${node} is ${d.status}`, d.status === "online" ? "ok" : "bad");
    return ["nodes", "stores", "activity"];
  },

  node_health(state, storeId, d) {
    const node = str(d.node);
    if (!node) return [];
    const s = state.store(storeId);
    const prev = s.nodes.get(node) ?? { node, status: "unknown" };
    s.nodes.set(node, {
      ...prev,
      health_at: d.health_at ?? d.at,
      last_seen: d.at ?? prev.last_seen,
      health: {
        outbox: d.outbox ?? prev.health?.outbox,
        drivers: Array.isArray(d.drivers) ? d.drivers : prev.health?.drivers,
        cpu_percent: d.cpu_percent,
        uptime_s: d.uptime_s,
      },
      version: d.version ?? prev.version,
    });
    return ["nodes"];
  },

  inventory(state, storeId, d) {
    const s = state.store(storeId);
    const touched = new Set();
    for (const item of Array.isArray(d.items) ? d.items : []) {
      const shelf = str(item.shelf);
      const gtin = str(item.gtin);
      if (!shelf || !gtin) continue;
      s.shelves.set(`${shelf}|${gtin}`, {
        shelf, gtin, count: int(item.count), updated_at: d.at, changed_at: d.at,
      });
      touched.add(gtin);
    }
    const now = Date.now();
    for (const gtin of touched) recordStock(s, gtin, now, state.gtinTotal(storeId, gtin));
    return ["shelves", "chart"];
  },

  inventory_replaced(state, storeId, d) {
    state.log("inventory_replaced", storeId, `${str(d.node)} sent a full snapshot (${str(d.shelves)} shelves)`);
    return ["reload-inventory", "activity"];
  },

  dead_letter(state, storeId, d) {
    state.log("dead_letter", storeId, `rejected ${str(d.reason)}: ${str(d.topic)}`, "bad");
    return ["activity"];
  },

  alert(state, storeId, d) {
    const s = state.store(storeId);
    const type = str(d.type) || "alert";
    const id = str(d.id) || `${type}|${str(d.shelf)}|${str(d.gtin)}`;
    const cleared = str(d.state) === "cleared";
    if (cleared) s.alerts.delete(id);
    else s.alerts.set(id, { id, type, shelf: str(d.shelf), gtin: str(d.gtin), count: int(d.count), at: d.at, acknowledged_by: d.acknowledged_by ?? null });
    if (str(d.event) === "acknowledged") return ["shelves"];
    if (d.quiet) return ["shelves"]; // read at start-up, not news
    const where = [d.shelf, d.gtin].filter(Boolean).join(" · ");
    state.log("alert", storeId, `${type.replace("_", " ")} ${cleared ? "cleared" : "raised"} ${where}`, cleared ? "ok" : "warn");
    return ["shelves", "activity"];
  },

  compartment(state, storeId, d) {
    const bank = str(d.bank);
    const compartment = str(d.compartment);
    if (!bank || !compartment) return [];
    const s = state.store(storeId);
    if (!s.banks.has(bank)) s.banks.set(bank, new Map());
    s.banks.get(bank).set(compartment, {
      state: str(d.state) || "unknown",
      flags: Array.isArray(d.flags) ? d.flags.map(str) : [],
      door_open: Boolean(d.door_open),
      occupied: Boolean(d.occupied),
    });
    return ["lockers"];
  },

  order(state, storeId, d) {
    const id = str(d.order_id);
    if (!id) return [];
    const s = state.store(storeId);
    const prev = s.orders.get(id) ?? {};
    s.orders.delete(id); // re-insert: newest activity first
    s.orders.set(id, { ...prev, order_id: id, state: str(d.state), bank: str(d.bank ?? prev.bank), compartment: str(d.compartment ?? prev.compartment), at: d.at });
    trim(s.orders);
    return ["orders"];
  },

  offer(state, storeId, d) {
    const id = str(d.offer_id);
    if (!id) return [];
    const s = state.store(storeId);
    const prev = s.offers.get(id) ?? {};
    s.offers.delete(id);
    s.offers.set(id, { ...prev, offer_id: id, campaign: str(d.campaign ?? prev.campaign), zone: str(d.zone ?? prev.zone), status: str(d.status), reason: str(d.reason), at: d.at });
    trim(s.offers);
    return ["offers"];
  },

  presence(state, storeId, d) {
    const zone = str(d.zone);
    if (!zone) return [];
    state.store(storeId).presence.set(zone, int(d.count) ?? 0);
    return ["offers"];
  },
};

function recordStock(s, gtin, t, total) {
  const points = s.liveStock.get(gtin) ?? [];
  points.push({ t, total });
  while (points.length && points[0].t < t - CHART_WINDOW_MS) points.shift();
  s.liveStock.set(gtin, points);
}

function trim(map) {
  while (map.size > FEED_LIMIT) map.delete(map.keys().next().value);
}
