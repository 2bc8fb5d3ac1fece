// The shopper app: consent to offers (and withdraw it), offers arriving live while in the
// store, orders with their status, pickup code and QR, cancel and "I'm here", and returning
// a collected order into a locker compartment (drop-off code).
// Live updates come over the cloud's shopper stream (/api/v1/app/events, opened with a
// one-use token), which carries only this shopper's offers and orders.
import { ActionQueue, ApiFailure, Client, TokenStream, enc, explainFailure, installWorker, notice, watchNetwork } from "./client.js";
import { h, clock } from "./dom.js";
import { FINAL_STATES, READY_STATES, orderLabel, price, productTitle } from "./labels.js";
import { qrSvg } from "./qr.js";

const LOGIN_STORAGE = "storegate.shopper.login";
const CODES_STORAGE = "storegate.shopper.codes";
const $ = (id) => document.getElementById(id);

const app = {
  client: null,
  shopper: null,
  consent: false,
  offers: new Map(), // offer_id -> offer, newest first
  orders: new Map(), // order_id -> order
  fresh: new Set(),
  stream: null,
  routes: new Set(),
  queue: new ActionQueue("storegate.shopper.queue", { onChange: (e) => queued(e) }),
  drawNetwork: null,
};
window.storegateShopper = app;

function explain(err) {
  return explainFailure(err, { forbidden: "This key may not be used by the shopper app", offline: "No connection" });
}

function queued(event) {
  app.drawNetwork?.();
  if (event.sent) { notice(`Sent: ${event.sent.label}`, "ok"); loadAll(); }
  if (event.failed) { notice(`Failed: ${event.failed.label}: ${explain(event.error)}`, "bad"); loadAll(); }
}

const has = (method, path) => app.routes.has(`${method} ${path}`);
const path = (p) => `/api/v1/shoppers/${enc(app.shopper)}${p}`;
const appPath = (p) => `/api/v1/app/shoppers/${enc(app.shopper)}${p}`;

function savedCodes() {
  try {
    return JSON.parse(localStorage.getItem(CODES_STORAGE) ?? "{}");
  } catch {
    return {};
  }
}

// ------------------------------------------------------------------ consent

async function loadConsent() {
  app.consent = Boolean((await app.client.get(appPath(""))).consent);
  renderConsent();
}

function renderConsent() {
  $("consent").dataset.consent = String(app.consent);
  $("consent-text").textContent = app.consent
    ? "On: offers reach you while you are in a store. You can stop them at any time."
    : "Off: no offers. Turn them on to get offers for products near you while in a store.";
  $("consent-toggle").textContent = app.consent ? "Stop offers" : "Get offers";
  $("consent-toggle").className = app.consent ? "button" : "button primary";
}

async function toggleConsent() {
  const wanted = !app.consent;
  try {
    const answer = await app.queue.send(wanted ? "turn offers on" : "turn offers off", "PUT", path(""), { consent: wanted });
    if (answer?.queued) { notice("Offline: your choice will be sent when you are back online.", "info"); return; }
    app.consent = Boolean(answer.consent);
    notice(app.consent ? "Offers are on." : "Offers are off: your consent is withdrawn.", "ok");
  } catch (err) {
    notice(`Could not change your choice: ${explain(err)}`, "bad");
  }
  renderConsent();
}

// ------------------------------------------------------------------ offers

function addOffer(offer, fresh = false) {
  app.offers.delete(offer.offer_id);
  app.offers = new Map([[offer.offer_id, offer], ...app.offers]);
  if (fresh) app.fresh.add(offer.offer_id);
}

function renderOffers() {
  const items = [...app.offers.values()].slice(0, 20).map((o) => h("li", {
    class: `card offer${app.fresh.has(o.offer_id) ? " fresh" : ""}`, dataset: { offer: o.offer_id, status: o.status },
  },
  h("h3", {}, o.title ?? "An offer for you"),
  o.body ? h("p", {}, o.body) : null,
  h("div", { class: "meta" }, `${o.store} · ${o.zone} · ${clock(o.decided_at)}${o.expires_at ? ` · until ${clock(o.expires_at)}` : ""}`),
  o.status === "opened" || o.status === "redeemed" ? null
    : h("div", { class: "actions" }, h("button", { class: "button", type: "button", onclick: () => openOffer(o) }, "Open"))));
  app.fresh.clear();
  $("offers").replaceChildren(...(items.length ? items : [h("li", { class: "empty" }, app.consent ? "No offers yet: they arrive while you are in a store." : "Turn offers on to receive them.")]));
}

async function openOffer(o) {
  try {
    await app.queue.send("open offer", "POST", `/api/v1/offers/${enc(o.offer_id)}/opened`, {});
    o.status = "opened";
  } catch (err) {
    notice(`Could not open the offer: ${explain(err)}`, "bad");
  }
  renderOffers();
}

// ------------------------------------------------------------------ orders

const RETURN_LABELS = {
  requested: "Return: asking the locker for a door…",
  return_pending: "Return: drop it off",
  returned_in_locker: "Returned: in the locker",
  emptied: "Returned: being checked in",
  return_completed: "Return complete",
  failed: "Return failed",
  expired: "Return expired",
  cancelled: "Return called off",
};
const RETURN_OPEN = new Set(["requested", "return_pending"]); // the drop-off code still works
const RETURN_AGAIN = new Set(["failed", "expired", "cancelled"]); // a new return may start

function returnParts(o, codes) {
  const ret = o.locker_return;
  const state = o.state ?? o.status;
  const buttons = [];
  if (state === "collected" && (!ret || RETURN_AGAIN.has(ret.state)) && has("POST", "/api/v1/orders/{order_id}/locker-return")) {
    buttons.push(h("button", { class: "button", type: "button", dataset: { action: "locker-return" }, onclick: () => startReturn(o) }, "Return to a locker"));
  }
  if (!ret) return { parts: [], buttons };
  const open = RETURN_OPEN.has(ret.state);
  if (open && has("POST", "/api/v1/orders/{order_id}/locker-return/cancel")) {
    buttons.push(h("button", { class: "button ghost", type: "button", dataset: { action: "cancel-return" }, onclick: () => orderAction(o, "locker-return/cancel", "call off the return") }, "Call off the return"));
  }
  const code = codes[`return:${ret.id}`]?.code;
  const parts = [
    h("div", { class: "meta", dataset: { returnState: ret.state } },
      RETURN_LABELS[ret.state] ?? ret.state.replaceAll("_", " "),
      open ? `: locker ${ret.bank}, door ${ret.compartment}, until ${clock(ret.expires_at)}` : "",
      ret.reason && RETURN_AGAIN.has(ret.state) ? ` (${ret.reason})` : ""),
    open && code ? h("div", { class: "code-box" }, h("div", { class: "pickup-code dropoff-code", dataset: { code } }, code)) : null,
    open && !code ? h("p", { class: "meta" }, "The drop-off code was shown on another device.") : null,
  ];
  return { parts, buttons };
}

async function startReturn(o) {
  try {
    // the items are the EPCs staff scanned when they picked the order
    const detail = await app.client.get(`/api/v1/orders/${enc(o.order_id)}`);
    const epcs = (detail.picked?.epcs ?? []).map((p) => p.epc);
    if (!epcs.length) {
      notice("This order's items were not scanned at picking: please return them at the counter.", "bad");
      return;
    }
    const started = await app.client.post(`/api/v1/orders/${enc(o.order_id)}/locker-return`, { items: epcs.map((epc) => ({ epc })) });
    // the cloud hands the drop-off code out once: keep it on this device to show it again
    localStorage.setItem(CODES_STORAGE, JSON.stringify({ ...savedCodes(), [`return:${started.id}`]: { code: started.code } }));
    o.locker_return = { id: started.id, state: started.state, bank: started.bank, compartment: started.compartment, expires_at: started.expires_at, reason: started.reason };
    notice(`Your drop-off code opens locker ${started.bank}, door ${started.compartment}.`, "ok");
  } catch (err) {
    notice(`Could not start the return: ${explain(err)}`, "bad");
  }
  renderOrders();
}

function renderOrders() {
  const codes = savedCodes();
  const items = [...app.orders.values()].map((o) => {
    const ready = READY_STATES.has(o.state ?? o.status);
    const state = o.state ?? o.status;
    const code = codes[o.order_id];
    const total = o.items.reduce((sum, l) => sum + (l.product?.price ? Number(l.product.price) * l.quantity : 0), 0);
    const currency = o.items.find((l) => l.product?.currency)?.product.currency;
    const buttons = [];
    if (ready && !code && !o.code_issued) buttons.push(h("button", { class: "button primary", type: "button", dataset: { action: "code" }, onclick: () => pickupCode(o) }, "Show pickup code"));
    if (ready && has("POST", "/api/v1/orders/{order_id}/arrived")) buttons.push(h("button", { class: "button", type: "button", dataset: { action: "arrived" }, onclick: () => orderAction(o, "arrived", "I'm here") }, "I'm here"));
    if (!FINAL_STATES.has(state) && has("POST", "/api/v1/orders/{order_id}/cancel")) buttons.push(h("button", { class: "button ghost", type: "button", dataset: { action: "cancel" }, onclick: () => orderAction(o, "cancel", "cancel the order") }, "Cancel order"));
    const returned = returnParts(o, codes);
    buttons.push(...returned.buttons);
    return h("li", { class: "card order", dataset: { order: o.order_id, state } },
      h("div", { class: "row-head" },
        h("h3", {}, `Order ${o.order_id.slice(0, 8)}`),
        h("span", { class: "status-pill", dataset: { tone: ready || state === "collected" ? "ok" : FINAL_STATES.has(state) ? "bad" : "info" } }, orderLabel(state))),
      h("ul", { class: "lines" }, o.items.map((l) => h("li", {},
        h("span", {}, productTitle(l.product, l.gtin)), h("span", { class: "qty" }, `× ${l.quantity} ${price(l.product)}`)))),
      total ? h("div", { class: "meta" }, "Total ", h("span", { class: "price" }, price({ price: total, currency }))) : null,
      ready && o.bank ? h("div", { class: "meta" }, `Locker ${o.bank}, door ${o.compartment}${o.hold_until ? `, until ${clock(o.hold_until)}` : ""}`) : null,
      code ? h("div", { class: "code-box" },
        h("div", { class: "pickup-code", dataset: { code: code.code } }, code.code),
        code.qr ? qrSvg(code.qr) : null) : null,
      !code && o.code_issued && !FINAL_STATES.has(state) ? h("p", { class: "meta" }, "The pickup code was shown on another device.") : null,
      ...returned.parts,
      buttons.length ? h("div", { class: "actions" }, buttons) : null);
  });
  $("orders").replaceChildren(...(items.length ? items : [h("li", { class: "empty" }, "No orders.")]));
}

async function pickupCode(o) {
  try {
    const answer = await app.client.post(`/api/v1/orders/${enc(o.order_id)}/pickup-code`);
    // the cloud hands a code out once: keep it on this device to show it again
    localStorage.setItem(CODES_STORAGE, JSON.stringify({ ...savedCodes(), [o.order_id]: answer }));
  } catch (err) {
    notice(`No pickup code: ${explain(err)}`, "bad");
  }
  renderOrders();
}

async function orderAction(o, action, label) {
  try {
    const answer = await app.queue.send(label, "POST", `/api/v1/orders/${enc(o.order_id)}/${action}`, {});
    notice(answer?.queued ? `Offline: “${label}” will be sent when you are back online.` : `Done: ${label}.`, answer?.queued ? "info" : "ok");
  } catch (err) {
    notice(`Could not ${label}: ${explain(err)}`, "bad");
  }
  loadOrders();
}

async function loadOrders() {
  try {
    const orders = await app.client.get(appPath("/orders"));
    app.orders = new Map(orders.map((o) => [o.order_id, o]));
  } catch (err) {
    notice(`Orders: ${explain(err)}`, "bad");
  }
  renderOrders();
}

async function loadOffers() {
  try {
    const offers = await app.client.get(appPath("/offers"));
    app.offers = new Map(offers.map((o) => [o.offer_id, o]));
  } catch (err) {
    notice(`Offers: ${explain(err)}`, "bad");
  }
  renderOffers();
}

async function loadAll() {
  await Promise.all([loadConsent().catch((err) => notice(explain(err), "bad")), loadOffers(), loadOrders()]);
  renderOffers();
}

// ------------------------------------------------------------------ live

function onEvent(body) {
  if (body.kind === "hello") { loadAll(); return; } // (re)connected: catch up on what was missed
  if (body.kind === "offer" && body.data?.offer_id) {
    addOffer(body.data, true);
    renderOffers();
  } else if (body.kind === "order" && body.data?.order_id) {
    app.orders.set(body.data.order_id, body.data);
    app.orders = new Map([...app.orders.entries()].sort(([, a], [, b]) => String(b.updated_at).localeCompare(String(a.updated_at))));
    renderOrders();
  }
}

function setLive(state) {
  $("live").dataset.state = state === "live" ? "online" : state === "connecting" ? "sending" : "offline";
  $("live").textContent = state === "live" ? "● live" : state;
}

// ------------------------------------------------------------------ session

async function learnRoutes() {
  try {
    const doc = await fetch("/openapi.json", { cache: "no-store" }).then((r) => r.json());
    app.routes = new Set(Object.entries(doc.paths ?? {}).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`)));
  } catch {
    app.routes = new Set();
  }
}

async function signIn(shopper, key) {
  const client = new Client(key);
  app.client = client;
  app.shopper = shopper;
  await loadConsent(); // proves the key (401/403) before anything is stored
  localStorage.setItem(LOGIN_STORAGE, JSON.stringify({ shopper, key }));
  app.queue.client = client;
  await learnRoutes();
  $("login").close();
  $("main").hidden = false;
  $("signout").hidden = false;
  app.stream?.stop();
  app.stream = new TokenStream("/api/v1/app/events",
    async () => (await client.post("/api/v1/app/session", { shopper_id: shopper })).token,
    { onEvent, onState: setLive, onAuthFailure: (err) => signOut(explain(err)) });
  app.stream.start();
  app.queue.flush();
  await loadAll();
}

function signOut(message) {
  app.stream?.stop();
  app.stream = null;
  app.client = null;
  localStorage.removeItem(LOGIN_STORAGE);
  setLive("offline");
  $("main").hidden = true;
  $("signout").hidden = true;
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message ?? "";
  if (!$("login").open) $("login").showModal();
}

function resume(saved) {
  signIn(saved.shopper, saved.key).catch((err) => {
    if (err instanceof ApiFailure && err.offline) {
      notice("Offline: waiting for the network…", "bad");
      // again when the browser says the network is back, or in 5 s, whichever comes first
      let again = () => { again = () => {}; resume(saved); };
      window.addEventListener("online", () => again(), { once: true });
      setTimeout(() => again(), 5000);
    } else {
      signOut(explain(err));
    }
  });
}

function init() {
  installWorker("/app/");
  app.drawNetwork = watchNetwork($("network"), app.queue);
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const shopper = $("shopper").value.trim();
    const key = $("key").value.trim();
    if (!shopper || !key) return;
    try {
      await signIn(shopper, key);
    } catch (err) {
      signOut(explain(err));
    }
  });
  $("signout").addEventListener("click", () => signOut());
  $("consent-toggle").addEventListener("click", toggleConsent);
  $("orders-refresh").addEventListener("click", loadOrders);
  let saved = null;
  try {
    saved = JSON.parse(localStorage.getItem(LOGIN_STORAGE) ?? "null");
  } catch {
    saved = null;
  }
  if (saved?.shopper && saved?.key) resume(saved);
  else signOut();
}

init();
