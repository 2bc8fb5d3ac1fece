"""The catalogue over HTTP against a real cloud: import (bad rows refused with line and
reason, the rest imported), search, one product, and where a GTIN is in this store and the
others, with the stock the edge reported over a real Mosquitto."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from cloud.catalogue.tables import products
from cloud.runtime import CloudRuntime
from storegate.cli import app as storegate_app
from tests.cloud.cloudproc import OPS_KEY, SHOPPER_KEY, STAFF_KEY, cloud_config
from tests.dashboard.edge import NODE, OTHER_STORE, STORE, EdgePublisher, birth

SHIRT, JEANS, SOCKS = "00614141011001", "00614141012008", "00614141013005"
CSV = (
    "gtin,name,size,colour,price,currency,category\n"
    f"{SHIRT},Linen shirt,M,white,39.90,EUR,Tops\n"
    f"{JEANS},Straight jeans,32/32,mid blue,59.9,,Trousers\n"
    "00614141011002,Bad check digit,M,,1,EUR,Tops\n"
    f"{SOCKS},Cotton socks 3-pack,one size,mixed,9.90,EUR,Accessories\n"
    f"{SHIRT},Duplicate,S,,1,EUR,Tops\n"
)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _import(http: httpx.AsyncClient, text: str, key: str = OPS_KEY) -> httpx.Response:
    return await http.put(
        "/api/v1/products", content=text, headers={**bearer(key), "Content-Type": "text/csv"}
    )


async def test_an_import_keeps_good_rows_and_names_each_bad_one(http: httpx.AsyncClient) -> None:
    response = await _import(http, CSV)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["imported"], body["created"], body["updated"], body["rejected"]) == (3, 3, 0, 2)
    assert [r["line"] for r in body["rejections"]] == [4, 6]
    assert "check digit" in body["rejections"][0]["reason"]
    assert "already on line 2" in body["rejections"][1]["reason"]

    shirt = (await http.get(f"/api/v1/products/{SHIRT}", headers=bearer(SHOPPER_KEY))).json()
    assert shirt == {
        "gtin": SHIRT,
        "name": "Linen shirt",
        "size": "M",
        "colour": "white",
        "price": "39.90",
        "currency": "EUR",
        "category": "Tops",
    }
    jeans = (await http.get(f"/api/v1/products/{JEANS}", headers=bearer(STAFF_KEY))).json()
    assert (jeans["price"], jeans["currency"]) == ("59.90", "EUR")  # the configured default

    # a second import replaces known GTINs and adds new ones
    again = await _import(http, f"gtin,name,price,currency\n{SHIRT},Linen shirt (new),35,EUR\n")
    assert (again.json()["created"], again.json()["updated"]) == (0, 1)
    shirt = (await http.get(f"/api/v1/products/{SHIRT}", headers=bearer(OPS_KEY))).json()
    assert (shirt["name"], shirt["price"], shirt["size"]) == ("Linen shirt (new)", "35.00", None)


async def test_import_refusals(http: httpx.AsyncClient) -> None:
    assert (await _import(http, CSV, STAFF_KEY)).status_code == 403  # ops only
    no_name = await _import(http, "gtin,title\n")
    assert no_name.status_code == 422
    assert "lacks name" in no_name.json()["detail"]
    as_json = await http.put("/api/v1/products", json={"gtin": SHIRT}, headers=bearer(OPS_KEY))
    assert as_json.status_code == 415
    latin1 = await http.put(
        "/api/v1/products",
        content="gtin,name\n00614141011001,Chemise lég\xe8re\n".encode("latin-1"),
        headers={**bearer(OPS_KEY), "Content-Type": "text/csv"},
    )
    assert latin1.status_code == 422
    assert "not UTF-8" in latin1.json()["detail"]


async def test_search_matches_every_word_in_any_column(http: httpx.AsyncClient) -> None:
    await _import(http, CSV)

    async def names(q: str) -> list[str]:
        found = await http.get("/api/v1/products", params={"q": q}, headers=bearer(SHOPPER_KEY))
        assert found.status_code == 200
        return [p["name"] for p in found.json()]

    assert await names("shirt") == ["Linen shirt"]
    assert await names("SHIRT white") == ["Linen shirt"]
    assert await names("shirt blue") == []
    assert await names("614141011") == ["Linen shirt"]  # part of a GTIN
    assert await names("blue") == ["Straight jeans"]  # colour
    assert await names("accessories") == ["Cotton socks 3-pack"]  # category
    assert await names("%") == []  # a LIKE wildcard is a character here
    assert len(await names("")) == 3
    missing = await http.get("/api/v1/products/00614141099999", headers=bearer(OPS_KEY))
    assert missing.status_code == 404

    # the apps' bulk name lookup: the known ones, in the order asked
    bulk = await http.get(
        "/api/v1/products",
        params={"gtins": f"{SOCKS},00614141099999,{SHIRT}"},
        headers=bearer(STAFF_KEY),
    )
    assert [p["gtin"] for p in bulk.json()] == [SOCKS, SHIRT]
    bad = await http.get("/api/v1/products", params={"gtins": "123"}, headers=bearer(OPS_KEY))
    assert bad.status_code == 422


async def test_where_lists_this_stores_shelves_and_the_other_stores(
    cloud: CloudRuntime, http: httpx.AsyncClient, edge: EdgePublisher
) -> None:
    await _import(http, CSV)
    planogram = await http.put(
        f"/api/v1/stores/{STORE}/planogram/backroom-1",
        json={"gtins": [SHIRT]},
        headers=bearer(OPS_KEY),
    )
    assert planogram.status_code in (200, 201), planogram.text
    edge.send(birth(1, {("aisle3-shelf2", SHIRT): 4, ("aisle3-shelf1", JEANS): 2}))
    elsewhere = birth(1, {("shelf-1", SHIRT): 7}).model_copy(
        update={"store": OTHER_STORE, "node": "pi-1"}
    )
    edge.send(elsewhere)
    for _ in range(100):  # both births applied
        got = await http.get(
            f"/api/v1/products/{SHIRT}/where", params={"store": STORE}, headers=bearer(STAFF_KEY)
        )
        if got.status_code == 200 and got.json()["here"] and got.json()["elsewhere"]:
            break
        await asyncio.sleep(0.05)
    body = got.json()
    assert body["product"]["name"] == "Linen shirt"
    assert body["here"] == [
        {"shelf": "aisle3-shelf2", "count": 4, "planned": False, "area": "floor"},
        {"shelf": "backroom-1", "count": 0, "planned": True, "area": "backroom"},
    ]
    assert body["elsewhere"] == [{"store": OTHER_STORE, "name": "Paris Rivoli", "on_hand": 7}]

    # staff may ask about their own store only; a GTIN without a product still answers
    other = await http.get(
        f"/api/v1/products/{SHIRT}/where", params={"store": OTHER_STORE}, headers=bearer(STAFF_KEY)
    )
    assert other.status_code == 403
    unknown = await http.get(
        "/api/v1/products/80614141123458/where", params={"store": STORE}, headers=bearer(OPS_KEY)
    )
    assert unknown.json() == {
        "gtin": "80614141123458",
        "product": None,
        "store": STORE,
        "here": [],
        "elsewhere": [],
    }
    nowhere = await http.get(
        f"/api/v1/products/{SHIRT}/where", params={"store": "store-999"}, headers=bearer(OPS_KEY)
    )
    assert nowhere.status_code == 404
    assert NODE  # the birth above came from this store's registered node


def test_the_command_imports_a_file_into_the_clouds_database(tmp_path: Path) -> None:
    config = cloud_config(1883, tmp_path, stores={STORE: [NODE]})
    config["domains"] = {"catalogue": {"default_currency": "EUR"}}
    (tmp_path / "cloud.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "products.csv").write_text(CSV)
    result = CliRunner().invoke(
        storegate_app,
        ["catalogue", "import", str(tmp_path / "products.csv"), "-c", str(tmp_path / "cloud.yaml")],
    )
    assert result.exit_code == 1, result.output  # some rows refused
    assert "imported 3 products" in result.output
    assert "refused 2" in result.output
    assert "line 4:" in result.output
    assert "line 6:" in result.output

    from cloud.state.db import create_engine

    async def stored() -> list[str]:
        engine = create_engine(config["database_url"])
        try:
            async with engine.connect() as connection:
                return list((await connection.execute(select(products.c.name))).scalars())
        finally:
            await engine.dispose()

    assert sorted(asyncio.run(stored())) == ["Cotton socks 3-pack", "Linen shirt", "Straight jeans"]
    (tmp_path / "broken.csv").write_text("sku,title\n")
    broken = CliRunner().invoke(
        storegate_app,
        ["catalogue", "import", str(tmp_path / "broken.csv"), "-c", str(tmp_path / "cloud.yaml")],
    )
    assert broken.exit_code == 2
    assert "lacks gtin, name" in broken.output
