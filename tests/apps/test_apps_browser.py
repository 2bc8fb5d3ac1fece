"""Each role's main flow in Debian's chromium at 1440 and 390 px, against the real BOPIS path
(cloud, Mosquitto, edge with a sim-cu16 locker bank), with no console error:

- staff find a product by name (where it is) and stage an online order into a locker;
- a shopper opts in, receives an offer live, sees the order become ready and shows its
  pickup code and QR (decoded by zxing-cpp to the QR the locker accepts);
- ops see orders and offers from before the page opened and acknowledge an alert.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from playwright.async_api import BrowserContext, Page, expect

from cloud.broker.policy import shopper_inbox
from protocols.messages import CountDelta, ItemEventKind, RfidEvents, utc_now
from protocols.pickup import parse_qr
from tests.apps.conftest import SHELF, VIEWPORTS, ConsoleErrors
from tests.dashboard.edge import EdgePublisher
from tests.lockers_e2e.rfid_node import RfidNode
from tests.lockers_e2e.rig import BANK, GTIN, NODE, OPS_KEY, SHOPPER_KEY, STAFF_KEY, STORE, Rig
from tests.offers.helpers import TOKEN, presence, reset_seqs
from tests.servers import MosquittoBroker

VIEWPORT_NAMES = sorted(VIEWPORTS)


async def open_page(browser: BrowserContext, viewport: str, errors: ConsoleErrors) -> Page:
    page = errors.watch(await browser.new_page())
    await page.set_viewport_size(VIEWPORTS[viewport])
    return page


async def fits_the_screen(page: Page) -> None:
    """Nothing is cut: the page is no wider than the window."""
    width = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page is {width[0]} px wide in a {width[1]} px window"


def shelf_count(count: int, seq: int) -> RfidEvents:
    """A shelf reader of the rig's node counts the product (a stream of its own)."""
    return RfidEvents(
        store=STORE,
        node=NODE,
        seq=seq,
        reader="reader-9",
        event_time=utc_now(),
        counts=[CountDelta(shelf=SHELF, gtin=GTIN, delta=count, count=count)],
    )


async def place_order(rig: Rig, shopper: str | None = None) -> str:
    body: dict[str, Any] = {"items": [{"gtin": GTIN, "quantity": 2}]}
    if shopper is not None:
        body["shopper"] = shopper
    created = await rig.call(
        "POST", f"/api/v1/stores/{STORE}/orders", SHOPPER_KEY, expect=201, json=body
    )
    return str(created["order_id"])


@pytest.mark.parametrize("viewport", VIEWPORT_NAMES)
async def test_staff_find_a_product_and_stage_an_order(
    rig: Rig, edge: EdgePublisher, browser: BrowserContext, viewport: str, app_artifacts: Path
) -> None:
    edge.send(shelf_count(4, 1))
    await rig.eventually(
        lambda: rig.call("GET", f"/api/v1/stores/{STORE}/inventory"),
        lambda rows: len(rows) == 1,
        "the shelf count applied",
    )
    order_id = await place_order(rig)
    errors = ConsoleErrors()
    page = await open_page(browser, viewport, errors)
    await page.goto(f"http://127.0.0.1:{rig.cloud.api_port}/staff")
    await page.fill("#key", STAFF_KEY)
    await page.click("#login button[type=submit]")
    await page.locator("#tabs").wait_for()
    # this cloud has the replenishment tasks route (the app reads /openapi.json): the tab shows
    await page.locator('#tabs [data-tab="tasks"]').wait_for(state="visible", timeout=5_000)

    # find by name: the product, its shelf in this store with the count
    await page.fill("#find-q", "linen")
    await page.click("#find-form button[type=submit]")
    where = page.locator("#where")
    await where.locator("h3", has_text="Linen shirt · M · white").wait_for()
    await where.locator(f'li[data-shelf="{SHELF}"]', has_text="4 on shelf").wait_for()
    await fits_the_screen(page)
    await page.screenshot(path=str(app_artifacts / f"staff-find-{viewport}.png"))

    # the online order: its pick list, picking, staging into a locker
    await page.click('#tabs [data-tab="orders"]')
    card = page.locator(f'#orders li[data-order="{order_id}"]')
    await card.locator(".lines", has_text="Linen shirt").wait_for()
    await card.locator('[data-action="pick-list"]').click()
    # the shelf with its zone (no zones configured: the sales floor)
    await card.locator(".picklist", has_text=f"{SHELF} (sales_floor): 4").wait_for()
    await card.locator('[data-action="pick"]').click()
    card = page.locator(f'#orders li[data-order="{order_id}"][data-status="picking"]')
    await card.wait_for()
    # a scanned EPC RFID never reported in this store: refused with the cloud's reason
    await card.locator(".stage-epcs").fill("3034257BF7194E4000000FFF")
    await card.locator('[data-action="stage"]').click()
    await page.locator("#notice", has_text="RFID has not seen it in store").wait_for()
    card = page.locator(f'#orders li[data-order="{order_id}"][data-status="picking"]')
    # the list is drawn again after the refusal (the notice shows first): the scan is gone
    await expect(card.locator(".stage-epcs")).to_have_value("", timeout=10_000)
    # staged without EPCs (this shelf's EPCs were never read moving)
    await card.locator(".stage-method").select_option("locker")
    await card.locator('[data-action="stage"]').click()
    # the cloud reserved a compartment and the real edge acknowledged it (state assigned,
    # which the orders API calls staged)
    order = await rig.wait_state(order_id, "assigned")
    assert order["bank"] == BANK
    await page.click("#orders-refresh")
    await page.locator(
        f'#orders li[data-order="{order_id}"][data-status="staged"]', has_text=BANK
    ).wait_for()
    await fits_the_screen(page)
    await page.screenshot(path=str(app_artifacts / f"staff-orders-{viewport}.png"))
    # the browser logs the refused stage's 409 itself; nothing else went wrong
    [refused] = [e for e in errors.errors if "409 (Conflict)" in e and "/stage" in e]
    assert [e for e in errors.errors if e != refused] == []


def decode_qr_path(d: str) -> str:
    """Rasterise the page's QR <path> (one `Mx,yh1v1h-1z` per dark module) and read it with
    zxing-cpp, a real decoder."""
    cells = [(int(x), int(y)) for x, y in re.findall(r"M(\d+),(\d+)h1v1h-1z", d)]
    n = max(max(x, y) for x, y in cells) + 1
    scale, quiet = 4, 4
    size = (n + 2 * quiet) * scale
    pixels = bytearray([255]) * (size * size)
    for x, y in cells:
        for dy in range(scale):
            start = ((y + quiet) * scale + dy) * size + (x + quiet) * scale
            pixels[start : start + scale] = b"\x00" * scale
    found = zxingcpp.read_barcodes(memoryview(bytes(pixels)).cast("B", shape=[size, size]))
    assert len(found) == 1, "the QR code did not decode"
    return str(found[0].text)


@pytest.mark.parametrize("viewport", VIEWPORT_NAMES)
async def test_shopper_opts_in_receives_an_offer_and_sees_the_order_ready(
    rig: Rig, edge: EdgePublisher, browser: BrowserContext, viewport: str, app_artifacts: Path
) -> None:
    reset_seqs()
    shopper = f"shopper-{viewport}"
    campaign = {"title": "Linen week: 20% off", "body": "At the entrance today", "trigger": "enter"}
    await rig.call(
        "PUT",
        "/api/v1/campaigns/linen-week",
        OPS_KEY,
        json={**campaign, "zones": ["entrance"], "zone_cooldown_s": 0},
    )
    errors = ConsoleErrors()
    page = await open_page(browser, viewport, errors)
    await page.goto(f"http://127.0.0.1:{rig.cloud.api_port}/app")
    await page.fill("#shopper", shopper)
    await page.fill("#key", SHOPPER_KEY)
    await page.click("#login button[type=submit]")
    await page.locator("#live", has_text="live").wait_for()
    await page.locator('#consent-toggle:has-text("Get offers")').click()
    await page.locator('#consent[data-consent="true"]').wait_for()
    assert (await rig.call("GET", f"/api/v1/shoppers/{shopper}", SHOPPER_KEY))["consent"]

    # the phone's rotating token (registered by the app's backend); the shopper walks in
    now = utc_now()
    token = {
        "token": TOKEN,
        "valid_from": (now - timedelta(minutes=1)).isoformat(),
        "expires_at": (now + timedelta(minutes=15)).isoformat(),
    }
    await rig.call(
        "POST", f"/api/v1/shoppers/{shopper}/tokens", SHOPPER_KEY, expect=201, json=token
    )
    edge.send(presence(("enter", TOKEN, "entrance", -60.0, utc_now()), node=NODE))
    offer = page.locator("#offers li.offer", has_text="Linen week: 20% off")
    await offer.wait_for(timeout=10_000)

    # an order for this shopper goes through the real locker to ready; the app follows live
    order_id = await place_order(rig, shopper_inbox(shopper))
    await page.locator(f'#orders li[data-order="{order_id}"]', has_text="Linen shirt").wait_for()
    for state in ("picking", "staged"):
        await rig.call("POST", f"/api/v1/orders/{order_id}/state", json={"state": state})
    await rig.call(
        "POST",
        f"/api/v1/orders/{order_id}/assign",
        expect=202,
        json={"bank": BANK, "compartment": "0-01"},
    )
    await rig.wait_state(order_id, "assigned")
    await rig.call(
        "POST", f"/api/v1/stores/{STORE}/lockers/{BANK}/0-01/open-for-loading", expect=202
    )
    await rig.person().load(0, 0)
    ready = page.locator(f'#orders li[data-order="{order_id}"][data-state="ready_for_pickup"]')
    await ready.wait_for(timeout=15_000)
    await ready.locator("text=Ready for pickup").wait_for()
    await ready.locator('[data-action="code"]').click()
    code = (await ready.locator(".pickup-code").text_content() or "").strip()
    assert re.fullmatch(r"\d{8}", code), code
    qr = decode_qr_path(await ready.locator("svg.qr path").get_attribute("d") or "")
    entry = parse_qr(qr)
    assert entry is not None, qr
    assert (entry.grant.bank, entry.grant.compartment) == (BANK, "0-01")
    # the cloud hands the code out once; the app keeps it to show again after a reload
    await page.reload()
    await page.locator(
        f'#orders li[data-order="{order_id}"] .pickup-code', has_text=code
    ).wait_for()
    await fits_the_screen(page)
    await page.screenshot(path=str(app_artifacts / f"shopper-{viewport}.png"), full_page=True)

    # withdrawal: the cloud stops counting the shopper in
    await page.locator('#consent-toggle:has-text("Stop offers")').click()
    await page.locator('#consent[data-consent="false"]').wait_for()
    assert not (await rig.call("GET", f"/api/v1/shoppers/{shopper}", SHOPPER_KEY))["consent"]
    assert errors.errors == []


@pytest.mark.parametrize("viewport", VIEWPORT_NAMES)
async def test_ops_see_what_happened_before_and_acknowledge_an_alert(
    rig: Rig, edge: EdgePublisher, browser: BrowserContext, viewport: str, app_artifacts: Path
) -> None:
    order_id = await place_order(rig)
    edge.send(shelf_count(1, 1))
    await rig.eventually(
        lambda: rig.call("GET", f"/api/v1/stores/{STORE}/inventory"),
        lambda rows: len(rows) == 1,
        "the shelf count applied",
    )
    await rig.call(
        "PUT", f"/api/v1/stores/{STORE}/reorder-points/{GTIN}", json={"reorder_point": 3}
    )
    alerts = await rig.call("GET", f"/api/v1/alerts?store={STORE}&state=raised")
    assert [a["type"] for a in alerts["items"]] == ["low_stock"]
    alert_id = alerts["items"][0]["id"]

    errors = ConsoleErrors()
    page = await open_page(browser, viewport, errors)
    await page.goto(f"http://127.0.0.1:{rig.cloud.api_port}/")
    await page.fill("#key", OPS_KEY)
    await page.click("#login button[type=submit]")
    await page.wait_for_selector("#connection[data-state=live]", timeout=10_000)
    # lists read on load, with product names, not only what happens while the page is open
    await page.locator(f'#orders li[data-order="{order_id}"]', has_text="Linen shirt").wait_for()
    await page.locator(f'#shelves tr[data-gtin="{GTIN}"]', has_text="Linen shirt").wait_for()
    await page.locator('.cell[data-compartment="0-01"]').wait_for()
    alert = page.locator(f'#alerts .alert[data-alert="{alert_id}"]')
    await alert.locator("button.ack").click()
    await page.locator(f'#alerts .alert[data-alert="{alert_id}"]', has_text="✓ ops").wait_for()
    assert (await rig.call("GET", f"/api/v1/alerts/{alert_id}"))["acknowledged_by"] == "ops"
    # the store tabs stay on one row and no column is cut
    tops = await page.eval_on_selector_all(".store-tab", "tabs => tabs.map(t => t.offsetTop)")
    assert len(set(tops)) == 1
    table = await page.eval_on_selector(
        "#panel-shelves .scroll", "el => [el.scrollWidth, el.clientWidth]"
    )
    assert table[0] <= table[1], f"the shelves table is {table[0]} px wide in {table[1]} px"
    # the chart's product picker reads names, not GTINs
    await page.locator("#chart-gtin option", has_text="Linen shirt").wait_for(state="attached")
    await fits_the_screen(page)
    await page.screenshot(path=str(app_artifacts / f"ops-{viewport}.png"), full_page=True)
    assert errors.errors == []


async def test_staff_empty_a_compartment_a_shopper_returned_items_into(
    rig: Rig, edge: EdgePublisher, browser: BrowserContext, app_artifacts: Path
) -> None:
    """A collected order returned into a locker (drop-off code on the keypad pty): the staff
    app lists "empty compartment …" in its Tasks tab, and its button opens that door at the
    edge."""
    edge.send(shelf_count(4, 1))
    order_id, code = await rig.ready_order(lock=2)
    await rig.person().collect(rig.driver.simulator, 0, 2, code)
    await rig.wait_state(order_id, "collected")
    started = await rig.call(
        "POST",
        f"/api/v1/orders/{order_id}/locker-return",
        SHOPPER_KEY,
        expect=201,
        json={"items": [{"epc": "3034257BF7194E4000000021"}]},
    )
    compartment = started["compartment"]
    lock = int(compartment.split("-")[1]) - 1
    await rig.eventually(
        lambda: rig.order(order_id), lambda o: o["return_status"] == "return_pending", "pending"
    )
    await rig.person().drop_off(rig.driver.simulator, 0, lock, started["code"])
    await rig.eventually(
        lambda: rig.order(order_id),
        lambda o: o["return_status"] == "returned_in_locker",
        "dropped off",
    )
    errors = ConsoleErrors()
    page = await open_page(browser, "phone", errors)
    await page.goto(f"http://127.0.0.1:{rig.cloud.api_port}/staff")
    await page.fill("#key", STAFF_KEY)
    await page.click("#login button[type=submit]")
    await page.click('#tabs [data-tab="tasks"]')
    card = page.locator(f'#locker-returns li[data-locker-return="{started["id"]}"]')
    await card.locator("h3", has_text=f"Empty compartment {BANK}/{compartment}").wait_for()
    await card.locator(".meta", has_text=f"order {order_id}").wait_for()
    await fits_the_screen(page)
    await page.screenshot(path=str(app_artifacts / "staff-locker-return-phone.png"))
    seen = rig.driver.compartments[compartment]
    assert not seen.door_open
    await card.locator('[data-action="open-return"]').click()
    await page.locator("#notice", has_text=f"Opening {BANK}/{compartment}").wait_for()
    await rig.eventually(lambda: seen.door_open, bool, "the edge opened the door")
    assert errors.errors == []


async def test_shopper_returns_a_collected_order_into_a_locker(
    rig: Rig, mosquitto_broker: MosquittoBroker, browser: BrowserContext, app_artifacts: Path
) -> None:
    """A collected order whose EPC staff scanned at picking: the app starts a locker return,
    shows the drop-off code once (and again after a reload), the code typed on the keypad
    pty opens the door, and the app follows the return live to "in the locker"."""
    reset_seqs()
    shopper, epc = "shopper-returns", "3034257BF7194E4000000031"
    rfid = RfidNode(mosquitto_broker.host, mosquitto_broker.port, STORE)
    try:
        await rfid.birth({})
        await rfid.items(ItemEventKind.ARRIVED, GTIN, SHELF, epc)
        order_id = await place_order(rig, shopper_inbox(shopper))
        await rig.call("POST", f"/api/v1/orders/{order_id}/pick")
        body = {"method": "locker", "bank": BANK, "compartment": "0-02", "epcs": [epc]}
        staged = await rig.eventually(  # until the cloud has seen the EPC on the shelf
            lambda: rig.http.post(
                f"/api/v1/orders/{order_id}/stage",
                headers={"Authorization": f"Bearer {STAFF_KEY}"},
                json=body,
            ),
            lambda r: r.status_code == 200,
            "the order staged with its EPC",
        )
        assert staged.json()["compartment"] == "0-02"
        await rig.wait_state(order_id, "assigned")
        await rig.call(
            "POST", f"/api/v1/stores/{STORE}/lockers/{BANK}/0-02/open-for-loading", expect=202
        )
        await rig.person().load(0, 1)
        await rig.wait_state(order_id, "ready_for_pickup")
        pickup = await rig.call("POST", f"/api/v1/orders/{order_id}/pickup-code", SHOPPER_KEY)
        await rig.person().collect(rig.driver.simulator, 0, 1, pickup["code"])
        await rig.wait_state(order_id, "collected")
    finally:
        rfid.close()

    errors = ConsoleErrors()
    page = await open_page(browser, "phone", errors)
    await page.goto(f"http://127.0.0.1:{rig.cloud.api_port}/app")
    await page.fill("#shopper", shopper)
    await page.fill("#key", SHOPPER_KEY)
    await page.click("#login button[type=submit]")
    await page.locator("#live", has_text="live").wait_for()
    card = page.locator(f'#orders li[data-order="{order_id}"][data-state="collected"]')
    await card.locator('[data-action="locker-return"]').click()
    dropoff = card.locator(".dropoff-code")
    await dropoff.wait_for()
    code = (await dropoff.text_content() or "").strip()
    assert re.fullmatch(r"\d{8}", code), code
    (started,) = (await rig.order(order_id))["locker_returns"]
    compartment = started["compartment"]
    await card.locator(
        "[data-return-state]", has_text=f"locker {BANK}, door {compartment}"
    ).wait_for()
    # shown once by the cloud; the app keeps it for a reload
    await page.reload()
    await card.locator(".dropoff-code", has_text=code).wait_for()
    await card.locator('[data-return-state="return_pending"]').wait_for(timeout=10_000)
    await fits_the_screen(page)
    await page.screenshot(path=str(app_artifacts / "shopper-return-phone.png"), full_page=True)
    lock = int(compartment.split("-")[1]) - 1
    await rig.person().drop_off(rig.driver.simulator, 0, lock, code)
    await card.locator('[data-return-state="returned_in_locker"]').wait_for(timeout=10_000)
    await expect(card.locator(".dropoff-code")).to_have_count(0)
    assert not await card.locator('[data-action="locker-return"]').count()
    assert errors.errors == []
