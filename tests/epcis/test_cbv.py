"""CBV terms, GS1 locations and EPC identities of the EPCIS events, without a database."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import jsonschema
import pytest

from cloud.epcis.cbv import Happened, classify, object_event, query_document
from cloud.epcis.config import ReadPointRole, check_gln, parse_options
from cloud.epcis.identity import epc_uri
from tests.cloud.streams import STORE
from tests.epcis.schema import BASE, EPCIS, validate, validator
from tests.epcis.stores import (
    DOOR_SGLN,
    OPTIONS,
    SHELF2_SGLN,
    SHELF_SGLN,
    STORE_SGLN,
    T0,
    TILL_SGLN,
    item,
    sgtin_uri,
)

OPTS = parse_options(OPTIONS)
EPCIS_DOCUMENT = BASE + "EPCIS-Document-JSON-Schema.json"


def event(kind: str, shelf: str | None, from_shelf: str | None, sold: bool = False) -> Any:
    made = item(kind, 6789, T0, shelf=shelf, from_shelf=from_shelf)
    where = shelf or from_shelf
    assert where is not None
    role = OPTS.read_point(STORE, where)[1]
    happened = classify(made, role, sold)
    if happened is None:
        return None
    return object_event(
        made, happened, store=STORE, options=OPTS, event_id="urn:uuid:1", record_time=T0
    )


def terms(made: dict[str, Any]) -> tuple[Any, ...]:
    return (
        made["bizStep"],
        made.get("disposition"),
        made.get("readPoint", {}).get("id"),
        made.get("bizLocation", {}).get("id"),
    )


def test_an_item_leaving_a_shelf_is_counted_off_the_shelf_and_stays_in_the_store() -> None:
    left = event("departed", None, "shelf-1")
    assert terms(left) == ("cycle_counting", None, SHELF_SGLN, STORE_SGLN)
    moved = event("moved", "shelf-2", "shelf-1")
    assert terms(moved) == ("stocking", "sellable_accessible", SHELF2_SGLN, STORE_SGLN)
    assert moved["storegate:fromReadPoint"] == SHELF_SGLN
    arrived = event("arrived", "shelf-1", None)
    assert terms(arrived) == ("stocking", "sellable_accessible", SHELF_SGLN, STORE_SGLN)


def test_an_item_read_at_the_till_is_sold_there() -> None:
    sold = event("arrived", "till-1", None)
    assert terms(sold) == ("retail_selling", "retail_sold", TILL_SGLN, STORE_SGLN)


def test_an_item_leaving_the_store_unsold_departs_with_no_location_left() -> None:
    unsold = event("arrived", "door-1", None, sold=False)
    assert terms(unsold) == ("departing", "unknown", DOOR_SGLN, None)
    sold = event("arrived", "door-1", None, sold=True)
    assert terms(sold) == ("entering_exiting", "retail_sold", DOOR_SGLN, None)
    strict = parse_options({**OPTIONS, "unsold_exit_disposition": "stolen"})
    made = item("arrived", 1, T0, shelf="door-1")
    theft = object_event(
        made,
        Happened.EXIT_UNSOLD,
        store=STORE,
        options=strict,
        event_id="urn:uuid:2",
        record_time=T0,
    )
    assert theft["disposition"] == "stolen"


def test_leaving_a_till_or_door_read_zone_says_nothing_new() -> None:
    for role in (ReadPointRole.POS, ReadPointRole.EXIT):
        for kind in ("departed", "left_store"):
            assert classify(item(kind, 1, T0, from_shelf="x"), role, False) is None
    unseen = event("left_store", None, "shelf-1")
    assert terms(unseen) == ("cycle_counting", None, SHELF_SGLN, None)


def test_gln_check_digit() -> None:
    assert check_gln("0614141000012") == "0614141000012"
    with pytest.raises(ValueError, match="check digit 3, expected 2"):
        check_gln("0614141000013")
    with pytest.raises(ValueError, match="not 13 digits"):
        check_gln("061414100001")
    bad = copy.deepcopy(OPTIONS)
    bad["stores"][STORE]["read_points"]["till-1"]["gln"] = "0614141000028"
    with pytest.raises(
        ValueError, match=r"stores\.store-042\.read_points\.till-1\.gln.*expected 9"
    ):
        parse_options(bad)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"company_prefix_digits": None}, "needs company_prefix_digits"),
        ({"company_prefix_digits": 13}, "less than or equal to 12"),
        ({"gln": None}, "has an extension but the store no gln"),
    ],
)
def test_bad_locations_are_refused_with_a_reason(change: dict[str, Any], reason: str) -> None:
    bad = copy.deepcopy(OPTIONS)
    bad["stores"][STORE].update(change)
    if change.get("gln", "") is None:
        bad["stores"][STORE].pop("company_prefix_digits")
    with pytest.raises(ValueError, match=reason):
        parse_options(bad)


def test_unconfigured_stores_and_shelves_keep_our_own_urns() -> None:
    assert OPTS.store_uri("store-9") == "urn:storegate:store-9"
    assert OPTS.read_point(STORE, "shelf-77") == (
        "urn:storegate:store-042:shelf:shelf-77",
        ReadPointRole.SHELF,
    )


@pytest.mark.parametrize(
    ("epc", "uri"),
    [
        ("3074257BF7194E4000001A85", "urn:epc:id:sgtin:0614141.812345.6789"),
        ("3114257BF4B3C4B0D5800000", "urn:epc:id:sscc:0614141.3016011989"),
        ("3374257BF40C0E400000162E", "urn:epc:id:grai:0614141.12345.5678"),
        ("3414257BF400000000000001", "urn:epc:id:giai:0614141.1"),
        ("E2801160600002084A6B1C35", "urn:epc:raw:96.xE2801160600002084A6B1C35"),
        ("3674257BF400000000000001", "urn:epc:raw:96.x3674257BF400000000000001"),
        ("ABCD", "urn:epc:raw:16.xABCD"),
    ],
)
def test_epcs_are_named_by_pure_identity_where_the_scheme_has_one(epc: str, uri: str) -> None:
    assert epc_uri(epc) == uri


def _document() -> dict[str, Any]:
    events = [
        event("arrived", "shelf-1", None),
        event("departed", None, "shelf-1"),
        event("arrived", "till-1", None),
        event("arrived", "door-1", None, sold=True),
        event("arrived", "door-1", None, sold=False),
    ]
    return query_document(events, T0 + timedelta(hours=1))


def test_query_documents_validate_against_the_gs1_schema_with_formats_checked() -> None:
    validate(_document())


def test_formats_are_really_checked_even_gs1s_own_example_trips_one() -> None:
    """GS1's example names its document by a JSON-LD blank node (`_:document1`), which is
    no RFC 3986 URI: with format checks on, the schema refuses exactly that, and nothing
    else in the example."""
    example = json.loads((EPCIS / "Example_9.6.1-ObjectEvent.jsonld").read_text())
    document_schema = {"$ref": EPCIS_DOCUMENT + "#/definitions/epcisDocument"}
    errors = list(validator().evolve(schema=document_schema).iter_errors(example))
    assert [(list(e.absolute_path), e.message) for e in errors] == [
        (["id"], "'_:document1' is not a 'uri'")
    ]
    del example["id"]
    validate(example)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("eventTime", "2026-13-45T12:00:00.000Z"),  # format: date-time
        ("recordTime", "yesterday"),
        ("epcList", ["not a uri"]),  # format: uri
        ("readPoint", {"id": "shelf 1"}),
        ("action", "LOOK"),  # enum
        ("bizStep", "shelf_reading"),  # neither CBV nor a URI
    ],
)
def test_the_schema_with_formats_catches_a_broken_event(field: str, value: Any) -> None:
    document = _document()
    document["epcisBody"]["queryResults"]["resultsBody"]["eventList"][0][field] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(document)


def test_serial_numbers_in_fixtures_are_what_they_say() -> None:
    assert epc_uri(item("arrived", 42, T0, shelf="shelf-1").epc) == sgtin_uri(42)
