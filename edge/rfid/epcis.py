"""Item events as GS1 EPCIS 2.0 ObjectEvents (JSON-LD), for traceability consumers.

Every shelf observation is an `OBSERVE` with bizStep `cycle_counting` and disposition
`sellable_accessible`; the readPoint is the shelf and the bizLocation the store. Shelves and
stores are named by URNs of our own unless a GLN-based id is configured. What kind of item
event it was (arrived / moved / departed / left_store) travels in the `storegate:itemEvent`
extension field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from edge.rfid.epc import epc_uri
from protocols.messages import ItemEvent

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/epcis-context.jsonld"
STOREGATE_NS = "https://storegate.dev/epcis/"


def default_shelf_uri(store: str, shelf: str) -> str:
    return f"urn:storegate:{store}:shelf:{shelf}"


def default_store_uri(store: str) -> str:
    return f"urn:storegate:{store}"


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def object_event(
    event: ItemEvent,
    store: str,
    *,
    shelf_uri: Callable[[str, str], str] = default_shelf_uri,
    store_uri: Callable[[str], str] = default_store_uri,
) -> dict[str, Any]:
    shelf = event.shelf or event.from_shelf
    out: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": _time(event.at),
        "eventTimeZoneOffset": "+00:00",
        "epcList": [epc_uri(event.epc)],
        "action": "OBSERVE",
        "bizStep": "cycle_counting",
        "disposition": "sellable_accessible",
        "bizLocation": {"id": store_uri(store)},
        "storegate:itemEvent": event.kind.value,
    }
    if shelf is not None:
        out["readPoint"] = {"id": shelf_uri(store, shelf)}
    return out


def document(
    events: Iterable[ItemEvent], store: str, created: datetime | None = None
) -> dict[str, Any]:
    """An EPCISDocument carrying one ObjectEvent per item event."""
    return {
        "@context": [EPCIS_CONTEXT, {"storegate": STOREGATE_NS}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": _time(created or datetime.now(UTC)),
        "epcisBody": {"eventList": [object_event(e, store) for e in events]},
    }
