"""The real edge presence engine's output, batched like the edge does, into the cloud."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from cloud.config import CloudSettings
from cloud.offers import create_domain, registry, tables
from cloud.offers.domain import OffersDomain
from edge.ble.presence import PresenceEngine
from protocols.messages import BlePresence, PresenceKind, utc_now
from tests.cloud.harness import StateHarness
from tests.cloud.streams import rfid
from tests.offers.helpers import GTIN, NODE, SHELF, STORE, TOKEN, campaign, opted_in


@pytest.fixture
async def harness(tmp_path: object) -> AsyncIterator[StateHarness]:
    domain = create_domain(CloudSettings(), {})
    h = StateHarness(f"sqlite+aiosqlite:///{tmp_path}/state.db", {STORE: [NODE]}, domains=[domain])
    await h.start()
    await h.feed(rfid(1, {(SHELF, GTIN): 4}))
    yield h
    await h.close()


async def test_a_shopper_lingering_at_the_shelf_gets_one_offer(harness: StateHarness) -> None:
    domain = harness.applier.domains[0]
    assert isinstance(domain, OffersDomain)
    await registry.put_campaign(
        harness.engine, "coffee-dwell", campaign(trigger="enter", zone_cooldown_s=600)
    )
    await opted_in(harness.engine, "shopper-1", TOKEN)
    edge = PresenceEngine({"ble-coffee-1": "coffee", "ble-coffee-2": "coffee", "ble-tea": "tea"})
    rng = random.Random(7)
    start = utc_now().timestamp() - 120
    beacon = f"app:{TOKEN}"
    kinds: list[PresenceKind] = []
    offers = 0
    seq = 0
    # 90 s at the coffee shelf, adverts every 0.3 s heard by three scanners with 4 dB of
    # noise and 10 % drops, twice stepping away long enough for the edge to exit and re-enter.
    for step in range(300):
        t = start + step * 0.3
        away = 30 <= step < 170 or 220 <= step < 260
        for scanner, level in (("ble-coffee-1", -58), ("ble-coffee-2", -63), ("ble-tea", -80)):
            if rng.random() < 0.1:
                continue
            rssi = (level - (25 if away and scanner != "ble-tea" else 0)) + rng.gauss(0, 4)
            edge.observe(beacon, scanner, rssi, t)
        if step % 3 == 0:  # the edge flushes about once a second
            edge.tick(t)
            events = edge.drain()
            if events:
                seq += 1
                kinds += [e.kind for e in events]
                outcome = await harness.feed(
                    BlePresence(
                        store=STORE, node=NODE, seq=seq, scanner="ble-coffee-1", events=events
                    )
                )
                offers += len(outcome.publishes)
    assert kinds.count(PresenceKind.ENTER) >= 2, kinds  # the walk produced repeated enters
    assert offers == 1
    rows = await harness.rows(tables.offers)
    assert sum(1 for row in rows if row.status == "triggered") == 1
