// What people read instead of codes: order statuses and products.

// Order statuses of the lifecycle and of today's locker machine. An unknown one is shown
// as it comes (underscores as spaces), never an error.
const ORDER_LABELS = {
  placed: "Placed",
  created: "Placed",
  reserved: "Reserved",
  picking: "Being picked",
  staged: "Staged",
  assigned: "In a locker, being loaded",
  ready: "Ready for pickup",
  ready_for_pickup: "Ready for pickup",
  collected: "Collected",
  expired: "Expired",
  returned_to_stock: "Returned to stock",
  cancelled: "Cancelled",
  exception: "Needs attention",
};

export function orderLabel(status) {
  const text = String(status ?? "unknown");
  return ORDER_LABELS[text] ?? text.replaceAll("_", " ");
}

export const READY_STATES = new Set(["ready", "ready_for_pickup"]);
export const FINAL_STATES = new Set(["collected", "expired", "cancelled", "returned_to_stock"]);

export function price(product) {
  if (!product || product.price === null || product.price === undefined) return "";
  const amount = Number(product.price);
  if (!Number.isFinite(amount)) return "";
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: product.currency || "EUR" }).format(amount);
  } catch {
    return `${product.price} ${product.currency ?? ""}`.trim();
  }
}

/** "Linen shirt · M · white": the product's name and what tells its variants apart. */
export function productTitle(product, gtin) {
  if (!product) return gtin ?? "";
  return [product.name, product.size, product.colour].filter(Boolean).join(" · ");
}

/**
 * Names for GTINs, asked for in bulk and remembered. `lookup(gtins)` resolves when the
 * names it could find are known; a GTIN the catalogue lacks stays a GTIN.
 */
export class Catalogue {
  constructor(client) {
    this.client = client;
    this.known = new Map(); // gtin -> product | null
  }

  get(gtin) { return this.known.get(gtin) ?? null; }

  async lookup(gtins) {
    const missing = [...new Set(gtins)].filter((g) => g && !this.known.has(g));
    for (let i = 0; i < missing.length; i += 100) {
      const chunk = missing.slice(i, i + 100);
      try {
        const found = await this.client.get(`/api/v1/products?gtins=${chunk.join(",")}&limit=200`);
        for (const p of found) this.known.set(p.gtin, p);
        for (const g of chunk) if (!this.known.has(g)) this.known.set(g, null);
      } catch {
        return; // no catalogue (yet): GTINs stay GTINs
      }
    }
  }
}
