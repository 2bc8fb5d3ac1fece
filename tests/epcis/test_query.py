"""EPCIS events stored by the ingest batch (real SQLite and PostgreSQL) and served by the
EPCIS 2.0 REST query interface: per EPC, store and time range, paged, schema-valid."""

from __future__ import annotations

import base64
import re
from datetime import timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, inspect

from cloud.epcis.cbv import epcis_time
from cloud.epcis.tables import epcis_events
from cloud.state.schema import stream_positions
from tests.cloud.harness import StateHarness
from tests.cloud.streams import NODE, STORE
from tests.epcis.conftest import OPS_KEY, OTHER_STORE, SHOPPER_KEY, STAFF_KEY, Rig, bearer
from tests.epcis.schema import validate
from tests.epcis.stores import (
    DOOR_SGLN,
    SHELF_SGLN,
    STORE_SGLN,
    T0,
    TILL_SGLN,
    item,
    report,
    sgtin_uri,
)

OPS = bearer(OPS_KEY)
SERIALS = 25


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def iso(seconds: float) -> str:
    return epcis_time(at(seconds))


async def feed_store(rig: Rig) -> None:
    """25 arrivals on shelf-1 (two per second: events sharing an eventTime), then serial 1
    is sold at the till and leaves by the door; the shelf's own reader reports it gone from
    the shelf only after the sale (its departure window is longer). Serial 2 leaves by the
    door unsold. An arrival in another store (no GLN configured there)."""
    arrivals = [item("arrived", n, at(n // 2), shelf="shelf-1") for n in range(1, SERIALS + 1)]
    outcome = await rig.harness.feed(report(1, *arrivals))
    assert outcome.applied == 1
    journey = [
        item("arrived", 1, at(100), shelf="till-1"),
        item("departed", 1, at(110), from_shelf="shelf-1"),
        item("departed", 1, at(115), from_shelf="till-1"),  # leaving the till: no event
        item("arrived", 1, at(120), shelf="door-1"),
    ]
    await rig.harness.feed(report(2, *journey))
    await rig.harness.feed(report(3, item("arrived", 2, at(130), shelf="door-1")))
    await rig.harness.feed(report(1, item("arrived", 1, at(5), shelf="shelf-1"), store=OTHER_STORE))


async def query(rig: Rig, headers: dict[str, str] | None = None, **params: Any) -> httpx.Response:
    return await rig.http.get(
        "/epcis/events", params=params, headers=OPS if headers is None else headers
    )


async def events(rig: Rig, **params: Any) -> list[dict[str, Any]]:
    response = await query(rig, **params)
    assert response.status_code == 200, response.text
    document = response.json()
    validate(document)
    found: list[dict[str, Any]] = document["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    return found


def terms(event: dict[str, Any]) -> tuple[Any, ...]:
    return (
        event["bizStep"],
        event.get("disposition"),
        event.get("readPoint", {}).get("id"),
        event.get("bizLocation", {}).get("id"),
    )


async def test_an_items_life_by_epc_with_the_right_cbv_terms(rig: Rig) -> None:
    await feed_store(rig)
    one = await events(rig, MATCH_epc=sgtin_uri(1))
    assert [terms(e) for e in one if e["eventTime"] >= iso(100)] == [
        ("retail_selling", "retail_sold", TILL_SGLN, STORE_SGLN),
        # a shelf's count is no change of ownership: the item stays sold
        ("cycle_counting", None, SHELF_SGLN, STORE_SGLN),
        ("entering_exiting", "retail_sold", DOOR_SGLN, None),
    ]
    # serial 1 also arrived on a shelf, and in the other store (URNs of ours there)
    assert [terms(e) for e in one if e["eventTime"] < iso(100)] == [
        ("stocking", "sellable_accessible", SHELF_SGLN, STORE_SGLN),
        (
            "stocking",
            "sellable_accessible",
            f"urn:storegate:{OTHER_STORE}:shelf:shelf-1",
            f"urn:storegate:{OTHER_STORE}",
        ),
    ]
    two = await events(rig, MATCH_epc=sgtin_uri(2), EQ_readPoint=DOOR_SGLN)
    assert [terms(e) for e in two] == [("departing", "unknown", DOOR_SGLN, None)]
    assert all(e["epcList"] == [sgtin_uri(2)] for e in two)
    pattern = await events(rig, MATCH_epc="urn:epc:idpat:sgtin:0614141.812345.*", perPage=50)
    assert len(pattern) == SERIALS + 3 + 1 + 1
    # LIKE wildcards in a pattern are literal characters, not wildcards
    assert await events(rig, MATCH_epc="urn:epc:idpat:sgtin:0614141.81234_.*") == []
    exact = await events(rig, MATCH_epc="urn:epc:idpat:sgtin:0614141.812345.2")
    assert [e["epcList"] for e in exact] == [[sgtin_uri(2)]] * 2
    sold = await events(rig, EQ_bizStep="retail_selling|entering_exiting")
    assert [e["bizStep"] for e in sold] == ["retail_selling", "entering_exiting"]
    spelled = await events(
        rig,
        EQ_bizStep="urn:epcglobal:cbv:bizstep:retail_selling|https://ref.gs1.org/cbv/BizStep-entering_exiting",
        EQ_disposition="https://ref.gs1.org/cbv/Disp-retail_sold",
    )
    assert spelled == sold


async def test_events_are_stored_once_per_item_event(rig: Rig) -> None:
    await feed_store(rig)
    again = await rig.harness.feed(report(3, item("arrived", 2, at(130), shelf="door-1")))
    assert again.duplicates == 1
    rows = await rig.harness.rows(epcis_events)
    assert len(rows) == SERIALS + 3 + 1 + 1
    assert len({row.event_id for row in rows}) == len(rows)


async def test_an_event_already_stored_never_fails_the_batch(rig: Rig) -> None:
    """The same message applied again (dedup forgot it, say) must not fail its batch on
    the unique eventID: the ingestor would retry that batch for ever."""
    message = report(1, item("arrived", 1, at(1), shelf="shelf-1"))
    assert (await rig.harness.feed(message)).applied == 1
    await rig.harness.close()
    fresh = StateHarness(
        rig.harness.engine.url.render_as_string(hide_password=False),
        {STORE: [NODE], OTHER_STORE: [NODE]},
        domains=[rig.domain],
    )
    await fresh.start()
    async with fresh.engine.begin() as connection:  # forget the stream position only
        await connection.execute(delete(stream_positions))
    rig.harness = fresh
    assert (await fresh.feed(message)).applied == 1
    assert len(await fresh.rows(epcis_events)) == 1


async def test_a_store_query_pages_through_every_event_once_in_order(rig: Rig) -> None:
    await feed_store(rig)
    everything = await events(rig, EQ_bizLocation=STORE_SGLN, perPage=50)
    assert len(everything) == SERIALS + 2  # arrivals, the departure, the sale
    times = [e["eventTime"] for e in everything]
    assert times == sorted(times)
    paged: list[dict[str, Any]] = []
    response = await query(rig, EQ_bizLocation=STORE_SGLN, perPage=4)
    pages = 1
    while True:
        assert response.status_code == 200
        document = response.json()
        validate(document)
        page = document["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        assert len(page) <= 4
        paged += page
        link = response.headers.get("link")
        if link is None:
            break
        url = re.fullmatch(r'<(.+)>; rel="next"', link)
        assert url is not None, link
        assert "EQ_bizLocation=" in url.group(1)
        assert "perPage=4" in url.group(1)
        response = await rig.http.get(url.group(1), headers=OPS)
        pages += 1
    assert pages == 7  # 27 events, 4 a page
    exact = await query(rig, EQ_bizLocation=STORE_SGLN, perPage=27)
    assert "link" not in exact.headers, "a full last page is the last page"
    assert "link" in (await query(rig, EQ_bizLocation=STORE_SGLN, perPage=26)).headers
    assert [e["eventID"] for e in paged] == [e["eventID"] for e in everything]
    assert response.headers["GS1-EPCIS-Version"] == "2.0.0"


async def test_the_time_range_includes_its_start_and_excludes_its_end(rig: Rig) -> None:
    await feed_store(rig)
    window = await events(rig, GE_eventTime=iso(3), LT_eventTime=iso(5), EQ_bizLocation=STORE_SGLN)
    # serials 6-9 arrived at 3 s and 4 s; 10 and 11 at 5 s, the end (excluded)
    assert sorted(e["epcList"][0] for e in window) == sorted(sgtin_uri(n) for n in (6, 7, 8, 9))
    assert {e["eventTime"] for e in window} == {iso(3), iso(4)}
    # the same instant written with another offset is the same bound
    plus_two = at(3).astimezone(timezone(timedelta(hours=2))).isoformat()
    offset = await events(rig, GE_eventTime=plus_two, LT_eventTime=iso(4))
    assert sorted(e["epcList"][0] for e in offset) == sorted(sgtin_uri(n) for n in (6, 7))


async def test_staff_see_their_stores_events_only_and_shoppers_none(rig: Rig) -> None:
    await feed_store(rig)
    staff = await query(rig, bearer(STAFF_KEY))
    assert staff.status_code == 200
    seen = staff.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert [e["bizLocation"]["id"] for e in seen] == [f"urn:storegate:{OTHER_STORE}"]
    assert (await query(rig, bearer(SHOPPER_KEY))).status_code == 403
    assert (await query(rig, {})).status_code == 401


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "params",
    [
        {"perPage": str(10**30)},
        {"perPage": "51"},  # over this server's limit
        {"perPage": "0"},
        {"perPage": "-1"},
        {"perPage": "1e3"},
        {"GE_eventTime": "2026-13-01T00:00:00Z"},
        {"GE_eventTime": "not a date"},
        {"LT_eventTime": "2026-11-23T12:00:00"},  # no offset
        {"GE_eventTime": "0001-01-01T00:00:00+14:00"},  # before year 1 in UTC
        {"LT_recordTime": "99999-01-01T00:00:00Z"},
        {"nextPageToken": "garbage!"},
        {"nextPageToken": _token("2026-11-23T12:00:00+00:00|99999999999999999999")},
        {"nextPageToken": _token("2026-11-23T12:00:00+00:00|9223372036854775808")},
        {"nextPageToken": _token("2026-11-23T12:00:00|1")},
        {"MATCH_epc": "urn:epc:id:sgtin:" + "9" * 10_000},
        {"MATCH_epc": "urn:epc:idpat:sgtin:0614141.*.6789"},
        {"MATCH_epc": "urn:epc:idpat:sgtin:0614141.81*"},  # '*' for part of a field
        {"EQ_bizStep": "stocking||departing"},
        {"EQ_readPoint": "|".join(["x"] * 101)},
        {"EQ_action": "LOOK"},
        {"orderBy": "eventTime"},  # not implemented: refused, not ignored
        {"storeId": "store-042"},
    ],
)
async def test_hostile_query_parameters_are_refused_with_a_reason(
    rig: Rig, params: dict[str, str]
) -> None:
    response = await query(rig, None, **params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "QueryParameterException"
    assert body["detail"].split(":")[0] in params


async def test_a_parameter_given_twice_is_refused(rig: Rig) -> None:
    response = await rig.http.get(
        "/epcis/events?EQ_bizStep=stocking&EQ_bizStep=departing", headers=OPS
    )
    assert response.status_code == 400
    assert "more than once" in response.json()["detail"]


async def test_the_migration_makes_the_table_the_code_describes(rig: Rig) -> None:
    def described(connection: Any) -> tuple[Any, ...]:
        inspector = inspect(connection)
        columns = {c["name"]: c["nullable"] for c in inspector.get_columns("epcis_events")}
        indexes = {
            i["name"]: i["column_names"]
            for i in inspector.get_indexes("epcis_events")
            if "duplicates_constraint" not in i  # PostgreSQL lists a unique's index too
        }
        uniques = [u["column_names"] for u in inspector.get_unique_constraints("epcis_events")]
        return columns, indexes, uniques

    async with rig.harness.engine.connect() as connection:
        columns, indexes, uniques = await connection.run_sync(described)
    assert columns == {c.name: c.nullable for c in epcis_events.columns}
    assert indexes == {i.name: [c.name for c in i.columns] for i in epcis_events.indexes}
    assert uniques == [["event_id"]]
