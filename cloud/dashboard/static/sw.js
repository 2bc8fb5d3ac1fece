// The apps' service worker: keeps the app shell (page, scripts, styles, icon) so the app
// opens on a flaky store Wi-Fi. Served at /staff/sw.js and /app/sw.js; its scope is the
// app's path. The shell is fetched from the network first (updates arrive as soon as they
// are deployed) and from the cache when the network fails. API calls are never cached:
// the page shows what failed and queues actions (client.js).
const SCOPE = new URL(self.registration.scope).pathname; // "/staff/" or "/app/"
const PAGE = SCOPE === "/staff/" ? "staff" : "shopper";
const CACHE = `storegate-${PAGE}-v1`;
const SHELL = [
  SCOPE,
  `${SCOPE}manifest.json`,
  `/dashboard/${PAGE}.js`,
  "/dashboard/client.js",
  "/dashboard/labels.js",
  "/dashboard/dom.js",
  "/dashboard/style.css",
  "/dashboard/apps.css",
  "/dashboard/icon.svg",
  ...(PAGE === "shopper" ? ["/dashboard/qr.js"] : []),
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith(`storegate-${PAGE}-`) && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  if (!SHELL.includes(url.pathname)) return; // the API: straight to the network
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const fresh = await fetch(event.request);
      if (fresh.ok) cache.put(event.request, fresh.clone());
      return fresh;
    } catch (err) {
      const kept = await cache.match(event.request);
      if (kept) return kept;
      throw err;
    }
  })());
});
