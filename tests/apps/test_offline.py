"""Flaky store Wi-Fi: the staff app opens from its service worker's cache without network,
an action taken offline waits (also across a reload) and goes out once the network is back,
and the page says so at every step."""

from __future__ import annotations

from playwright.async_api import BrowserContext

from tests.apps.conftest import PHONE
from tests.apps.test_apps_browser import shelf_count
from tests.dashboard.edge import EdgePublisher
from tests.lockers_e2e.rig import GTIN, STAFF_KEY, STORE, Rig


async def test_an_acknowledgement_made_offline_is_sent_when_back_online(
    rig: Rig, edge: EdgePublisher, browser: BrowserContext
) -> None:
    edge.send(shelf_count(1, 1))
    await rig.eventually(
        lambda: rig.call("GET", f"/api/v1/stores/{STORE}/inventory"),
        lambda rows: len(rows) == 1,
        "the shelf count applied",
    )
    await rig.call(
        "PUT", f"/api/v1/stores/{STORE}/reorder-points/{GTIN}", json={"reorder_point": 3}
    )
    alert_id = (await rig.call("GET", f"/api/v1/alerts?store={STORE}"))["items"][0]["id"]

    page = await browser.new_page()
    await page.set_viewport_size(PHONE)
    await page.goto(f"http://127.0.0.1:{rig.cloud.api_port}/staff/")
    await page.fill("#key", STAFF_KEY)
    await page.click("#login button[type=submit]")
    await page.click('#tabs [data-tab="alerts"]')
    card = page.locator(f'#alerts li[data-alert="{alert_id}"]')
    await card.wait_for()
    # the worker took the shell and controls the page
    await page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=10_000)

    await browser.set_offline(True)
    try:
        await card.locator('[data-action="ack"]').click()
        await page.locator("#notice", has_text="will be sent when the network is back").wait_for()
        await page.locator("#network", has_text="1 action waiting").wait_for()
        assert (await rig.call("GET", f"/api/v1/alerts/{alert_id}"))["acknowledged_at"] is None
        # a reload without network: the shell comes from the cache, the action still waits
        await page.reload()
        await page.locator("#notice", has_text="waiting for the network").wait_for()
        await page.locator("#network", has_text="1 action waiting").wait_for()
    finally:
        await browser.set_offline(False)
    await page.locator("#network[data-state=online]", has_text="online").wait_for(timeout=10_000)
    acknowledged = await rig.eventually(
        lambda: rig.call("GET", f"/api/v1/alerts/{alert_id}"),
        lambda alert: alert["acknowledged_at"] is not None,
        "the queued acknowledgement",
    )
    assert acknowledged["acknowledged_by"] == "staff"
    await page.click('#tabs [data-tab="alerts"]')
    await page.locator(
        f'#alerts li[data-alert="{alert_id}"]', has_text="Acknowledged by staff"
    ).wait_for()
