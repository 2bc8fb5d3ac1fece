"""Item events → EPCIS 2.0 ObjectEvents whose CBV terms say what happened.

What an item event means depends on where it was read (the read point's role in
`domains.epcis`) and, at the exit, on whether the item was sold. Terms are GS1 Core
Business Vocabulary 2.0, its Business Step and Disposition vocabularies (each term's
definition at https://ref.gs1.org/cbv/BizStep-{term} and https://ref.gs1.org/cbv/Disp-{term},
the same text as GS1's CBV ontology, `Ontology/CBV.ttl` in github.com/gs1/EPCIS); the quoted
definitions are the CBV's own.

| what happened | bizStep | disposition | readPoint | bizLocation |
| --- | --- | --- | --- | --- |
| arrived on / moved to a shelf | `stocking` | `sellable_accessible` | the shelf | the store |
| left a shelf, still in store | `cycle_counting` | (unchanged) | the shelf | the store |
| unseen in the whole store for `left_store_s` | `cycle_counting` | (unchanged) | last shelf | — |
| read at a point of sale | `retail_selling` | `retail_sold` | the till | the store |
| read at the exit, sold before | `entering_exiting` | `retail_sold` | the door | — |
| read at the exit, never sold | `departing` | `unknown` (or `stolen`) | the door | — |

- `stocking`: "to make an object available to the customer" (CBV example: cans placed on
  a shelf on the sales floor), with `sellable_accessible`: "can be sold as is and customer
  can access product for purchase". An item a shopper moves to another shelf is available
  there all the same.
- `cycle_counting`: "counting objects within a location ... for replenishment and
  allocation" (CBV example: all objects of a shelf on the sales floor). The shelf reader
  counts continuously and has stopped counting this item; the CBV has no step for a
  shopper taking an item in hand, so the event says what was observed. A count changes
  nothing about the item's business condition, so these events carry no disposition
  (EPCIS: an absent disposition leaves the previous one standing): an item sold at the
  till whose shelf reader reports it gone a few seconds later stays `retail_sold`.
- `retail_selling` / `retail_sold`: "at a point-of-sale for the purpose of transferring
  ownership to a customer" / "product has been purchased by a customer".
- `entering_exiting`: "at the Entrance/Exit door of a facility where customers are either
  leaving with purchased product or entering with product to be returned": only for sold
  items. An unsold item leaving is `departing`: "an object leaves a location on its way to
  a destination". Its disposition is `unknown` ("condition is not known") by default: one
  door read does not establish a theft (`stolen`: "taken without permission or right";
  the CBV's example is a concluded investigation), so `stolen` is a store's choice.
- After an exit (and after an item goes unseen in the whole store) there is no
  bizLocation: EPCIS reads an absent bizLocation as "no longer at a known business
  location", which is the truth; a store's exits are found by their readPoint.

An item leaving a till's or a door's read zone says nothing new (the read there was the
event), so departures from those read points make no EPCIS event.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cloud.epcis.config import EpcisOptions, ReadPointRole
from cloud.epcis.identity import epc_uri
from protocols.messages import ItemEvent, ItemEventKind

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/epcis-context.jsonld"
STOREGATE_NS = "https://storegate.dev/epcis/"
CONTEXT: list[Any] = [EPCIS_CONTEXT, {"storegate": STOREGATE_NS}]


class Happened(StrEnum):
    ON_SHELF = "on_shelf"
    LEFT_SHELF = "left_shelf"
    UNSEEN = "unseen"
    SOLD = "sold"
    EXIT_SOLD = "exit_sold"
    EXIT_UNSOLD = "exit_unsold"


@functools.lru_cache(maxsize=1024)
def epcis_time(value: datetime) -> str:
    # cached: the items of a read cycle share their moment, and a message's events their
    # record time
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_millis(value: datetime) -> datetime:
    """EPCIS times are written to the millisecond; stored ones are cut the same way so a
    query bound compares with the time the client sees."""
    utc = value.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def classify(event: ItemEvent, role: ReadPointRole, sold_before: bool) -> Happened | None:
    """What the item event means at a read point of this role; None: nothing to record."""
    present = event.kind in (ItemEventKind.ARRIVED, ItemEventKind.MOVED)
    if role is ReadPointRole.POS:
        return Happened.SOLD if present else None
    if role is ReadPointRole.EXIT:
        if not present:
            return None
        return Happened.EXIT_SOLD if sold_before else Happened.EXIT_UNSOLD
    if present:
        return Happened.ON_SHELF
    if event.kind is ItemEventKind.DEPARTED:
        return Happened.LEFT_SHELF
    return Happened.UNSEEN


def read_shelf(event: ItemEvent) -> str | None:
    """The shelf whose reader made the event: where it is now, or where it was last."""
    return event.shelf or event.from_shelf


def object_event(
    event: ItemEvent,
    happened: Happened,
    *,
    store: str,
    options: EpcisOptions,
    event_id: str,
    record_time: datetime,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The ObjectEvent (EPCIS 2.0 JSON-LD) for one item event; `at`: its time if not the
    event's own (cut to the millisecond, as stored)."""
    disposition: str | None
    match happened:
        case Happened.ON_SHELF:
            biz_step, disposition = "stocking", "sellable_accessible"
        case Happened.LEFT_SHELF | Happened.UNSEEN:
            biz_step, disposition = "cycle_counting", None
        case Happened.SOLD:
            biz_step, disposition = "retail_selling", "retail_sold"
        case Happened.EXIT_SOLD:
            biz_step, disposition = "entering_exiting", "retail_sold"
        case Happened.EXIT_UNSOLD:
            biz_step, disposition = "departing", options.unsold_exit_disposition
    out: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventID": event_id,
        "eventTime": epcis_time(event.at if at is None else at),
        "eventTimeZoneOffset": "+00:00",
        "recordTime": epcis_time(record_time),
        "epcList": [epc_uri(event.epc)],
        "action": "OBSERVE",
        "bizStep": biz_step,
    }
    if disposition is not None:
        out["disposition"] = disposition
    shelf = read_shelf(event)
    if shelf is not None:
        out["readPoint"] = {"id": options.read_point(store, shelf)[0]}
    if happened in (Happened.ON_SHELF, Happened.LEFT_SHELF, Happened.SOLD):
        out["bizLocation"] = {"id": options.store_uri(store)}
    out["storegate:itemEvent"] = event.kind.value
    if event.from_shelf is not None and event.shelf is not None:
        out["storegate:fromReadPoint"] = options.read_point(store, event.from_shelf)[0]
    return out


def query_document(events: list[dict[str, Any]], created: datetime) -> dict[str, Any]:
    """An EPCISQueryDocument carrying `events` (the REST binding's answer to a query)."""
    return {
        "@context": CONTEXT,
        "type": "EPCISQueryDocument",
        "schemaVersion": "2.0",
        "creationDate": epcis_time(created),
        "epcisBody": {
            "queryResults": {
                "queryName": "SimpleEventQuery",
                "resultsBody": {"eventList": events},
            }
        },
    }
