// The dashboard: sign in once, read the current state over REST, then follow live changes.
import { Api, ApiFailure, LiveStream } from "./api.js";
import { drawChart } from "./chart.js";
import { DashboardState } from "./state.js";
import {
  renderActivity, renderLegend, renderLockers, renderNodes, renderOffers, renderOrders,
  renderShelves, renderStores, productName,
} from "./views.js";

const KEY_STORAGE = "storegate.dashboard.key";
const STORE_STORAGE = "storegate.dashboard.store";
const CHART_MINUTES = 60;
const $ = (id) => document.getElementById(id);

const app = {
  api: null,
  stream: null,
  state: new DashboardState(),
  store: null,
  gtin: null,
  history: new Map(), // "store|gtin" -> [{t, total}] from the history endpoint
  dirty: new Set(),
  frame: 0,
  asked: new Set(), // GTINs whose names were asked for
};
window.storegateDashboard = app; // for tests and for poking around in the console

function setConnection(state, text) {
  const el = $("connection");
  el.dataset.state = state;
  el.textContent = text ?? { live: "live", connecting: "connecting…", reconnecting: "reconnecting…", error: "error", idle: "offline" }[state] ?? state;
}

function explain(err) {
  if (!(err instanceof ApiFailure)) return `Unexpected error: ${err.message}`;
  if (err.status === 401) return `That API key was not accepted (${err.detail || "unauthorized"}). Check it and try again.`;
  if (err.status === 403) return `This key may not open the dashboard: ${err.detail || "forbidden"}. Use an ops or staff key.`;
  if (err.status === 0) return `Cannot reach the cloud: ${err.detail}`;
  return `The cloud answered ${err.status}: ${err.detail || err.error}`;
}

function showLogin(message) {
  const dialog = $("login");
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message ?? "";
  $("board").hidden = true;
  $("signout").hidden = true;
  if (!dialog.open) dialog.showModal();
  $("key").focus();
}

// ------------------------------------------------------------------ drawing

function invalidate(...views) {
  for (const view of views) app.dirty.add(view);
  if (!app.frame) app.frame = requestAnimationFrame(draw);
}

function draw() {
  app.frame = 0;
  const dirty = app.dirty;
  app.dirty = new Set();
  if (!app.store) return;
  const store = app.state.store(app.store);
  if (dirty.has("stores")) renderStores(app.state, app.store, selectStore);
  if (dirty.has("nodes")) renderNodes(store);
  if (dirty.has("shelves")) { renderShelves(store, app.gtin, pickGtin, app.state.products, acknowledge); updateGtinChoices(store); }
  if (dirty.has("chart")) drawStock();
  if (dirty.has("lockers")) renderLockers(store);
  if (dirty.has("orders")) renderOrders(store, app.state.products);
  if (dirty.has("offers")) renderOffers(store);
  if (dirty.has("activity")) renderActivity(app.state, app.store);
}

const ALL_VIEWS = ["stores", "nodes", "shelves", "chart", "lockers", "orders", "offers", "activity"];

// ------------------------------------------------------------------ the chart

function updateGtinChoices(store) {
  const select = $("chart-gtin");
  const gtins = [...new Set([...store.shelves.values()].map((r) => r.gtin))].sort();
  if (!app.gtin && gtins.length) pickGtin(gtins[0]);
  if (app.gtin && !gtins.includes(app.gtin)) gtins.unshift(app.gtin);
  const label = (g) => productName(app.state.products, g);
  const current = [...select.options].map((o) => `${o.value}=${o.text}`).join(",");
  if (current !== gtins.map((g) => `${g}=${label(g)}`).join(",")) {
    select.replaceChildren(...gtins.map((g) => new Option(label(g), g)));
  }
  select.value = app.gtin ?? "";
}

function pickGtin(gtin) {
  if (gtin === app.gtin) return;
  app.gtin = gtin;
  loadHistory(app.store, gtin);
  invalidate("shelves", "chart");
}

async function loadHistory(storeId, gtin) {
  if (!storeId || !gtin) return;
  $("chart-note").textContent = "loading…";
  try {
    const body = await app.api.history(storeId, gtin, CHART_MINUTES, 120);
    const step = body.every_s * 1000;
    // a sample is the count at the END of its interval
    app.history.set(`${storeId}|${gtin}`, body.times.map((t, i) => ({ t: new Date(t).getTime() + step, total: body.total[i] })));
    $("chart-note").textContent = `last ${CHART_MINUTES} min, all shelves`;
  } catch (err) {
    $("chart-note").textContent = `history unavailable: ${err.detail || err.message}`;
  }
  invalidate("chart");
}

function drawStock() {
  if (!app.store || !app.gtin) {
    drawChart($("chart"), [], { from: Date.now() - 1, to: Date.now(), emptyText: "No stock seen yet" });
    return;
  }
  const store = app.state.store(app.store);
  const history = app.history.get(`${app.store}|${app.gtin}`) ?? [];
  const live = store.liveStock.get(app.gtin) ?? [];
  const to = Date.now();
  const points = [...history, ...live].sort((a, b) => a.t - b.t);
  // zoom in on what is known: a store that started a few minutes ago gets a readable chart
  const first = points.find((p) => p.total !== null);
  const windowStart = to - CHART_MINUTES * 60 * 1000;
  const from = first ? Math.max(windowStart, Math.min(first.t, to - 60_000) - 10_000) : windowStart;
  const now = app.state.gtinTotal(app.store, app.gtin);
  if (now !== null) points.push({ t: to, total: now });
  drawChart($("chart"), points, { from, to });
}

// ------------------------------------------------------------------ loading

// State owned by optional domains: a missing domain (404) leaves the panel to live changes.
async function optional(storeId, what, request) {
  try {
    return await request;
  } catch (err) {
    if (err.status !== 404) app.state.log("error", storeId, `${what}: ${explain(err)}`, "bad");
    return null;
  }
}

async function loadStore(storeId) {
  const [nodes, inventory, alerts, compartments, orders, offers] = await Promise.all([
    app.api.nodes(storeId),
    app.api.inventory(storeId),
    optional(storeId, "alerts", app.api.openAlerts(storeId)),
    optional(storeId, "lockers", app.api.compartments(storeId)),
    optional(storeId, "orders", app.api.orders(storeId)),
    optional(storeId, "offers", app.api.offers(storeId)),
  ]);
  app.state.setNodes(storeId, nodes);
  app.state.setInventory(storeId, inventory);
  if (alerts && Array.isArray(alerts.items)) app.state.setAlerts(storeId, alerts.items);
  if (Array.isArray(compartments)) app.state.setCompartments(storeId, compartments);
  if (Array.isArray(orders)) app.state.setOrders(storeId, orders);
  if (Array.isArray(offers)) app.state.setOffers(storeId, offers);
  await loadProducts(storeId);
}

// Names for the GTINs on screen, asked once each (a cloud without a catalogue: GTINs stay)
async function loadProducts(storeId) {
  const store = app.state.store(storeId);
  const gtins = new Set([...store.shelves.values()].map((r) => r.gtin));
  for (const a of store.alerts.values()) if (a.gtin) gtins.add(a.gtin);
  for (const o of store.orders.values()) for (const l of o.items ?? []) gtins.add(String(l.gtin));
  const missing = [...gtins].filter((g) => /^\d{14}$/.test(g) && !app.state.products.has(g) && !app.asked.has(g));
  for (let i = 0; i < missing.length; i += 100) {
    const chunk = missing.slice(i, i + 100);
    chunk.forEach((g) => app.asked.add(g));
    const found = await optional(storeId, "catalogue", app.api.products(chunk));
    if (Array.isArray(found)) app.state.setProducts(found);
  }
}

async function acknowledge(alert) {
  try {
    const answer = await app.api.acknowledge(alert.id);
    app.state.apply("alert", { ...answer, event: "acknowledged" });
    invalidate("shelves");
  } catch (err) {
    app.state.log("error", app.store, `acknowledge: ${explain(err)}`, "bad");
    invalidate("activity");
  }
}


async function loadAll() {
  const stores = await app.api.stores();
  app.state.setStores(stores);
  await Promise.all(stores.map((s) => app.api.nodes(s.id).then((nodes) => app.state.setNodes(s.id, nodes))));
  const remembered = localStorage.getItem(STORE_STORAGE);
  const chosen = stores.find((s) => s.id === app.store) ?? stores.find((s) => s.id === remembered) ?? stores[0];
  if (chosen) await selectStore(chosen.id);
  invalidate(...ALL_VIEWS);
}

async function selectStore(storeId) {
  if (storeId !== app.store) app.gtin = null; // a re-read of the same store keeps the chart
  app.store = storeId;
  localStorage.setItem(STORE_STORAGE, storeId);
  try {
    await loadStore(storeId);
  } catch (err) {
    app.state.log("error", storeId, explain(err), "bad");
  }
  invalidate(...ALL_VIEWS);
}

function onEvent(kind, data) {
  const droppedBefore = app.state.dropped;
  const views = app.state.apply(kind, data);
  if (app.state.dropped > droppedBefore && app.store) {
    // the server dropped changes for this slow connection: re-read rather than guess
    selectStore(app.store);
  }
  if (views.includes("reload-inventory") && data.store === app.store) {
    app.api.inventory(app.store).then((items) => {
      app.state.setInventory(app.store, items);
      invalidate("shelves", "chart");
    }).catch(() => {});
  }
  if (data.store === app.store || !data.store) invalidate(...views.filter((v) => v !== "reload-inventory"));
  if (data.store === app.store && ["inventory", "alert", "order"].includes(kind)) {
    loadProducts(app.store).then(() => invalidate("shelves", "orders")).catch(() => {});
  }
  if (views.includes("nodes")) invalidate("stores");
}

// ------------------------------------------------------------------ session

async function connect(key) {
  const api = new Api(key);
  await api.session(); // proves the key (and its role) before anything is stored
  localStorage.setItem(KEY_STORAGE, key);
  app.api = api;
  app.state = new DashboardState(); // nothing seen with another key carries over
  app.history.clear();
  $("login").close();
  $("board").hidden = false;
  $("signout").hidden = false;
  await loadAll();
  app.stream?.stop();
  app.stream = new LiveStream(api, {
    onEvent,
    onState: (s) => setConnection(s),
    onOpen: (reconnected) => {
      app.state.dropped = 0; // the counter is per stream
      // anything missed while the stream was down is re-read
      if (reconnected && app.store) selectStore(app.store);
    },
    onAuthFailure: (err) => signOut(explain(err)),
  });
  app.stream.start();
}

function signOut(message) {
  app.stream?.stop();
  app.stream = null;
  localStorage.removeItem(KEY_STORAGE);
  setConnection("idle");
  showLogin(message);
}

function init() {
  renderLegend();
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    $("login-error").hidden = true;
    setConnection("connecting");
    try {
      await connect(key);
    } catch (err) {
      setConnection("error", "not signed in");
      showLogin(explain(err));
    }
  });
  $("signout").addEventListener("click", () => signOut());
  $("chart-gtin").addEventListener("change", (e) => pickGtin(e.target.value));
  window.addEventListener("resize", () => invalidate("chart"));
  // relative times ("12 s ago") and the chart's moving window
  setInterval(() => invalidate("nodes", "chart"), 5000);

  const saved = localStorage.getItem(KEY_STORAGE);
  if (saved) {
    connect(saved).catch((err) => signOut(explain(err)));
  } else {
    showLogin();
  }
}

init();
