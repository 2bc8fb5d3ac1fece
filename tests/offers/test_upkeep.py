"""Retention and webhook failure handling, on a real SQLite file and a real HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.bus import LiveBus
from cloud.offers import registry, tables
from cloud.offers.delivery import WebhookSender
from cloud.offers.options import WebhookOptions
from cloud.state.db import create_engine, migrate
from protocols.messages import utc_now
from tests.offers.helpers import WebhookServer


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/state.db")
    await migrate(engine)
    yield engine
    await engine.dispose()


async def test_retention_forgets_visits_tokens_and_old_decisions(engine: AsyncEngine) -> None:
    now = utc_now()
    await registry.set_shopper(engine, "s1", consent=True, segment=None)
    await registry.add_token(
        engine, "s1", "0a", valid_from=now - timedelta(hours=3), expires_at=now - timedelta(hours=2)
    )
    await registry.add_token(engine, "s1", "0b", expires_at=now + timedelta(minutes=10))
    async with engine.begin() as connection:
        for shopper, seen in (("s1", now - timedelta(hours=1)), ("s2", now)):
            await connection.execute(
                tables.presence.insert().values(
                    store_id="store-1",
                    shopper_id=shopper,
                    token="0b",
                    zone="coffee",
                    visit_id="v",
                    last_seen_at=seen,
                )
            )
        for offer_id, age in (("old-offer-1", timedelta(days=91)), ("new-offer-1", timedelta(0))):
            await connection.execute(
                tables.offers.insert().values(
                    offer_id=offer_id,
                    campaign_id="c",
                    store_id="store-1",
                    zone="coffee",
                    trigger="enter",
                    status="suppressed",
                    reason="consent",
                    counts_toward_caps=False,
                    decided_at=now - age,
                    webhook_attempts=0,
                )
            )
    removed = await registry.housekeeping(
        engine, visit_gap_s=1800, token_grace_s=3600, retention_days=90
    )
    assert removed == {"visits": 1, "tokens": 1, "offers": 1}
    assert [r.shopper_id for r in await _rows(engine, tables.presence)] == ["s2"]
    assert [r.token for r in await _rows(engine, tables.shopper_tokens)] == ["0b"]
    assert [r.offer_id for r in await _rows(engine, tables.offers)] == ["new-offer-1"]


async def test_a_webhook_that_keeps_failing_gives_up_with_the_reason(engine: AsyncEngine) -> None:
    server = WebhookServer(fail_first=1000)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                tables.offers.insert().values(
                    offer_id="offer-0001",
                    campaign_id="c",
                    store_id="store-1",
                    zone="coffee",
                    trigger="enter",
                    status="triggered",
                    counts_toward_caps=True,
                    decided_at=utc_now(),
                    webhook_state="pending",
                    webhook_attempts=0,
                    payload={"offer_id": "offer-0001"},
                )
            )
        options = WebhookOptions(
            url=server.url, max_attempts=3, backoff_min_s=0.05, backoff_max_s=0.1, poll_s=0.05
        )
        sender = WebhookSender(options, engine, LiveBus())
        sender.start()
        try:
            for _ in range(200):
                if sender.failed:
                    break
                await asyncio.sleep(0.05)
        finally:
            await sender.stop()
        (row,) = await _rows(engine, tables.offers)
        assert (row.webhook_state, row.webhook_attempts, row.webhook_error) == (
            "failed",
            3,
            "HTTP 503",
        )
        assert row.status == "triggered"  # never delivered
        assert len(server.requests) == 3
    finally:
        server.close()


async def _rows(engine: AsyncEngine, table: Table) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(select(table))).all())
