"""Orders on a real database (SQLite and PostgreSQL): the shop of tests/inventory/shop.py
with the order webhook's secret set, RFID item events fed through the real ingest applier."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from protocols.messages import CountDelta, ItemEvent, ItemEventKind, RfidEvents
from tests.cloud.cloudproc import SHOPPER_KEY, STAFF_KEY
from tests.cloud.conftest import database_url, postgres_server  # noqa: F401  (fixtures)
from tests.inventory.shop import NODE, STORE, Shop, bearer, open_shop

SECRET_ENV = "STOREGATE_TEST_ORDER_WEBHOOK_SECRET"
READER = "reader-1"


class Orders:
    """The shop, seen from the online channel and the store team."""

    def __init__(self, shop: Shop, secret: str) -> None:
        self.shop = shop
        self.http = shop.http
        self.secret = secret
        self.rfid_seq = 0

    async def call(
        self, method: str, path: str, key: str = STAFF_KEY, *, expect: int = 200, **kw: Any
    ) -> Any:
        response = await self.http.request(method, path, headers=bearer(key), **kw)
        assert response.status_code == expect, f"{method} {path}: {response.text}"
        return response.json()

    async def place(
        self, external_id: str, *lines: tuple[str, int], expect: int = 201, **fields: Any
    ) -> Any:
        body = {
            "external_id": external_id,
            "store": STORE,
            "lines": [{"gtin": g, "quantity": q} for g, q in lines],
            **fields,
        }
        return await self.call("POST", "/api/v1/orders", SHOPPER_KEY, expect=expect, json=body)

    async def act(self, order_id: str, action: str, expect: int = 200, **body: Any) -> Any:
        return await self.call(
            "POST", f"/api/v1/orders/{order_id}/{action}", expect=expect, json=body
        )

    async def rfid(
        self,
        items: list[tuple[ItemEventKind, str, str, str | None]],
        counts: Sequence[tuple[str, str, int, int]] = (),
    ) -> None:
        """RFID item events (kind, epc, gtin, shelf) and count deltas (shelf, gtin, delta,
        count), as the edge publishes them, through the ingest applier."""
        self.rfid_seq += 1
        now = datetime.now(UTC)
        outcome = await self.shop.harness.feed(
            RfidEvents(
                store=STORE,
                node=NODE,
                seq=self.rfid_seq,
                reader=READER,
                event_time=now,
                items=[
                    ItemEvent(kind=kind, epc=epc, gtin=gtin, shelf=shelf, at=now)
                    for kind, epc, gtin, shelf in items
                ],
                counts=[
                    CountDelta(shelf=shelf, gtin=gtin, delta=delta, count=count)
                    for shelf, gtin, delta, count in counts
                ],
            )
        )
        assert outcome.dead_lettered == 0


@pytest.fixture
async def orders(
    database_url: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Orders]:
    secret = secrets.token_hex(16)
    monkeypatch.setenv(SECRET_ENV, secret)
    async for shop in open_shop(
        database_url,
        tmp_path,
        monkeypatch,
        lockers_options={"intake_webhook_secret_env": SECRET_ENV},
    ):
        yield Orders(shop, secret)
