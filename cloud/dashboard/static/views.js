// One function per panel: each redraws its panel from the state.
import { ago, clock, h } from "./dom.js";

const $ = (id) => document.getElementById(id);

export const COMPARTMENT_STATES = [
  "available", "reserved", "loading", "awaiting_pickup", "pickup_open", "expired_hold", "out_of_service",
  "return_pending", "return_open", "return_dropped",
];
const TONES = {
  online: "ok", offline: "bad", raised: "warn", cleared: "ok",
  triggered: "info", delivered: "info", opened: "ok", redeemed: "ok", suppressed: "warn",
  collected: "ok", picked_up: "ok", ready: "info", expired: "bad", cancelled: "bad", failed: "bad",
};
const label = (text) => String(text || "unknown").replaceAll("_", " ");

function nodeHealth(nodes) {
  const statuses = [...nodes.values()].map((n) => n.status);
  if (statuses.includes("offline")) return "bad";
  if (statuses.length && statuses.every((s) => s === "online")) return "ok";
  return statuses.includes("online") ? "partial" : "unknown";
}

export function renderStores(state, selected, onSelect) {
  const tabs = state.stores.map((store) => {
    const nodes = state.store(store.id).nodes;
    const online = [...nodes.values()].filter((n) => n.status === "online").length;
    return h("button", {
      class: "store-tab", type: "button", role: "tab",
      "aria-selected": store.id === selected ? "true" : "false",
      dataset: { store: store.id },
      title: `${online}/${nodes.size} nodes online`,
      onclick: () => onSelect(store.id),
    },
    h("span", { class: "dot", dataset: { health: nodeHealth(nodes) } }),
    store.name ? `${store.name}` : store.id,
    h("span", { class: "muted" }, `${online}/${nodes.size}`));
  });
  $("stores").replaceChildren(...tabs);
}

export function renderNodes(store) {
  const cards = [...store.nodes.values()].sort((a, b) => a.node.localeCompare(b.node)).map((n) => {
    const health = n.health ?? {};
    const outbox = health.outbox ?? {};
    const drivers = Array.isArray(health.drivers) ? health.drivers : [];
    const status = n.status || "unknown";
    return h("article", { class: "node", dataset: { node: n.node, status, changedAt: n.status_at ?? "" } },
      h("div", { class: "node-head" },
        h("span", { class: "node-name" }, n.node),
        h("span", { class: "status" }, h("span", { class: "dot" }), status)),
      h("dl", { class: "facts" },
        h("div", {}, h("dt", {}, "heartbeat"), h("dd", { class: "heartbeat" }, ago(n.health_at))),
        h("div", {}, h("dt", {}, "outbox"), h("dd", { class: "outbox" }, outbox.depth ?? "–")),
        h("div", {}, h("dt", {}, "seen"), h("dd", {}, ago(n.last_seen))),
        n.version ? h("div", {}, h("dt", {}, "version"), h("dd", {}, n.version)) : null),
      drivers.length ? h("div", { class: "chips" }, drivers.map((d) =>
        h("span", { class: "chip", dataset: { state: d.state, device: d.device }, title: d.kind }, `${d.device} · ${d.state}`))) : null);
  });
  $("nodes").replaceChildren(...(cards.length ? cards : [h("p", { class: "empty" }, "No nodes registered for this store.")]));
}

// "Linen shirt · M" for a GTIN the catalogue knows, else the GTIN itself
export function productName(products, gtin) {
  const p = products?.get(gtin);
  return p ? [p.name, p.size, p.colour].filter(Boolean).join(" · ") : gtin;
}

export function renderShelves(store, selectedGtin, onPick, products, onAck) {
  const flags = new Map();
  for (const alert of store.alerts.values()) {
    const key = `${alert.shelf}|${alert.gtin}`;
    if (!flags.has(key)) flags.set(key, new Set());
    flags.get(key).add(alert.type);
  }
  const rows = [...store.shelves.values()]
    .sort((a, b) => a.shelf.localeCompare(b.shelf) || a.gtin.localeCompare(b.gtin))
    .map((row) => {
      // an alert without a shelf is about the store-wide total: it marks every shelf of the GTIN
      const types = new Set([...(flags.get(`${row.shelf}|${row.gtin}`) ?? []), ...(flags.get(`|${row.gtin}`) ?? [])]);
      const classes = [
        types.has("low_stock") ? "low" : "",
        types.has("misplaced") ? "misplaced" : "",
        row.gtin === selectedGtin ? "selected" : "",
      ].filter(Boolean).join(" ");
      return h("tr", {
        class: classes, tabindex: "0", dataset: { shelf: row.shelf, gtin: row.gtin, at: row.changed_at ?? "" },
        onclick: () => onPick(row.gtin),
        onkeydown: (e) => { if (e.key === "Enter") onPick(row.gtin); },
      },
      h("td", {}, row.shelf, [...types].map((t) => h("span", { class: `badge ${t === "low_stock" || t === "misplaced" ? t : "other"}` }, label(t)))),
      h("td", { class: "gtin" }, products?.has(row.gtin)
        ? [h("span", { class: "product" }, productName(products, row.gtin)), h("span", { class: "muted code" }, row.gtin)]
        : row.gtin),
      h("td", { class: "num count" }, row.count ?? "–"),
      h("td", { class: "muted" }, clock(row.updated_at)));
    });
  $("shelves").replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: "4", class: "empty" }, "No stock seen on any shelf yet."))]));

  const alerts = [...store.alerts.values()];
  const counts = { low_stock: 0, misplaced: 0 };
  for (const a of alerts) counts[a.type] = (counts[a.type] ?? 0) + 1;
  $("alert-summary").replaceChildren(
    ...Object.entries(counts).filter(([, n]) => n).map(([t, n]) => h("span", { class: `badge ${t === "low_stock" || t === "misplaced" ? t : "other"}` }, `${n} ${label(t)}`)));
  $("alerts").replaceChildren(...alerts.slice(-8).reverse().map((a) =>
    h("div", { class: `alert ${a.type}`, dataset: { alert: a.id, acknowledged: String(Boolean(a.acknowledged_by)) } },
      h("span", {}, `${label(a.type)}: ${[a.shelf, a.gtin && productName(products, a.gtin)].filter(Boolean).join(" · ")}${a.count !== null ? ` (${a.count})` : ""}`),
      a.acknowledged_by
        ? h("span", { class: "muted ack" }, ` ✓ ${a.acknowledged_by}`)
        : /^\d+$/.test(a.id) && onAck ? h("button", { class: "button ack", type: "button", onclick: () => onAck(a) }, "Ack") : null)));
}

export function renderLockers(store) {
  const banks = [...store.banks.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([bank, compartments]) =>
    h("div", { class: "bank", dataset: { bank } },
      h("h3", {}, bank),
      h("div", { class: "grid" }, [...compartments.entries()].sort(([a], [b]) => a.localeCompare(b, undefined, { numeric: true })).map(([id, c]) =>
        h("div", {
          class: "cell", dataset: { compartment: id, state: c.state, flagged: String(c.flags.length > 0) },
          title: `${id}: ${label(c.state)}${c.flags.length ? ` — ${c.flags.map(label).join(", ")}` : ""}${c.door_open ? " — door open" : ""}`,
        }, id, c.flags.length ? h("span", { class: "flag" }, "⚠ " + label(c.flags[0])) : c.door_open ? h("span", { class: "flag" }, "open") : null)))));
  $("lockers").replaceChildren(...(banks.length ? banks : [h("p", { class: "empty" }, "No locker banks reported yet.")]));
}

function feedItem(main, status, at, data) {
  return h("li", { dataset: data },
    h("span", { class: "what" }, main),
    h("span", { class: "pill", dataset: { tone: TONES[status] ?? "" } }, label(status)),
    h("span", { class: "when" }, clock(at)));
}

export function renderOrders(store, products) {
  const items = [...store.orders.values()].reverse().map((o) => {
    const lines = Array.isArray(o.items) ? o.items.map((l) => `${l.quantity ?? 1}× ${productName(products, String(l.gtin))}`).join(", ") : "";
    return feedItem(`${String(o.order_id).slice(0, 8)}${o.bank ? ` · ${o.bank}/${o.compartment}` : ""}${lines ? ` · ${lines}` : ""}`, o.state, o.at, { order: o.order_id });
  });
  $("orders").replaceChildren(...(items.length ? items : [h("li", { class: "empty" }, "No orders for this store.")]));
}

export function renderOffers(store) {
  const zones = [...store.presence.entries()].sort(([a], [b]) => a.localeCompare(b));
  $("presence").replaceChildren(...zones.map(([zone, n]) => h("span", { class: "chip", dataset: { zone } }, `${zone}: ${n}`)));
  const items = [...store.offers.values()].reverse().map((o) =>
    feedItem(`${o.title || o.campaign || o.offer_id}${o.zone ? ` · ${o.zone}` : ""}${o.reason ? ` (${o.reason})` : ""}`, o.status, o.at, { offer: o.offer_id }));
  $("offers").replaceChildren(...(items.length ? items : [h("li", { class: "empty" }, "No offers for this store.")]));
}

export function renderActivity(state, storeId) {
  const items = state.activity.filter((a) => !a.store || a.store === storeId).map((a) =>
    h("li", { dataset: { kind: a.kind } },
      h("span", { class: "what" }, a.text),
      h("span", { class: "pill", dataset: { tone: a.tone } }, label(a.kind)),
      h("span", { class: "when" }, clock(a.at))));
  if (state.dropped) items.unshift(h("li", {}, h("span", { class: "what" }, `${state.dropped} changes were dropped on this connection (too slow); shelves and nodes were re-read.`)));
  $("activity").replaceChildren(...(items.length ? items : [h("li", { class: "empty" }, "Waiting for events…")]));
}

export function renderLegend() {
  $("locker-legend").replaceChildren(...COMPARTMENT_STATES.map((s) =>
    h("li", {}, h("span", { class: "swatch", dataset: { state: s } }), label(s))));
}
