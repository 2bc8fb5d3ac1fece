"""The local inventory feed keeps Google Merchant Center's published field rules and says
what the one inventory model says, through the API and as a file from `storegate feed`."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud.inventory.feed import COLUMNS
from tests.cloud.cloudproc import OPS_KEY, STAFF_KEY
from tests.inventory.shop import GTIN, OTHER_GTIN, SAFETY, STORE, Shop, bearer, open_shop

# Google's local inventory data specification (support.google.com/merchants/answer/14819809)
# and availability guide (answer/7371390), written down independently of cloud/inventory/feed.py.
AVAILABILITY = {"in_stock", "limited_availability", "on_display_to_order", "out_of_stock"}
PICKUP_METHODS = {"buy", "reserve", "ship to store", "not supported"}
PICKUP_SLAS = {"same day", "next day", "2-day", "3-day", "4-day", "5-day", "6-day", "multi-week"}


def google_rule_violations(row: dict[str, str]) -> list[str]:
    problems = []
    for required in ("store_code", "id", "availability"):
        if not row.get(required):
            problems.append(f"{required} is required")
    if len(row.get("id", "")) > 50:
        problems.append("id longer than 50 characters")
    if row.get("availability") not in AVAILABILITY:
        problems.append(f"availability {row.get('availability')!r} is not a supported value")
    quantity = row.get("quantity", "")
    if quantity:
        if not quantity.isdigit():
            problems.append(f"quantity {quantity!r} is not an integer >= 0")
        else:
            # 0 out of stock, 1-2 limited availability, 3+ in stock
            n = int(quantity)
            expected = "out_of_stock" if n == 0 else "limited_availability" if n <= 2 else None
            if expected and row["availability"] != expected:
                problems.append(f"quantity {n} is {expected}, not {row['availability']}")
            if n >= 3 and row["availability"] != "in_stock":
                problems.append(f"quantity {n} is in_stock, not {row['availability']}")
    method, sla = row.get("pickup_method", ""), row.get("pickup_sla", "")
    if method and method not in PICKUP_METHODS:
        problems.append(f"pickup_method {method!r} is not a supported value")
    if sla and sla not in PICKUP_SLAS:
        problems.append(f"pickup_sla {sla!r} is not a supported value")
    if method and method != "not supported" and not sla:
        problems.append("pickup_method needs pickup_sla")
    if sla and not method:
        problems.append("pickup_sla needs pickup_method")
    return problems


def parse_tsv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(text), delimiter="\t")
    header = next(reader)
    return header, [dict(zip(header, line, strict=True)) for line in reader]


async def feed(shop: Shop, fmt: str = "tsv", key: str = OPS_KEY, **params: str) -> Any:
    response = await shop.http.get(
        "/api/v1/feeds/local-inventory", params={"format": fmt, **params}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    return response


async def test_the_feed_keeps_googles_rules_and_its_thresholds(shop: Shop) -> None:
    gtins = [f"0950600013{i:04d}" for i in range(4)]
    # available 0, 1, 2, 3 (on hand minus the safety stock): the thresholds' edges
    await shop.shelves_of({gtin: SAFETY + i for i, gtin in enumerate(gtins)})

    response = await feed(shop)
    assert response.headers["content-type"].startswith("text/tab-separated-values")
    assert 'filename="local-inventory.tsv"' in response.headers["content-disposition"]
    header, rows = parse_tsv(response.text)
    assert header == list(COLUMNS)
    assert [google_rule_violations(r) for r in rows] == [[]] * 4
    by_id = {r["id"]: r for r in rows}
    assert [by_id[g]["availability"] for g in gtins] == [
        "out_of_stock",
        "limited_availability",
        "limited_availability",
        "in_stock",
    ]
    assert [by_id[g]["quantity"] for g in gtins] == ["0", "1", "2", "3"]
    assert {r["store_code"] for r in rows} == {STORE}
    assert {(r["pickup_method"], r["pickup_sla"]) for r in rows} == {("reserve", "same day")}


async def test_quantity_is_what_the_webshop_may_sell_after_reservations(shop: Shop) -> None:
    await shop.shelves(GTIN=5 + SAFETY, OTHER_GTIN=0)
    assert (await shop.order((GTIN, 3))).status_code == 201

    lines = (await feed(shop, "jsonl")).text.splitlines()
    rows = {r["gtin"]: r for r in map(json.loads, lines)}
    row = rows[GTIN]
    assert (row["on_hand"], row["reserved"], row["safety_stock"]) == (6, 3, SAFETY)
    assert (row["quantity"], row["availability"]) == (2, "limited_availability")
    assert row["timestamp"].endswith("Z")
    assert (await shop.stock())["available"] == row["quantity"]  # one model
    # a GTIN the shelves no longer hold stays in the feed as out of stock
    assert (rows[OTHER_GTIN]["quantity"], rows[OTHER_GTIN]["availability"]) == (0, "out_of_stock")


async def test_store_codes_product_ids_and_pickup_terms_come_from_the_config(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {
        "local_feed": {
            "limited_max": 4,
            "stores": {STORE: {"store_code": "GBP-0042", "pickup_method": "not supported"}},
            "product_ids": {GTIN: "SKU-RED-M"},
        }
    }
    async for shop in open_shop(database_url, tmp_path, monkeypatch, options):
        await shop.shelves(GTIN=4 + SAFETY)
        _, rows = parse_tsv((await feed(shop)).text)
        assert rows == [
            {
                "store_code": "GBP-0042",
                "id": "SKU-RED-M",
                "availability": "limited_availability",  # 4 <= limited_max
                "quantity": "4",
                "pickup_method": "not supported",
                "pickup_sla": "",  # given only with a pickup method
            }
        ]


async def test_staff_see_their_stores_only(shop: Shop) -> None:
    await shop.shelves(GTIN=3)
    assert len(parse_tsv((await feed(shop, key=STAFF_KEY)).text)[1]) == 1
    other = await shop.http.get(
        "/api/v1/feeds/local-inventory", params={"stores": "store-999"}, headers=bearer(STAFF_KEY)
    )
    assert other.status_code == 403, other.text
    bad = await shop.http.get(
        "/api/v1/feeds/local-inventory", params={"format": "xml"}, headers=bearer(OPS_KEY)
    )
    assert bad.status_code == 422


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_storegate_feed_writes_the_file_from_the_cloud_database(
    shop: Shop, tmp_path: Path
) -> None:
    await shop.shelves(GTIN=10 + SAFETY)
    config = tmp_path / "cloud.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database_url": str(shop.harness.engine.url),
                "domains": {"inventory": {"local_feed": {}}},
            }
        )
    )
    out = tmp_path / "feed" / "local.tsv"
    out.parent.mkdir()
    command = [sys.executable, "-m", "storegate", "feed", str(out), "--config", str(config)]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
    assert process.returncode == 0, output
    assert "wrote 1 rows" in output
    header, rows = parse_tsv(out.read_text())
    assert header == list(COLUMNS)
    assert [(r["id"], r["quantity"], r["availability"]) for r in rows] == [(GTIN, "10", "in_stock")]
    assert [p.name for p in out.parent.iterdir()] == ["local.tsv"]  # no partial file left
