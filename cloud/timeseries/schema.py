"""What history we keep: the mapping from MQTT messages to time-series points.

Two rules shape every point (docs/timeseries.md has the full table and the cardinality):

- **Tags are bounded.** Tags are store, node, shelf, GTIN, device, zone, kind... values
  that come from a store's fixed layout or a small enum. Per-item or per-person values
  (EPCs, beacon ids, order refs, correlation ids) are fields, never tags.
- **Points are idempotent.** The ingestor spools a message's points before it commits and
  acks, so a crash re-spools them on redelivery. Every point's series and timestamp are a
  pure function of the message, so a rewrite overwrites instead of adding a point.
  Events that would share a series and a microsecond inside one message are spread over the
  nanoseconds below it (Python timestamps stop at microseconds): event `j` of such a group
  gets `(seq + j) mod 1000` ns, so two events never overwrite each other within a message,
  and events of different messages in the same microsecond start at different offsets.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import singledispatch
from math import isfinite
from typing import Any

from cloud.timeseries.lineprotocol import (
    FieldValue,
    Point,
    encode,
    field_value,
    float_field,
    series_text,
    string_field,
)
from protocols.messages import (
    Birth,
    BlePresence,
    Command,
    CommandAck,
    CompartmentStatus,
    Death,
    DriverHealth,
    Health,
    LockerEvents,
    LockerSnapshot,
    Message,
    NodeState,
    Offer,
    RfidEvents,
    RfidSnapshot,
    ShelfCount,
    Status,
)

# Measurement names, so readers and docs refer to one spelling.
SHELF_COUNT = "shelf_count"
ITEM_EVENT = "item_event"
NODE_STATUS = "node_status"
NODE_HEALTH = "node_health"
DRIVER_HEALTH = "driver_health"
LOCKER_EVENT = "locker_event"
LOCKER_COMPARTMENT = "locker_compartment"
PRESENCE_EVENT = "presence_event"
ZONE_OCCUPANCY = "zone_occupancy"
COMMAND = "command"
COMMAND_ACK = "command_ack"
OFFER = "offer"
STOCK_LEVEL = "stock_level"  # the cloud's committed inventory (cloud/timeseries/stock.py)

MEASUREMENTS = (
    SHELF_COUNT,
    ITEM_EVENT,
    NODE_STATUS,
    NODE_HEALTH,
    DRIVER_HEALTH,
    LOCKER_EVENT,
    LOCKER_COMPARTMENT,
    PRESENCE_EVENT,
    ZONE_OCCUPANCY,
    COMMAND,
    COMMAND_ACK,
    OFFER,
    STOCK_LEVEL,
)

_NS_PER_US = 1_000
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_.-]")


@functools.lru_cache(maxsize=4_096)  # drivers repeat the same metric names every heartbeat
def _field_key(prefix: str, name: str) -> str:
    """A field key from a free-form name the edge chose (drop reason, driver metric)."""
    return prefix + _UNSAFE_KEY.sub("_", name)[:64]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_ONE_US = timedelta(microseconds=1)


def time_ns(moment: datetime) -> int:
    """Nanoseconds since the epoch, exact (integer timedelta arithmetic, no float rounding)."""
    epoch = _EPOCH if moment.tzinfo is not None else _EPOCH_NAIVE
    return (moment - epoch) // _ONE_US * _NS_PER_US


class _Stamps:
    """Distinct nanosecond timestamps for events of one message that share a series.

    `series` is anything that names the series: the reference path passes measurement and
    sorted tags, the fast path the series text. Either way the same rule spreads them."""

    __slots__ = ("_base", "_seen")

    def __init__(self, seq: int) -> None:
        self._base = seq % 1000
        self._seen: dict[tuple[Hashable, int], int] = {}

    def at(self, series: Hashable, at_ns: int) -> int:
        key = (series, at_ns)
        j = self._seen.get(key, 0)
        self._seen[key] = j + 1
        # j < 1000 stays inside the microsecond; beyond, it spills into the next ones.
        return at_ns + (self._base + j) % 1000 + (j // 1000) * 1000


class _EventStamper:
    """Points for events of one message, stamped by `_Stamps`."""

    def __init__(self, seq: int) -> None:
        self._stamps = _Stamps(seq)

    def point(
        self,
        measurement: str,
        tags: dict[str, str],
        fields: dict[str, FieldValue],
        at: datetime,
    ) -> Point:
        series = (measurement, tuple(sorted(tags.items())))
        return Point(measurement, tags, fields, self._stamps.at(series, time_ns(at)))


def _without_none(fields: Mapping[str, FieldValue | None]) -> dict[str, FieldValue]:
    return {key: value for key, value in fields.items() if value is not None}


def _shelf_counts(message: Message, shelves: Iterable[ShelfCount]) -> list[Point]:
    at = time_ns(message.event_time)
    return [
        Point(
            SHELF_COUNT,
            {"store": message.store, "shelf": s.shelf, "gtin": s.gtin},
            {"count": s.count},
            at,
        )
        for s in shelves
    ]


def _compartments(
    message: Message, bank: str, statuses: Iterable[CompartmentStatus]
) -> list[Point]:
    at = time_ns(message.event_time)
    return [
        Point(
            LOCKER_COMPARTMENT,
            {"store": message.store, "bank": bank, "compartment": c.compartment},
            _without_none(
                {
                    "state": c.state.value,
                    "door_open": c.door_open,
                    "occupied": c.occupied,
                    "flags": ",".join(f.value for f in c.flags),
                    "order_ref": c.order_ref,
                }
            ),
            at,
        )
        for c in statuses
    ]


@singledispatch
def points_for(message: Message) -> list[Point]:
    """The points one message contributes to history (empty for types without history)."""
    return []


def _node_tags(message: Message) -> dict[str, str]:
    return {"store": message.store, "node": message.node}


@points_for.register
def _status(message: Status) -> list[Point]:
    fields = {
        "state": message.state.value,
        "online": message.state is NodeState.ONLINE,
        "bd_seq": message.bd_seq,
        "version": message.version,
        "reason": message.reason,
    }
    return [
        Point(NODE_STATUS, _node_tags(message), _without_none(fields), time_ns(message.event_time))
    ]


@points_for.register
def _death(message: Death) -> list[Point]:
    fields: dict[str, FieldValue] = {
        "state": NodeState.OFFLINE.value,
        "online": False,
        "bd_seq": message.bd_seq,
        "reason": message.reason,
    }
    return [Point(NODE_STATUS, _node_tags(message), fields, time_ns(message.event_time))]


@points_for.register
def _birth(message: Birth, with_shelves: bool = True) -> list[Point]:
    at = time_ns(message.event_time)
    points = [
        Point(
            NODE_STATUS,
            _node_tags(message),
            {
                "state": NodeState.ONLINE.value,
                "online": True,
                "bd_seq": message.bd_seq,
                "version": message.version,
                "devices": len(message.devices),
            },
            at,
        )
    ]
    if with_shelves:
        points += _shelf_counts(message, message.shelves)
    for bank, statuses in sorted(message.compartments.items()):
        points += _compartments(message, bank, statuses)
    points += [
        Point(
            ZONE_OCCUPANCY,
            {"store": message.store, "zone": z.zone},
            {"beacons": len(z.beacons)},
            at,
        )
        for z in message.zones
    ]
    return points


def _node_health_fields(message: Health) -> dict[str, FieldValue | None]:
    outbox = message.outbox
    fields: dict[str, FieldValue | None] = {
        "uptime_s": message.uptime_s,
        "cpu_percent": message.cpu_percent,
        "rss_bytes": message.rss_bytes,
        "disk_free_bytes": message.disk_free_bytes,
        "bd_seq": message.bd_seq,
        "version": message.version,
        "outbox_depth": outbox.depth,
        "outbox_bytes": outbox.bytes,
        "outbox_capacity_bytes": outbox.capacity_bytes,
        "outbox_oldest_age_s": outbox.oldest_age_s,
        "outbox_dropped": sum(outbox.dropped.values()),
    }
    # Drop reasons are a small set chosen by the edge code; each is a field, not a tag.
    # Names that clean to the same key keep one field (the last value), as a dict does.
    fields.update({_field_key("dropped_", reason): n for reason, n in outbox.dropped.items()})
    return fields


def _driver_health_fields(driver: DriverHealth) -> dict[str, FieldValue | None]:
    fields: dict[str, FieldValue | None] = {
        "state": driver.state.value,
        "events_per_s": driver.events_per_s,
        "restarts": driver.restarts,
        "last_error": driver.last_error,
    }
    fields.update({_field_key("m_", name): value for name, value in driver.metrics.items()})
    return fields


@points_for.register
def _health(message: Health) -> list[Point]:
    at = time_ns(message.event_time)
    fields = _without_none(_node_health_fields(message))
    points = [Point(NODE_HEALTH, _node_tags(message), fields, at)]
    for driver in message.drivers:
        tags = {**_node_tags(message), "device": driver.device, "kind": driver.kind.value}
        points.append(Point(DRIVER_HEALTH, tags, _without_none(_driver_health_fields(driver)), at))
    return points


@points_for.register
def _rfid_events(message: RfidEvents) -> list[Point]:
    stamper = _EventStamper(message.seq)
    points = []
    for item in message.items:
        # The EPC is per item (millions): a field. So is the GTIN: per-GTIN movement is
        # already in shelf_count's `delta`, and a GTIN tag here would multiply the series.
        tags = {"store": message.store, "kind": item.kind.value}
        if item.shelf is not None:
            tags["shelf"] = item.shelf
        fields = _without_none(
            {
                "epc": item.epc,
                "gtin": item.gtin,
                "from_shelf": item.from_shelf,
                "reader": message.reader,
                "rssi": item.rssi,
            }
        )
        points.append(stamper.point(ITEM_EVENT, tags, fields, item.at))
    at = time_ns(message.event_time)
    points += [
        Point(
            SHELF_COUNT,
            {"store": message.store, "shelf": c.shelf, "gtin": c.gtin},
            {"count": c.count, "delta": c.delta},
            at,
        )
        for c in message.counts
    ]
    return points


@points_for.register
def _rfid_snapshot(message: RfidSnapshot) -> list[Point]:
    return _shelf_counts(message, message.shelves)


@points_for.register
def _locker_events(message: LockerEvents) -> list[Point]:
    stamper = _EventStamper(message.seq)
    points = []
    for event in message.events:
        tags = {"store": message.store, "bank": message.bank, "compartment": event.compartment}
        fields = _without_none(
            {
                "state": event.state.value,
                "previous": event.previous.value if event.previous else None,
                "cause": event.cause,
                "door_open": event.door_open,
                "occupied": event.occupied,
                "flags": ",".join(f.value for f in event.flags),
                "order_ref": event.order_ref,
            }
        )
        points.append(stamper.point(LOCKER_EVENT, tags, fields, event.at))
    return points


@points_for.register
def _locker_snapshot(message: LockerSnapshot) -> list[Point]:
    return _compartments(message, message.bank, message.compartments)


@points_for.register
def _ble_presence(message: BlePresence) -> list[Point]:
    stamper = _EventStamper(message.seq)
    points = []
    for event in message.events:
        # History keeps no beacon id at all: an `app:` token belongs to a person, and most
        # tokens seen are of shoppers who never opted in (the offers domain keeps the
        # consented ones, with their own retention). Only the id's class is kept
        # (`app`, `ibeacon`, ...) so zone traffic can still be counted by kind.
        tags = {"store": message.store, "zone": event.zone, "kind": event.kind.value}
        fields = _without_none(
            {
                "beacon_class": event.beacon.split(":", 1)[0],
                "scanner": message.scanner,
                "rssi": event.rssi,
                "dwell_s": event.dwell_s,
            }
        )
        points.append(stamper.point(PRESENCE_EVENT, tags, fields, event.at))
    return points


@points_for.register
def _command(message: Command) -> list[Point]:
    fields = _without_none({"correlation_id": message.correlation_id, "target": message.target})
    tags = {**_node_tags(message), "command": message.name}
    return [Point(COMMAND, tags, fields, time_ns(message.event_time))]


@points_for.register
def _command_ack(message: CommandAck) -> list[Point]:
    tags = {**_node_tags(message), "command": message.command, "status": message.status.value}
    fields = _without_none({"correlation_id": message.correlation_id, "reason": message.reason})
    return [Point(COMMAND_ACK, tags, fields, time_ns(message.event_time))]


@points_for.register
def _offer(message: Offer) -> list[Point]:
    # The shopper token identifies a person: not stored. Campaign and zone are bounded.
    tags = {
        "store": message.store,
        "zone": message.zone,
        "campaign": message.campaign,
        "trigger": message.trigger.value,
    }
    fields: dict[str, FieldValue] = {"offer_id": message.offer_id, "gtins": len(message.gtins)}
    return [Point(OFFER, tags, fields, time_ns(message.event_time))]


# --------------------------------------------------------------------------- fast lines
#
# `points_for` above is the definition of the schema. The types that arrive by the thousand
# per second (RFID, BLE and locker events, shelf snapshots) also get their lines built
# directly below: cached series text, no Point objects, no tag sorting. That cut the cost of
# history on the ingest hot path several times over. tests/timeseries/test_fast_lines.py checks,
# on generated messages, that both produce exactly the same lines.


def _optional_float(key: str, value: float | None) -> str:
    if value is None:
        return ""
    encoded = float_field(value)
    return "" if encoded is None else f",{key}={encoded}"


def _optional_string(key: str, value: str | None) -> str:
    return "" if value is None else f",{key}={string_field(value)}"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _shelf_count_lines(store: str, shelves: Iterable[ShelfCount], at: int) -> list[str]:
    # Shelf and GTIN match the contract's patterns (an identifier, 14 digits): nothing to
    # escape and never empty, so only the store's tag is looked up. A series_text per
    # shelf and GTIN missed its cache at 1,000 stores (a few hundred series each): a birth
    # storm escaped every tag of every line again.
    head, tail = _shelf_count_series(store)
    return [f"{head}{s.gtin},shelf={s.shelf}{tail} count={s.count}i {at}" for s in shelves]


@functools.lru_cache(maxsize=16_384)
def _shelf_count_series(store: str) -> tuple[str, str]:
    """(`shelf_count,gtin=`, `,store=<store>`): a shelf count's series around its GTIN
    and shelf, escaped as `series_text` escapes them (tags in sorted order)."""
    measurement = series_text(SHELF_COUNT)
    return measurement + ",gtin=", series_text(SHELF_COUNT, "store", store)[len(measurement) :]


def _birth_lines(message: Birth) -> list[str]:
    # A line per shelf and GTIN is most of a birth (hundreds of them): built as text; the
    # few other points (node status, compartments, zones) the reference way, in its order.
    first, *rest = [encode(point) for point in _birth(message, with_shelves=False)]
    shelves = _shelf_count_lines(message.store, message.shelves, time_ns(message.event_time))
    return [first, *shelves, *rest]


def _rfid_events_lines(message: RfidEvents) -> list[str]:
    store = message.store
    lines = []
    if message.items:
        stamps = _Stamps(message.seq)
        reader = f",reader={string_field(message.reader)}"
        series_of: dict[tuple[str, str | None], str] = {}
        last_at: datetime | None = None
        at_ns = 0
        for item in message.items:
            # kind is a StrEnum (a str of its value). EPC, GTIN and shelf match the
            # contract's patterns (hex, digits, identifiers), which need no escaping.
            key = (item.kind, item.shelf)
            series = series_of.get(key)
            if series is None:
                series = series_of[key] = series_text(
                    ITEM_EVENT, "kind", item.kind, "shelf", item.shelf or "", "store", store
                )
            if item.at != last_at:  # a read cycle's items share their moment
                last_at, at_ns = item.at, time_ns(item.at)
            fields = f'epc="{item.epc}"'
            if item.gtin is not None:
                fields += f',gtin="{item.gtin}"'
            if item.from_shelf is not None:
                fields += f',from_shelf="{item.from_shelf}"'
            fields += f"{reader}{_optional_float('rssi', item.rssi)}"
            lines.append(f"{series} {fields} {stamps.at(series, at_ns)}")
    at = time_ns(message.event_time)
    head, tail = _shelf_count_series(store)
    lines += [
        f"{head}{c.gtin},shelf={c.shelf}{tail} count={c.count}i,delta={c.delta}i {at}"
        for c in message.counts
    ]
    return lines


def _fields_text(fields: Mapping[str, FieldValue | None]) -> str:
    """`k=v,...` for keys that need no escaping; None and non-finite values are left out."""
    parts = []
    for key, value in fields.items():
        if value is not None and (encoded := field_value(value)) is not None:
            parts.append(f"{key}={encoded}")
    return ",".join(parts)


def _health_lines(message: Health) -> list[str]:
    # The same fields as `_health`, without a Point, tag sorting and a key lookup for each
    # of the few dozen driver metrics a heartbeat carries.
    at = time_ns(message.event_time)
    store, node = message.store, message.node
    node_fields = _node_fields_text(message)
    lines = [f"{series_text(NODE_HEALTH, 'node', node, 'store', store)} {node_fields} {at}"]
    for driver in message.drivers:
        series = series_text(
            DRIVER_HEALTH,
            "device",
            driver.device,
            "kind",
            driver.kind.value,
            "node",
            node,
            "store",
            store,
        )
        lines.append(f"{series} {_driver_fields_text(driver)} {at}")
    return lines


def _node_fields_text(message: Health) -> str:
    # `_fields_text(_node_health_fields(message))` written out: the types are the
    # contract's (floats finite, counts ints, version a string), so no per-field dispatch.
    # With drop reasons, whose keys need cleaning, the reference way.
    outbox = message.outbox
    if outbox.dropped:
        return _fields_text(_node_health_fields(message))
    return (
        f"uptime_s={message.uptime_s!r},cpu_percent={message.cpu_percent!r}"
        f",rss_bytes={message.rss_bytes}i,disk_free_bytes={message.disk_free_bytes}i"
        f",bd_seq={message.bd_seq}i,version={string_field(message.version)}"
        f",outbox_depth={outbox.depth}i,outbox_bytes={outbox.bytes}i"
        f",outbox_capacity_bytes={outbox.capacity_bytes}i"
        f"{_optional_float('outbox_oldest_age_s', outbox.oldest_age_s)},outbox_dropped=0i"
    )


def _driver_fields_text(driver: DriverHealth) -> str:
    # `_fields_text(_driver_health_fields(driver))` without a type dispatch and a key lookup
    # per metric: metrics are floats by the contract, a heartbeat carries a few dozen of
    # them, and a driver sends the same names every time.
    text = f"state={string_field(driver.state.value)}"
    text += f"{_optional_float('events_per_s', driver.events_per_s)},restarts={driver.restarts}i"
    if driver.last_error is not None:
        text += f",last_error={string_field(driver.last_error)}"
    metrics = driver.metrics
    if not metrics:
        return text
    keys, unique = _metric_keys(tuple(metrics))
    values = metrics.values()
    if unique and all(map(isfinite, values)):
        return text + "," + ",".join(map(operator.add, keys, map(repr, values)))
    # names that clean to the same key keep the last value, as in the reference
    fields = dict(zip(keys, values, strict=True))
    return ",".join(
        [text, *(key + repr(value) for key, value in fields.items() if isfinite(value))]
    )


@functools.lru_cache(maxsize=1_024)
def _metric_keys(names: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    """(`m_<name>=` per metric, whether no two names clean to the same key)."""
    keys = tuple(_field_key("m_", name) + "=" for name in names)
    return keys, len(set(keys)) == len(keys)


def _rfid_snapshot_lines(message: RfidSnapshot) -> list[str]:
    return _shelf_count_lines(message.store, message.shelves, time_ns(message.event_time))


def _ble_presence_lines(message: BlePresence) -> list[str]:
    store = message.store
    stamps = _Stamps(message.seq)
    scanner = f",scanner={string_field(message.scanner)}"
    lines = []
    for event in message.events:
        series = series_text(
            PRESENCE_EVENT, "kind", event.kind.value, "store", store, "zone", event.zone
        )
        fields = (
            f"beacon_class={string_field(event.beacon.split(':', 1)[0])}{scanner}"
            f"{_optional_float('rssi', event.rssi)}{_optional_float('dwell_s', event.dwell_s)}"
        )
        lines.append(f"{series} {fields} {stamps.at(series, time_ns(event.at))}")
    return lines


def _locker_events_lines(message: LockerEvents) -> list[str]:
    store, bank = message.store, message.bank
    stamps = _Stamps(message.seq)
    lines = []
    for event in message.events:
        series = series_text(
            LOCKER_EVENT, "bank", bank, "compartment", event.compartment, "store", store
        )
        previous = event.previous.value if event.previous is not None else None
        fields = (
            f"state={string_field(event.state.value)}"
            f"{_optional_string('previous', previous)}"
            f",cause={string_field(event.cause)}"
            f",door_open={_bool(event.door_open)},occupied={_bool(event.occupied)}"
            f",flags={string_field(','.join(f.value for f in event.flags))}"
            f"{_optional_string('order_ref', event.order_ref)}"
        )
        lines.append(f"{series} {fields} {stamps.at(series, time_ns(event.at))}")
    return lines


_FAST_LINES: dict[type[Message], Callable[[Any], list[str]]] = {
    Birth: _birth_lines,
    Health: _health_lines,
    RfidEvents: _rfid_events_lines,
    RfidSnapshot: _rfid_snapshot_lines,
    BlePresence: _ble_presence_lines,
    LockerEvents: _locker_events_lines,
}


def message_lines(message: Message) -> list[str]:
    """The line protocol of one message's points (what `points_for` defines)."""
    fast = _FAST_LINES.get(type(message))
    if fast is not None:
        return fast(message)
    return [encode(point) for point in points_for(message)]


def lines_for(messages: Iterable[Message]) -> list[str]:
    """Line protocol for a batch of messages, in message order."""
    return [line for message in messages for line in message_lines(message)]
