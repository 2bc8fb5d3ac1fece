"""The API's access policy, stated as a table, checked against every route of the OpenAPI
document with every credential: each role's key, no key, and a key nobody configured.

- a role the table allows gets anything but 401/403 (its request may still be 404 or 422:
  the matrix sends placeholder ids and empty bodies; it checks who gets past the door);
- a role the table does not allow gets 403;
- no key and a wrong key get 401 on every route that needs one;
- a public route answers without a key.

A route in the document that the table does not list fails the test, and so does a table
entry whose route is gone: a new route needs a decision here. Staff keys are scoped to
stores; the matrix uses the staff key's own store, and a separate test checks another
store's paths are 403 for it. (The complementary test_api_conformance.py checks the
answers' shapes.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.cloud.livecloud import (
    CREDENTIALS,
    OTHER_STORE,
    STORE,
    LiveCloud,
    auth_headers,
    live_cloud,
)
from tests.cloud.streams import GTIN

OPS, STAFF, SHOPPER = "ops", "staff", "shopper_app"
PUBLIC = "public"
TOKEN = "session token"  # the dashboard stream: a signed token in ?token=, never a key
SIGNED = "hmac signature"  # a platform's webhook: its body's signature, never a key
READERS = {OPS, STAFF}

POLICY: dict[tuple[str, str], set[str] | str] = {
    # ops probes and the OpenAPI document itself
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    # core: stores, nodes, inventory, dead letters, live events
    ("GET", "/api/v1/stores"): READERS,
    ("POST", "/api/v1/stores"): {OPS},
    ("GET", "/api/v1/stores/{store}/nodes"): READERS,
    ("GET", "/api/v1/stores/{store}/inventory"): READERS,
    ("GET", "/api/v1/dead-letters"): READERS,
    ("GET", "/api/v1/events"): READERS,
    # inventory: reorder points, planograms, alerts (store team writes), availability
    ("GET", "/api/v1/stores/{store}/reorder-points"): READERS,
    ("PUT", "/api/v1/stores/{store}/reorder-points"): READERS,
    ("PUT", "/api/v1/stores/{store}/reorder-points/{gtin}"): READERS,
    ("DELETE", "/api/v1/stores/{store}/reorder-points/{gtin}"): READERS,
    ("GET", "/api/v1/stores/{store}/planogram"): READERS,
    ("PUT", "/api/v1/stores/{store}/planogram"): READERS,
    ("PUT", "/api/v1/stores/{store}/planogram/{shelf}"): READERS,
    ("DELETE", "/api/v1/stores/{store}/planogram/{shelf}"): READERS,
    ("GET", "/api/v1/alerts"): READERS,
    ("GET", "/api/v1/alerts/{alert_id}"): READERS,
    ("POST", "/api/v1/alerts/{alert_id}/ack"): READERS,
    ("GET", "/api/v1/availability/{gtin}"): {OPS, STAFF, SHOPPER},
    ("GET", "/api/v1/availability"): {OPS, STAFF, SHOPPER},
    ("GET", "/api/v1/feeds/local-inventory"): {OPS, STAFF, SHOPPER},
    # store operations: the store team's tasks, sales, book stock and accuracy
    ("GET", "/api/v1/stores/{store}/tasks"): READERS,
    ("POST", "/api/v1/tasks/{task_id}/done"): READERS,
    ("GET", "/api/v1/stores/{store}/floor-minimums"): READERS,
    ("PUT", "/api/v1/stores/{store}/floor-minimums"): READERS,
    ("POST", "/api/v1/stores/{store}/sales"): READERS,
    ("GET", "/api/v1/stores/{store}/reorder-suggestions"): READERS,
    ("PUT", "/api/v1/stores/{store}/book-stock"): READERS,
    ("GET", "/api/v1/stores/{store}/accuracy"): READERS,
    ("POST", "/api/v1/stores/{store}/accuracy/approve"): READERS,
    ("GET", "/api/v1/stores/{store}/accuracy/approved.csv"): READERS,
    # EPCIS 2.0 query interface: the store teams' and ops' event history
    ("GET", "/epcis/events"): READERS,
    # a shopper app's own broker login, after consent
    ("POST", "/api/v1/shoppers/{shopper_id}/broker-login"): {OPS, SHOPPER},
    # lockers: the online channel places orders and fetches the code; staff run the lockers
    ("POST", "/api/v1/stores/{store}/orders"): {OPS, SHOPPER},
    ("GET", "/api/v1/orders/{order_id}"): {OPS, STAFF, SHOPPER},
    ("POST", "/api/v1/orders/{order_id}/pickup-code"): {OPS, SHOPPER},
    ("POST", "/api/v1/orders/{order_id}/state"): READERS,
    ("POST", "/api/v1/orders/{order_id}/assign"): READERS,
    ("GET", "/api/v1/orders/{order_id}/notifications"): READERS,
    ("GET", "/api/v1/stores/{store}/lockers"): READERS,
    ("GET", "/api/v1/stores/{store}/lockers/assignments"): READERS,
    ("GET", "/api/v1/stores/{store}/lockers/alarms"): READERS,
    ("GET", "/api/v1/stores/{store}/lockers/commands"): READERS,
    ("POST", "/api/v1/stores/{store}/lockers/{bank}/{compartment}/open-for-loading"): READERS,
    ("POST", "/api/v1/stores/{store}/lockers/{bank}/{compartment}/open"): READERS,
    ("POST", "/api/v1/stores/{store}/lockers/{bank}/{compartment}/out-of-service"): READERS,
    ("GET", "/api/v1/stores/{store}/lockers/kpis"): READERS,
    # orders: the online channel places, cancels, extends, checks in and returns; staff pick,
    # stage, ready and hand over; the platform's webhook is signed, not keyed
    ("POST", "/api/v1/orders"): {OPS, SHOPPER},
    ("GET", "/api/v1/orders"): READERS,
    ("POST", "/api/v1/webhooks/orders"): SIGNED,
    ("GET", "/api/v1/orders/{order_id}/pick-list"): READERS,
    ("POST", "/api/v1/orders/{order_id}/pick"): READERS,
    ("POST", "/api/v1/orders/{order_id}/stage"): READERS,
    ("POST", "/api/v1/orders/{order_id}/ready"): READERS,
    ("POST", "/api/v1/orders/{order_id}/collect"): READERS,
    ("POST", "/api/v1/orders/{order_id}/cancel"): {OPS, STAFF, SHOPPER},
    ("POST", "/api/v1/orders/{order_id}/extend"): {OPS, STAFF, SHOPPER},
    ("POST", "/api/v1/orders/{order_id}/arrived"): {OPS, STAFF, SHOPPER},
    ("POST", "/api/v1/orders/{order_id}/returns"): {OPS, STAFF, SHOPPER},
    # locker returns (cloud/lockers/returns.py): shopper or staff start one, staff see tasks
    ("POST", "/api/v1/orders/{order_id}/locker-return"): {OPS, STAFF, SHOPPER},
    ("POST", "/api/v1/orders/{order_id}/locker-return/cancel"): {OPS, STAFF, SHOPPER},
    ("GET", "/api/v1/stores/{store}/lockers/returns"): READERS,
    # offers: shoppers (consent, tokens) belong to the app; campaigns to ops; staff read
    ("PUT", "/api/v1/shoppers/{shopper_id}"): {OPS, SHOPPER},
    ("GET", "/api/v1/shoppers/{shopper_id}"): {OPS, SHOPPER},
    ("DELETE", "/api/v1/shoppers/{shopper_id}"): {OPS, SHOPPER},
    ("POST", "/api/v1/shoppers/{shopper_id}/tokens"): {OPS, SHOPPER},
    ("PUT", "/api/v1/campaigns/{campaign_id}"): {OPS},
    ("GET", "/api/v1/campaigns/{campaign_id}"): READERS,
    ("DELETE", "/api/v1/campaigns/{campaign_id}"): {OPS},
    ("GET", "/api/v1/campaigns"): READERS,
    ("GET", "/api/v1/campaigns/{campaign_id}/counts"): READERS,
    ("POST", "/api/v1/offers/{offer_id}/opened"): {OPS, SHOPPER},
    ("POST", "/api/v1/offers/{offer_id}/redeemed"): {OPS, SHOPPER},
    # dashboard
    ("POST", "/api/v1/dashboard/session"): READERS,
    ("GET", "/api/v1/dashboard/events"): TOKEN,
    ("GET", "/api/v1/dashboard/history"): READERS,
    # the apps: lists for the ops dashboard and staff app; a shopper's own orders, offers and
    # live stream (a one-use token, like the dashboard's)
    ("GET", "/api/v1/dashboard/orders"): READERS,
    ("GET", "/api/v1/dashboard/offers"): READERS,
    ("GET", "/api/v1/app/shoppers/{shopper_id}"): {OPS, SHOPPER},
    ("GET", "/api/v1/app/shoppers/{shopper_id}/orders"): {OPS, SHOPPER},
    ("GET", "/api/v1/app/shoppers/{shopper_id}/offers"): {OPS, SHOPPER},
    ("POST", "/api/v1/app/session"): {OPS, SHOPPER},
    ("GET", "/api/v1/app/events"): TOKEN,
    # catalogue: ops import it, everyone reads it
    ("PUT", "/api/v1/products"): {OPS},
    ("GET", "/api/v1/products"): {OPS, STAFF, SHOPPER},
    ("GET", "/api/v1/products/{gtin}"): {OPS, STAFF, SHOPPER},
    ("GET", "/api/v1/products/{gtin}/where"): {OPS, STAFF, SHOPPER},
}

PLACEHOLDERS = {"store": STORE, "gtin": GTIN, "shelf": "shelf-a"}
# Valid bodies where a store-scoped route validates its body before it checks the store;
# elsewhere `{}` (a role refused at the door never gets as far as the body).
BODIES: dict[str, dict[str, object]] = {
    "/api/v1/stores/{store}/reorder-points": {"items": []},
    "/api/v1/stores/{store}/floor-minimums": {"items": []},
    "/api/v1/stores/{store}/reorder-points/{gtin}": {"reorder_point": 3},
    "/api/v1/stores/{store}/planogram": {"shelves": {}},
    "/api/v1/stores/{store}/planogram/{shelf}": {"gtins": [GTIN]},
    "/api/v1/stores/{store}/lockers/{bank}/{compartment}/out-of-service": {"out": True},
    "/api/v1/stores/{store}/sales": {
        "sale_id": "r-1",
        "items": [{"epc": "3074257BF7194E4000001A85"}],
    },
    "/api/v1/stores/{store}/accuracy/approve": {"gtins": [GTIN]},
}


def concrete(path: str, store: str = STORE) -> str:
    path = path.replace("{store}", store)
    return re.sub(r"\{(\w+)\}", lambda m: PLACEHOLDERS.get(m.group(1), "x1"), path)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCloud]:
    # The wrong key fails on every route on purpose; the 429 limiter is tested elsewhere.
    with live_cloud(tmp_path_factory.mktemp("authmatrix"), auth_failure_burst=1_000_000) as c:
        yield c


@pytest.fixture(scope="module")
def client(cloud: LiveCloud) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cloud.url, timeout=10) as http:
        yield http


def document_routes(cloud: LiveCloud) -> set[tuple[str, str]]:
    spec = httpx.get(f"{cloud.url}/openapi.json").json()
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


def status_of(
    client: httpx.Client, method: str, template: str, credential: str, store: str = STORE
) -> int:
    path = concrete(template, store)
    body = BODIES.get(template, {}) if method in {"POST", "PUT"} else None
    with client.stream(method, path, headers=auth_headers(credential), json=body) as response:
        # An event stream answers its headers and then never ends: the status is enough.
        return response.status_code


def test_every_route_has_a_policy(cloud: LiveCloud) -> None:
    routes = document_routes(cloud)
    assert len(routes) >= 50
    assert sorted(routes - POLICY.keys()) == [], "routes without a policy entry"
    assert sorted(POLICY.keys() - routes) == [], "policy entries for routes that are gone"


def test_every_route_with_every_credential(client: httpx.Client) -> None:
    wrong = []
    for (method, path), allowed in sorted(POLICY.items()):
        for credential in CREDENTIALS:
            status = status_of(client, method, path, credential)
            if allowed == PUBLIC:
                ok = status not in (401, 403)
            elif allowed in (TOKEN, SIGNED):
                ok = status == 401  # no token or signature: a key, right or wrong, opens nothing
            elif credential in ("no_key", "wrong_key"):
                ok = status == 401
            elif credential in allowed:
                ok = status not in (401, 403)
            else:
                ok = status == 403
            if not ok:
                wrong.append(f"{credential:11} {method} {path} -> {status} (policy: {allowed})")
    assert wrong == []


def test_a_staff_key_is_refused_another_stores_paths(client: httpx.Client) -> None:
    store_routes = [
        (method, path)
        for (method, path), allowed in POLICY.items()
        if "{store}" in path and isinstance(allowed, set) and STAFF in allowed
    ]
    assert len(store_routes) >= 15
    wrong = [
        f"{method} {path} -> {status}"
        for method, path in store_routes
        if (status := status_of(client, method, path, STAFF, OTHER_STORE)) != 403
    ]
    assert wrong == []
