"""The offer engine inside the real ingest applier, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from cloud.broker.policy import shopper_inbox
from cloud.config import CloudSettings
from cloud.offers import create_domain, registry, tables
from cloud.offers.domain import OffersDomain
from protocols.codec import decode_as
from protocols.ids import contains_mac_address
from protocols.messages import Offer, utc_now
from protocols.topics import offers_topic
from tests.cloud.harness import StateHarness
from tests.cloud.streams import rfid
from tests.offers.helpers import (
    GTIN,
    NODE,
    NODE_B,
    SHELF,
    STORE,
    TOKEN,
    campaign,
    opted_in,
    presence,
    reset_seqs,
    text_values_with_mac,
)


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[StateHarness]:
    reset_seqs()
    domain = create_domain(CloudSettings(), {"arbitration_window_s": 10})
    h = StateHarness(database_url, {STORE: [NODE, NODE_B]}, domains=[domain])
    await h.start()
    await h.feed(rfid(1, {(SHELF, GTIN): 4}, store=STORE, node=NODE))
    yield h
    await h.close()


def _domain(h: StateHarness) -> OffersDomain:
    domain = h.applier.domains[0]
    assert isinstance(domain, OffersDomain)
    return domain


async def _decisions(h: StateHarness) -> list[tuple[str, str | None]]:
    o = tables.offers
    async with h.engine.connect() as connection:
        rows = await connection.execute(
            select(o.c.status, o.c.reason).order_by(o.c.decided_at, o.c.offer_id)
        )
        return [(row.status, row.reason) for row in rows]


async def _setup(h: StateHarness, **spec: object) -> None:
    await registry.put_campaign(h.engine, "coffee-2for1", campaign(**spec))
    _domain(h).campaigns.invalidate()


async def test_walking_past_a_shelf_gives_one_offer_not_ten(harness: StateHarness) -> None:
    await _setup(harness, zone_cooldown_s=300)
    await opted_in(harness.engine, "shopper-1", TOKEN)
    t0 = utc_now() - timedelta(seconds=30)
    published: list[tuple[str, bytes]] = []
    # Two scanners of the zone hear the shopper, the edge repeats enter after short exits,
    # and a dwell follows: ten presence events around one shelf.
    for i in range(5):
        at = t0 + timedelta(seconds=4 * i)
        outcome = await harness.feed(
            presence(("enter", TOKEN, "coffee", -60.0, at), scanner="ble-1"),
            presence(("enter", TOKEN, "coffee", -64.0, at), scanner="ble-2"),
            presence(("exit", TOKEN, "coffee", -80.0, at + timedelta(seconds=2)), scanner="ble-1"),
        )
        published += outcome.publishes
    assert len(published) == 1
    topic, payload = published[0]
    # to the shopper's inbox, never to the token the phone broadcasts
    assert topic == offers_topic(shopper_inbox("shopper-1"))
    assert TOKEN not in topic
    offer = decode_as(Offer, payload, topic=topic)
    assert (offer.campaign, offer.zone, offer.store, offer.gtins) == (
        "coffee-2for1",
        "coffee",
        STORE,
        [GTIN],
    )
    decisions = await _decisions(harness)
    assert decisions.count(("triggered", None)) == 1
    assert {reason for status, reason in decisions if status == "suppressed"} <= {
        "visit_cap",
        "day_cap",
        "cooldown",
    }
    # a duplicate delivery of the same presence message decides nothing again
    again = await harness.feed(presence(("enter", TOKEN, "coffee", -60.0, t0)))
    assert again.publishes == []


async def test_no_offer_for_an_empty_shelf_until_it_is_restocked(harness: StateHarness) -> None:
    await _setup(harness)
    await opted_in(harness.engine, "shopper-1", TOKEN)
    await harness.feed(rfid(2, {(SHELF, GTIN): 0}, store=STORE, node=NODE))
    now = utc_now()
    empty = await harness.feed(presence(("enter", TOKEN, "coffee", -60.0, now)))
    assert empty.publishes == []
    assert await _decisions(harness) == [("suppressed", "stock")]
    # the restock and the next enter arrive in one ingest batch: the gate sees the restock
    stocked = await harness.feed(
        rfid(3, {(SHELF, GTIN): 7}, store=STORE, node=NODE),
        presence(("exit", TOKEN, "coffee", -85.0, now + timedelta(seconds=1))),
        presence(("enter", TOKEN, "coffee", -60.0, now + timedelta(seconds=2))),
    )
    assert len(stocked.publishes) == 1
    assert await _decisions(harness) == [("suppressed", "stock"), ("triggered", None)]


async def test_no_consent_no_offer_and_no_trace_of_the_token(harness: StateHarness) -> None:
    await _setup(harness)
    await opted_in(harness.engine, "shopper-2", "00aa00bb", consent=False)
    now = utc_now()
    outcome = await harness.feed(
        presence(("enter", "00aa00bb", "coffee", -55.0, now)),
        presence(("enter", "0badc0de", "coffee", -55.0, now), scanner="ble-2"),  # unknown
    )
    assert outcome.publishes == []
    assert await _decisions(harness) == [("suppressed", "consent"), ("suppressed", "consent")]
    rows = await harness.rows(tables.offers)
    assert all(row.shopper_id is None and row.token is None for row in rows)
    assert await harness.rows(tables.presence) == []
    # withdrawing consent stops offers at once and forgets where the shopper is
    await opted_in(harness.engine, "shopper-3", TOKEN)
    await harness.feed(presence(("dwell", TOKEN, "coffee", -55.0, now)))
    assert len(await harness.rows(tables.presence)) == 1
    await registry.set_shopper(harness.engine, "shopper-3", consent=False, segment=None)
    assert await harness.rows(tables.presence) == []
    later = await harness.feed(presence(("enter", TOKEN, "coffee", -55.0, now)))
    assert later.publishes == []


async def test_holdout_is_deterministic_and_recorded(harness: StateHarness) -> None:
    await _setup(harness, holdout_pct=50)
    from cloud.offers.campaigns import in_holdout

    shoppers = [f"shopper-{i}" for i in range(12)]
    held = {s for s in shoppers if in_holdout("coffee-2for1", s, 50)}
    assert 0 < len(held) < len(shoppers)  # both groups exist in this sample
    now = utc_now()
    sent = 0
    for i, shopper in enumerate(shoppers):
        token = f"{i + 1:08x}"
        await opted_in(harness.engine, shopper, token)
        outcome = await harness.feed(presence(("enter", token, "coffee", -60.0, now)))
        sent += len(outcome.publishes)
    assert sent == len(shoppers) - len(held)
    counts = await registry.campaign_counts(harness.engine, "coffee-2for1")
    assert counts["holdout"] == len(held)
    assert counts["triggered"] == sent
    o = tables.offers
    async with harness.engine.connect() as connection:
        holdouts = set(
            (
                await connection.execute(select(o.c.shopper_id).where(o.c.reason == "holdout"))
            ).scalars()
        )
    assert holdouts == held


async def test_caps_and_cooldown(harness: StateHarness) -> None:
    await _setup(harness, per_visit_cap=2, per_day_cap=3, zone_cooldown_s=60)
    await opted_in(harness.engine, "shopper-1", TOKEN)
    t = utc_now() - timedelta(seconds=100)

    async def visit_zone(at_s: float) -> int:
        at = t + timedelta(seconds=at_s)
        outcome = await harness.feed(
            presence(("enter", TOKEN, "coffee", -60.0, at)),
            presence(("exit", TOKEN, "coffee", -85.0, at + timedelta(seconds=1))),
        )
        return len(outcome.publishes)

    assert await visit_zone(0) == 1
    assert await visit_zone(10) == 0  # cooldown: 10 s after the last offer in this zone
    assert await visit_zone(70) == 1
    assert await visit_zone(95) == 0  # the visit cap (2) runs before the cooldown
    assert await visit_zone(135) == 0  # past the cooldown, still capped for this visit
    decisions = await _decisions(harness)
    assert [r for s, r in decisions if s == "suppressed"] == ["cooldown", "visit_cap", "visit_cap"]


async def test_day_cap_across_visits(harness: StateHarness) -> None:
    await _setup(harness, per_visit_cap=5, per_day_cap=1)
    await opted_in(harness.engine, "shopper-1", TOKEN)
    now = utc_now()
    first = await harness.feed(presence(("enter", TOKEN, "coffee", -60.0, now)))
    await harness.feed(presence(("exit", TOKEN, "coffee", -85.0, now + timedelta(seconds=1))))
    second = await harness.feed(
        presence(("enter", TOKEN, "coffee", -60.0, now + timedelta(seconds=2)))
    )
    assert (len(first.publishes), len(second.publishes)) == (1, 0)
    assert (await _decisions(harness))[-1] == ("suppressed", "day_cap")


async def test_window_gate(harness: StateHarness) -> None:
    now = utc_now()
    await _setup(harness, schedule={"starts_at": (now + timedelta(days=1)).isoformat()})
    await opted_in(harness.engine, "shopper-1", TOKEN)
    outcome = await harness.feed(presence(("enter", TOKEN, "coffee", -60.0, now)))
    assert outcome.publishes == []
    assert await _decisions(harness) == [("suppressed", "window")]


async def test_cross_node_arbitration_places_the_shopper_in_one_zone(
    harness: StateHarness,
) -> None:
    await _setup(harness, zones=["coffee", "tea"], per_visit_cap=5, per_day_cap=5)
    await opted_in(harness.engine, "shopper-1", TOKEN)
    now = utc_now()
    # Two nodes report the same phone at once, in their own zones; the front one is louder.
    outcome = await harness.feed(
        presence(("enter", TOKEN, "coffee", -58.0, now), node=NODE),
        presence(("enter", TOKEN, "tea", -62.0, now + timedelta(seconds=1)), node=NODE_B),
        presence(("exit", TOKEN, "tea", -80.0, now + timedelta(seconds=3)), node=NODE_B),
    )
    assert [decode_as(Offer, p, topic=t).zone for t, p in outcome.publishes] == ["coffee"]
    rows = await harness.rows(tables.presence)
    assert [(row.zone, row.token) for row in rows] == [("coffee", TOKEN)]
    # Later (past the window) the shopper really walks to the tea shelf.
    moved = await harness.feed(
        presence(("enter", TOKEN, "tea", -70.0, now + timedelta(seconds=30)), node=NODE_B)
    )
    assert [decode_as(Offer, p, topic=t).zone for t, p in moved.publishes] == ["tea"]


async def test_a_rotated_token_keeps_the_visit(harness: StateHarness) -> None:
    await _setup(harness, zone_cooldown_s=0)
    await opted_in(harness.engine, "shopper-1", TOKEN)
    now = utc_now()
    await registry.add_token(
        harness.engine,
        "shopper-1",
        "0001002b",
        valid_from=now,
        expires_at=now + timedelta(minutes=15),
    )
    first = await harness.feed(presence(("enter", TOKEN, "coffee", -60.0, now)))
    # the phone rotates: the new token enters, the old one exits late (edge: unseen 30 s)
    second = await harness.feed(
        presence(("enter", "0001002b", "coffee", -60.0, now + timedelta(seconds=5))),
        presence(("exit", TOKEN, "coffee", None, now + timedelta(seconds=35))),
    )
    assert (len(first.publishes), len(second.publishes)) == (1, 0)
    rows = await harness.rows(tables.presence)
    assert [(row.zone, row.token) for row in rows] == [("coffee", "0001002b")]


async def test_no_mac_address_anywhere_in_the_database(harness: StateHarness) -> None:
    await _setup(harness)
    await opted_in(harness.engine, "shopper-1", TOKEN)
    now = utc_now()
    outcome = await harness.feed(presence(("enter", TOKEN, "coffee", -60.0, now)))
    assert outcome.publishes
    assert not any(contains_mac_address(p.decode()) for _t, p in outcome.publishes)
    assert await text_values_with_mac(harness.engine) == []
    # the scan does find one when there is one (the check can fail)
    async with harness.engine.begin() as connection:
        await connection.execute(
            tables.offers.update().values(webhook_error="peer aa:bb:cc:dd:ee:ff refused")
        )
    assert [(t, c) for t, c, _v in await text_values_with_mac(harness.engine)] == [
        ("offers", "webhook_error")
    ]
