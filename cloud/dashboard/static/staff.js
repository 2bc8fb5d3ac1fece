// The staff app: find a product and where it is, pick and stage online orders, replenish,
// empty the locker compartments shoppers returned items into, handle alerts. Actions taken
// offline wait in a queue (client.js) and go out when the store's Wi-Fi is back. Features
// another cloud release brings (the orders lifecycle, replenishment tasks, locker returns)
// are found in the cloud's OpenAPI document; a panel whose route the cloud lacks is hidden,
// and order actions fall back to today's locker order routes.
import { ActionQueue, ApiFailure, Client, enc, explainFailure, installWorker, notice, q, watchNetwork } from "./client.js";
import { h, ago } from "./dom.js";
import { Catalogue, FINAL_STATES, READY_STATES, orderLabel, price, productTitle } from "./labels.js";

const KEY_STORAGE = "storegate.staff.key";
const STORE_STORAGE = "storegate.staff.store";
const $ = (id) => document.getElementById(id);

const app = {
  client: null,
  catalogue: null,
  store: null,
  routes: new Set(), // "METHOD /path" of the cloud's OpenAPI document
  tab: "find",
  orders: [],
  alerts: [],
  tasks: [],
  queue: new ActionQueue("storegate.staff.queue", { onChange: (e) => queued(e) }),
  drawNetwork: null,
};
window.storegateStaff = app; // for tests and the console

function explain(err) {
  return explainFailure(err, {
    forbidden: "This key may not use the staff app (use a staff or ops key)",
    offline: "The cloud cannot be reached",
  });
}

function queued(event) {
  app.drawNetwork?.();
  if (event.sent) {
    notice(`Sent: ${event.sent.label}`, "ok");
    refresh();
  } else if (event.failed) {
    notice(`Failed: ${event.failed.label}: ${explain(event.error)}`, "bad");
    refresh();
  }
}

const has = (method, path) => app.routes.has(`${method} ${path}`);

// ------------------------------------------------------------------ find

async function find(text) {
  const query = text.trim();
  if (!query) return;
  $("where").hidden = true;
  const digits = /^\d{8,14}$/.test(query);
  let found = [];
  try {
    found = await app.client.get(`/api/v1/products?${q({ q: query, limit: 20 })}`);
  } catch (err) {
    notice(`Search failed: ${explain(err)}`, "bad");
  }
  if (digits && !found.some((p) => p.gtin === query.padStart(14, "0"))) {
    await showWhere(query.padStart(14, "0"));
  } else if (found.length === 1) {
    await showWhere(found[0].gtin);
  }
  $("results").replaceChildren(...found.map((p) => h("li", { class: "card", dataset: { gtin: p.gtin } },
    h("button", { class: "pick", type: "button", onclick: () => showWhere(p.gtin) },
      h("h3", {}, productTitle(p)),
      h("div", { class: "meta" }, [p.category, p.gtin].filter(Boolean).join(" · "), " ", h("span", { class: "price" }, price(p)))))));
  if (!found.length && !digits) $("results").replaceChildren(h("li", { class: "empty" }, `No product matches “${query}”.`));
}

async function showWhere(gtin) {
  const card = $("where");
  let where;
  try {
    where = await app.client.get(`/api/v1/products/${enc(gtin)}/where?${q({ store: app.store })}`);
  } catch (err) {
    card.hidden = false;
    card.replaceChildren(h("p", { class: "failed" }, `Where is ${gtin}? ${explain(err)}`));
    return;
  }
  const p = where.product;
  const here = where.here.map((s) => h("li", { dataset: { shelf: s.shelf } },
    h("span", {}, s.shelf, s.area ? h("span", { class: "muted" }, ` · ${s.area}`) : null),
    h("strong", {}, s.count ? `${s.count} on shelf` : s.planned ? "planned, none counted" : "0")));
  const elsewhere = where.elsewhere.map((s) => h("li", { dataset: { store: s.store } },
    h("span", {}, s.name || s.store), h("strong", {}, `${s.on_hand} on hand`)));
  card.hidden = false;
  card.dataset.gtin = gtin;
  card.replaceChildren(
    h("h3", {}, p ? productTitle(p) : `GTIN ${gtin}`),
    h("div", { class: "meta" }, [p?.category, gtin].filter(Boolean).join(" · "), " ", h("span", { class: "price" }, price(p))),
    h("h4", {}, "In this store"),
    here.length ? h("ul", { class: "where-list", id: "where-here" }, here) : h("p", { class: "empty" }, "Not on any shelf of this store."),
    h("h4", {}, "Other stores"),
    elsewhere.length ? h("ul", { class: "where-list", id: "where-elsewhere" }, elsewhere) : h("p", { class: "empty" }, "No other store has it."));
}

async function scan() {
  const video = $("camera");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  } catch (err) {
    notice(`The camera is not available (${err.message}): type the GTIN instead.`, "bad");
    return;
  }
  const detector = new window.BarcodeDetector({ formats: ["ean_13", "ean_8", "upc_a", "upc_e", "code_128"] });
  video.srcObject = stream;
  video.hidden = false;
  await video.play();
  const stop = () => { stream.getTracks().forEach((t) => t.stop()); video.hidden = true; };
  const started = Date.now();
  const look = async () => {
    if (Date.now() - started > 30_000) { stop(); notice("No barcode seen in 30 s.", "bad"); return; }
    try {
      const codes = await detector.detect(video);
      if (codes.length) {
        stop();
        $("find-q").value = codes[0].rawValue;
        find(codes[0].rawValue);
        return;
      }
    } catch { /* a frame it could not read: try the next */ }
    setTimeout(look, 250);
  };
  look();
}

// ------------------------------------------------------------------ orders

function normaliseOrder(o) {
  return {
    ...o,
    order_id: String(o.order_id ?? o.id ?? ""),
    status: String(o.status ?? o.state ?? "unknown"),
    items: (o.items ?? o.lines ?? []).map((l) => ({ gtin: String(l.gtin ?? ""), quantity: Number(l.quantity ?? 1), product: l.product ?? null })),
  };
}

async function loadOrders() {
  if (!app.store) return;
  let orders;
  try {
    orders = has("GET", "/api/v1/orders")
      ? await app.client.get(`/api/v1/orders?${q({ store: app.store })}`)
      : await app.client.get(`/api/v1/dashboard/orders?${q({ store: app.store })}`);
  } catch (err) {
    if (err.missingRoute) { $("orders").replaceChildren(h("li", { class: "empty" }, "This cloud has no online orders.")); return; }
    notice(`Orders: ${explain(err)}`, "bad");
    return;
  }
  app.orders = (Array.isArray(orders) ? orders : orders.items ?? []).map(normaliseOrder);
  await app.catalogue.lookup(app.orders.flatMap((o) => o.items.map((l) => l.gtin)));
  renderOrders();
}

function itemLine(line) {
  const product = line.product ?? app.catalogue.get(line.gtin);
  return h("li", { dataset: { gtin: line.gtin } },
    h("span", {}, productTitle(product, line.gtin), product ? h("span", { class: "muted" }, ` ${price(product)}`) : null),
    h("span", { class: "qty" }, `× ${line.quantity}`));
}

function renderOrders() {
  const open = app.orders.filter((o) => !FINAL_STATES.has(o.status));
  const done = app.orders.filter((o) => FINAL_STATES.has(o.status)).slice(0, 5);
  const cards = [...open, ...done].map((o) => {
    const tone = READY_STATES.has(o.status) ? "ok" : FINAL_STATES.has(o.status) ? "bad" : "info";
    return h("li", { class: "card order", dataset: { order: o.order_id, status: o.status } },
      h("div", { class: "row-head" },
        h("h3", {}, `Order ${o.order_id.slice(0, 8)}`),
        h("span", { class: "status-pill", dataset: { tone } }, orderLabel(o.status))),
      o.bank ? h("div", { class: "meta" }, `Locker ${o.bank} / ${o.compartment ?? "…"}`) : null,
      h("ul", { class: "lines" }, o.items.map(itemLine)),
      h("div", { class: "picklist", hidden: true }),
      orderActions(o));
  });
  $("orders").replaceChildren(...(cards.length ? cards : [h("li", { class: "empty" }, "No online orders for this store.")]));
}

function orderActions(o) {
  const s = o.status;
  const buttons = [];
  const act = (name, label, body) => h("button", { class: "button", type: "button", dataset: { action: name }, onclick: () => orderAction(o, name, body ?? {}) }, label);
  buttons.push(h("button", { class: "button ghost", type: "button", dataset: { action: "pick-list" }, onclick: (e) => showPickList(o, e.target.closest(".card")) }, "Pick list"));
  if (["created", "placed", "reserved"].includes(s)) buttons.push(act("pick", "Start picking"));
  if (["ready", "ready_for_pickup"].includes(s) && has("POST", "/api/v1/orders/{order_id}/extend")) buttons.push(act("extend", "Extend hold"));
  if (s === "staged" && has("POST", "/api/v1/orders/{order_id}/ready")) buttons.push(act("ready", "Ready"));
  if (!FINAL_STATES.has(s)) buttons.push(act("cancel", "Cancel", { reason: "cancelled by staff" }));
  const stage = ["picking", "exception"].includes(s) ? stageForm(o) : null;
  return h("div", { class: "order-actions" }, stage, h("div", { class: "actions" }, buttons));
}

function stageForm(o) {
  const method = h("select", { "aria-label": "Stage in", class: "stage-method" },
    new Option("Locker", "locker"), new Option("Counter", "counter"), new Option("Curbside", "curbside"));
  const bank = h("input", { placeholder: "bank (any)", "aria-label": "Locker bank", class: "stage-bank" });
  const compartment = h("input", { placeholder: "door (any)", "aria-label": "Compartment", class: "stage-compartment" });
  // A handheld scanner types each EPC and Enter; empty: staged without EPCs (none sold).
  const epcs = h("textarea", { rows: 2, placeholder: "scanned EPCs, one a line", "aria-label": "Scanned EPCs", class: "stage-epcs" });
  const sync = () => { bank.hidden = compartment.hidden = method.value !== "locker"; };
  method.addEventListener("change", sync);
  sync();
  const go = h("button", { class: "button primary", type: "button", dataset: { action: "stage" }, onclick: () => {
    const body = { method: method.value };
    if (method.value === "locker") {
      if (bank.value.trim()) body.bank = bank.value.trim();
      if (compartment.value.trim()) body.compartment = compartment.value.trim();
    }
    const scanned = epcs.value.split(/\s+/).filter(Boolean);
    if (scanned.length && has("POST", "/api/v1/orders/{order_id}/stage")) body.epcs = scanned;
    orderAction(o, "stage", body);
  } }, "Stage");
  return h("div", { class: "stage" }, method, bank, compartment, epcs, go);
}

// The contract's action route when the cloud has it; else today's locker order routes.
function requestsFor(o, action, body) {
  const id = enc(o.order_id);
  if (has("POST", `/api/v1/orders/{order_id}/${action}`)) return [["POST", `/api/v1/orders/${id}/${action}`, body]];
  const state = (target, extra = {}) => ["POST", `/api/v1/orders/${id}/state`, { state: target, ...extra }];
  if (action === "pick") return [state("picking")];
  if (action === "cancel") return [state("cancelled", { reason: body.reason })];
  if (action === "stage") {
    const steps = [state("staged")];
    if (body.method === "locker") {
      const where = {};
      if (body.bank) where.bank = body.bank;
      if (body.compartment) where.compartment = body.compartment;
      steps.push(["POST", `/api/v1/orders/${id}/assign`, where]);
    }
    return steps;
  }
  return [];
}

async function orderAction(o, action, body) {
  const steps = requestsFor(o, action, body);
  if (!steps.length) { notice(`“${action}” is not available on this cloud yet.`, "bad"); return; }
  const label = `${action} order ${o.order_id.slice(0, 8)}`;
  try {
    let waiting = false;
    for (const [method, path, payload] of steps) {
      const answer = await app.queue.send(label, method, path, payload);
      waiting ||= Boolean(answer?.queued);
    }
    notice(waiting ? `Offline: “${label}” will be sent when the network is back.` : `Done: ${label}.`, waiting ? "info" : "ok");
  } catch (err) {
    notice(`Could not ${label}: ${explain(err)}`, "bad");
  }
  app.drawNetwork?.();
  await loadOrders();
}

async function showPickList(o, card) {
  const box = card.querySelector(".picklist");
  box.hidden = false;
  box.replaceChildren(h("p", { class: "muted" }, "Finding the items…"));
  let lines;
  try {
    if (has("GET", "/api/v1/orders/{order_id}/pick-list")) {
      lines = (await app.client.get(`/api/v1/orders/${enc(o.order_id)}/pick-list`)).lines;
    } else {
      // built here from the catalogue's `where` for each line
      lines = await Promise.all(o.items.map(async (l) => {
        const where = await app.client.get(`/api/v1/products/${enc(l.gtin)}/where?${q({ store: app.store })}`);
        return { gtin: l.gtin, quantity: l.quantity, locations: where.here.map((s) => ({ shelf: s.shelf, zone: s.area, count: s.count })) };
      }));
    }
  } catch (err) {
    box.replaceChildren(h("p", { class: "failed" }, `Pick list: ${explain(err)}`));
    return;
  }
  await app.catalogue.lookup(lines.map((l) => l.gtin));
  box.replaceChildren(h("h4", {}, "Pick list"), h("ul", { class: "lines" }, lines.map((l) => h("li", { dataset: { gtin: l.gtin } },
    h("span", {}, productTitle(app.catalogue.get(l.gtin), l.gtin), h("br"),
      h("span", { class: "muted" }, (l.locations ?? []).map((loc) => `${loc.shelf}${loc.zone ? ` (${loc.zone})` : ""}${(loc.count ?? loc.on_shelf) !== undefined ? `: ${loc.count ?? loc.on_shelf}` : ""}`).join(", ") || "not on any shelf")),
    h("span", { class: "qty" }, `× ${l.quantity}`)))));
}

// ------------------------------------------------------------------ tasks

async function loadTasks() {
  if (!app.store) return;
  try {
    app.tasks = await app.client.get(`/api/v1/stores/${enc(app.store)}/tasks?status=open`);
  } catch (err) {
    if (err.missingRoute) { hideTab("tasks"); return; }
    notice(`Tasks: ${explain(err)}`, "bad");
    return;
  }
  await app.catalogue.lookup(app.tasks.map((t) => t.gtin));
  const cards = app.tasks.map((t) => h("li", { class: "card", dataset: { task: t.id } },
    h("h3", {}, productTitle(app.catalogue.get(t.gtin), t.gtin)),
    h("div", { class: "meta" }, `${t.quantity} from ${t.from_zone ?? "stock"} to ${t.to_shelf ?? "the shelf"}`),
    h("div", { class: "actions" }, h("button", { class: "button primary", type: "button", onclick: () => taskDone(t) }, "Done"))));
  $("tasks").replaceChildren(...(cards.length ? cards : [h("li", { class: "empty" }, "Nothing to replenish.")]));
}

async function taskDone(t) {
  try {
    const answer = await app.queue.send(`task ${t.id} done`, "POST", `/api/v1/tasks/${enc(t.id)}/done`, {});
    notice(answer?.queued ? "Offline: the task will be closed when the network is back." : "Task done.", answer?.queued ? "info" : "ok");
  } catch (err) {
    notice(`Could not close the task: ${explain(err)}`, "bad");
  }
  await loadTasks();
}

// Returns a shopper dropped into a locker compartment: staff open it and take the parcel
// out (the items go back to stock when RFID reads them in).
async function loadLockerReturns() {
  const block = $("locker-returns-block");
  if (!app.store || !has("GET", "/api/v1/stores/{store}/lockers/returns")) { block.hidden = true; return; }
  let waiting;
  try {
    waiting = await app.client.get(`/api/v1/stores/${enc(app.store)}/lockers/returns?${q({ state: "returned_in_locker", limit: 100 })}`);
  } catch (err) {
    if (err.missingRoute) { block.hidden = true; return; }
    notice(`Locker returns: ${explain(err)}`, "bad");
    return;
  }
  block.hidden = false;
  const cards = waiting.map((r) => h("li", { class: "card", dataset: { lockerReturn: r.id } },
    h("h3", {}, `Empty compartment ${r.bank}/${r.compartment}`),
    h("div", { class: "meta" }, [`order ${r.order_id}`, `${r.items.length} item${r.items.length === 1 ? "" : "s"}`, r.dropped_at ? `dropped off ${ago(r.dropped_at)}` : null].filter(Boolean).join(" · ")),
    h("div", { class: "actions" }, h("button", { class: "button primary", type: "button", dataset: { action: "open-return" }, onclick: () => openReturn(r) }, "Open compartment"))));
  $("locker-returns").replaceChildren(...(cards.length ? cards : [h("li", { class: "empty" }, "No return waits in a locker.")]));
}

async function openReturn(r) {
  const where = `${r.bank}/${r.compartment}`;
  try {
    const answer = await app.queue.send(`open ${where}`, "POST", `/api/v1/stores/${enc(app.store)}/lockers/${enc(r.bank)}/${enc(r.compartment)}/open`, {});
    notice(answer?.queued ? `Offline: ${where} opens when the network is back.` : `Opening ${where}: take the parcel out and shut the door.`, answer?.queued ? "info" : "ok");
  } catch (err) {
    notice(`Could not open ${where}: ${explain(err)}`, "bad");
  }
}

// ------------------------------------------------------------------ alerts

async function loadAlerts() {
  if (!app.store) return;
  try {
    const page = await app.client.get(`/api/v1/alerts?${q({ store: app.store, state: "raised", limit: 100 })}`);
    app.alerts = page.items ?? [];
  } catch (err) {
    if (err.missingRoute) { hideTab("alerts"); return; }
    notice(`Alerts: ${explain(err)}`, "bad");
    return;
  }
  await app.catalogue.lookup(app.alerts.map((a) => a.gtin));
  renderAlerts();
}

function renderAlerts() {
  const open = app.alerts.filter((a) => !a.acknowledged_at).length;
  $("alert-count").hidden = !open;
  $("alert-count").textContent = String(open);
  const cards = app.alerts.map((a) => h("li", { class: "card alert-card", dataset: { alert: a.id, acknowledged: String(Boolean(a.acknowledged_at)) } },
    h("div", { class: "row-head" },
      h("h3", {}, productTitle(app.catalogue.get(a.gtin), a.gtin)),
      h("span", { class: "status-pill", dataset: { tone: a.type === "low_stock" ? "info" : "bad" } }, String(a.type).replaceAll("_", " "))),
    h("div", { class: "meta" }, [a.shelf ? `shelf ${a.shelf}` : "whole store", `${a.count} counted`, a.reorder_point !== null && a.reorder_point !== undefined ? `reorder at ${a.reorder_point}` : null, `raised ${ago(a.raised_at)}`].filter(Boolean).join(" · ")),
    a.acknowledged_at
      ? h("div", { class: "meta ack" }, `Acknowledged by ${a.acknowledged_by ?? "someone"} ${ago(a.acknowledged_at)}`)
      : h("div", { class: "actions" }, h("button", { class: "button primary", type: "button", dataset: { action: "ack" }, onclick: () => acknowledge(a) }, "Acknowledge"))));
  $("alerts").replaceChildren(...(cards.length ? cards : [h("li", { class: "empty" }, "No open alerts.")]));
}

async function acknowledge(a) {
  try {
    const answer = await app.queue.send(`acknowledge alert ${a.id}`, "POST", `/api/v1/alerts/${enc(a.id)}/ack`, {});
    if (answer?.queued) {
      notice("Offline: the acknowledgement will be sent when the network is back.", "info");
      return;
    }
    Object.assign(a, answer);
    renderAlerts();
  } catch (err) {
    notice(`Could not acknowledge: ${explain(err)}`, "bad");
  }
}

// ------------------------------------------------------------------ shell

function hideTab(name) {
  const button = document.querySelector(`#tabs [data-tab="${name}"]`);
  if (button) button.hidden = true;
  if (app.tab === name) selectTab("find");
}

function selectTab(name) {
  app.tab = name;
  for (const button of document.querySelectorAll("#tabs [data-tab]")) {
    button.setAttribute("aria-selected", String(button.dataset.tab === name));
  }
  for (const section of document.querySelectorAll("main .tab")) section.hidden = section.id !== `tab-${name}`;
  refresh();
}

function refresh() {
  if (!app.client) return;
  if (app.tab === "orders") loadOrders();
  if (app.tab === "tasks") { loadTasks(); loadLockerReturns(); }
  loadAlerts(); // the badge counts open alerts whatever the tab
}

async function learnRoutes() {
  try {
    const doc = await fetch("/openapi.json", { cache: "no-store" }).then((r) => r.json());
    app.routes = new Set(Object.entries(doc.paths ?? {}).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`)));
  } catch {
    app.routes = new Set(); // offline: today's routes only
  }
  if (!has("GET", "/api/v1/stores/{store}/tasks") && !has("GET", "/api/v1/stores/{store}/lockers/returns")) hideTab("tasks");
}

async function signIn(key) {
  const client = new Client(key);
  const session = await client.post("/api/v1/dashboard/session"); // proves the key and its role
  localStorage.setItem(KEY_STORAGE, key);
  app.client = client;
  app.queue.client = client;
  app.catalogue = new Catalogue(client);
  await learnRoutes();
  const stores = await client.get("/api/v1/stores");
  const select = $("store");
  select.replaceChildren(...stores.map((s) => new Option(s.name ? `${s.name}` : s.id, s.id)));
  const remembered = localStorage.getItem(STORE_STORAGE);
  app.store = stores.find((s) => s.id === remembered)?.id ?? stores[0]?.id ?? null;
  select.value = app.store ?? "";
  select.hidden = stores.length < 2;
  $("login").close();
  for (const id of ["main", "tabs", "signout"]) $(id).hidden = false;
  notice(app.store ? `Signed in as ${session.name}.` : "This key sees no store.", app.store ? "ok" : "bad");
  app.queue.flush();
  refresh();
}

function signOut(message) {
  localStorage.removeItem(KEY_STORAGE);
  app.client = null;
  for (const id of ["main", "tabs", "signout"]) $(id).hidden = true;
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message ?? "";
  if (!$("login").open) $("login").showModal();
}

function init() {
  installWorker("/staff/");
  app.drawNetwork = watchNetwork($("network"), app.queue);
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    try {
      await signIn(key);
    } catch (err) {
      signOut(explain(err));
    }
  });
  $("signout").addEventListener("click", () => signOut());
  $("find-form").addEventListener("submit", (event) => { event.preventDefault(); find($("find-q").value); });
  $("scan").hidden = !("BarcodeDetector" in window && navigator.mediaDevices?.getUserMedia);
  $("scan").addEventListener("click", scan);
  $("store").addEventListener("change", (e) => {
    app.store = e.target.value;
    localStorage.setItem(STORE_STORAGE, app.store);
    $("where").hidden = true;
    refresh();
  });
  for (const button of document.querySelectorAll("#tabs [data-tab]")) {
    button.addEventListener("click", () => selectTab(button.dataset.tab));
  }
  $("orders-refresh").addEventListener("click", loadOrders);
  $("tasks-refresh").addEventListener("click", () => { loadTasks(); loadLockerReturns(); });
  $("alerts-refresh").addEventListener("click", loadAlerts);
  setInterval(refresh, 30_000);
  const saved = localStorage.getItem(KEY_STORAGE);
  if (saved) resume(saved);
  else signOut();
}

// A saved key survives a start without network: the app waits for it instead of signing out.
function resume(key) {
  signIn(key).catch((err) => {
    if (err instanceof ApiFailure && err.offline) {
      notice("Offline: waiting for the network to sign in again…", "bad");
      // again when the browser says the network is back, or in 5 s, whichever comes first
      let again = () => { again = () => {}; resume(key); };
      window.addEventListener("online", () => again(), { once: true });
      setTimeout(() => again(), 5000);
    } else {
      signOut(explain(err));
    }
  });
}

init();
