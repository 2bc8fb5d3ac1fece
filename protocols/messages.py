"""Message models: one envelope, one model per message type.

Every message carries the envelope fields (schema version `v`, `type`, `msg_id`, `store`,
`node`, `stream`, `seq`, `event_time`, `sent_time`). `stream` is derived from the topic
the message belongs on (see `protocols.topics`) and is filled in when omitted. Events are
batched: one message carries a list of events, to keep the message rate low.

Unknown fields are ignored so that a minor, additive change of the contract does not break
older consumers; anything that changes meaning bumps `SCHEMA_VERSION` and the topic version.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)

from protocols.ids import BeaconId, Epc, Gtin, Identifier, MessageId, NodeId, StoreId
from protocols.topics import Channel, NodeTopic, ShopperTopic

SCHEMA_VERSION = 1


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_message_id() -> str:
    return uuid.uuid4().hex


# Integer bounds: every integer a message carries must fit the column or field that stores
# it. Without them a schema-valid number (a seq of 2**63) passed the codec and failed in the
# state store instead, where it looked like a storage outage and blocked every store's
# ingestion behind it. Refused at decode, such a message is dead-lettered as `invalid`.
INT64_MAX = 2**63 - 1
"""Largest value of a 64-bit database column (BIGINT) and of a time-series integer field."""
INT32_MAX = 2**31 - 1
"""Largest value of a 32-bit database column (INTEGER): shelf counts are stored in one."""

Seq = Annotated[int, Field(ge=0, le=INT64_MAX)]
"""A sequence number or connect counter (`seq`, `bd_seq`): stored as BIGINT."""
Amount = Annotated[int, Field(ge=0, le=INT64_MAX)]
"""A non-negative quantity (bytes, messages, restarts) kept in health and history."""
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
"""Items on a shelf: stored as INTEGER, so at most 2**31 - 1."""
CountChange = Annotated[int, Field(ge=-INT32_MAX, le=INT32_MAX)]
"""The difference of two counts."""
PartNumber = Annotated[int, Field(ge=1, le=INT64_MAX)]
"""Which part of a split snapshot, and of how many."""
SNAPSHOT_ID_DESCRIPTION = (
    "the same in every part of one snapshot, so parts of different snapshots never mix;"
    " set whenever parts > 1"
)

# The history store keeps nanoseconds since 1970 in 64 bits: 1677-09-21 to 2262-04-11.
# A whole second inside each end leaves room for the sub-microsecond offsets the history
# adds to events that share a timestamp.
EARLIEST_TIME = datetime(1677, 9, 21, 0, 12, 44, tzinfo=UTC)
LATEST_TIME = datetime(2262, 4, 11, 23, 47, 15, tzinfo=UTC)


def _to_utc(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise ValueError("timestamp out of range") from None
    if not EARLIEST_TIME <= utc <= LATEST_TIME:
        raise ValueError(
            f"timestamp {utc.isoformat()} is outside {EARLIEST_TIME.isoformat()}"
            f" .. {LATEST_TIME.isoformat()} (nanoseconds since 1970 in 64 bits)"
        )
    return utc


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware timestamp, normalised to UTC, within the range the history store holds;
naive timestamps are rejected."""


class _Model(BaseModel):
    # No NaN or infinity anywhere: JSON has no such numbers, and a time-series store would
    # reject the point later instead of the ingestor rejecting the message now.
    # defer_build: a model's validator and serializer are built at its first use, so a
    # process builds only the messages it handles (an edge node never builds Offer).
    model_config = ConfigDict(
        extra="ignore", frozen=True, use_enum_values=False, allow_inf_nan=False, defer_build=True
    )


class Message(_Model):
    """The envelope every message shares."""

    channel: ClassVar[Channel]

    v: Literal[1] = Field(default=1, description="schema version")
    type: str
    msg_id: MessageId = Field(default_factory=new_message_id, description="unique per message")
    store: StoreId
    node: NodeId
    stream: str = Field(default="", description="sequencing unit: the topic after {node}/")
    seq: Seq = Field(description="per-stream sequence number, gap-free from the edge")
    event_time: UtcDatetime = Field(default_factory=utc_now, description="when it happened")
    sent_time: UtcDatetime = Field(default_factory=utc_now, description="when it was published")

    def device(self) -> str | None:
        """The topic's device level (reader, bank, scanner, command) if the channel has one."""
        return None

    def topic(self) -> NodeTopic | ShopperTopic:
        return NodeTopic(self.store, self.node, self.channel, self.device())

    @field_validator("v", mode="before")
    @classmethod
    def _version_is_a_number(cls, value: object) -> object:
        # Literal[1] alone takes `true` (True == 1); a schema version is never a boolean.
        if isinstance(value, bool):
            raise ValueError(f"schema version {value!r} is not supported")
        return value

    # One after-validator, no before-validator: a model-level "before" validator makes
    # pydantic hand it the payload as Python objects, which turns `model_validate_json` into
    # JSON -> dict -> model and doubled the cost of decoding on the ingest hot path.
    @model_validator(mode="after")
    def _fill_and_check_stream(self) -> Message:
        field = _DEVICE_FIELD.get(self.channel)
        device = getattr(self, field) if field else None
        expected = self.channel.value if device is None else f"{self.channel}/{device}"
        if not self.stream:
            # The stream is implied by the channel and device; senders may leave it out.
            # The model is frozen, so set it the way pydantic itself stores fields.
            self.__dict__["stream"] = expected
        elif self.stream != expected:
            raise ValueError(f"stream {self.stream!r} does not match {expected!r}")
        return self


# The payload field that names the topic's device level, per channel.
_DEVICE_FIELD: dict[Channel, str] = {
    Channel.RFID: "reader",
    Channel.LOCKER: "bank",
    Channel.BLE: "scanner",
    Channel.CMD: "name",
}


# --------------------------------------------------------------------------- lifecycle


class NodeState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class Status(Message):
    """Retained node status. The Last Will publishes `offline` with the same `bd_seq`."""

    channel: ClassVar[Channel] = Channel.STATUS
    type: Literal["status"] = "status"
    state: NodeState
    bd_seq: Seq = Field(description="connect counter; a will with an older bd_seq is stale")
    version: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=200)


class DeviceKind(StrEnum):
    RFID_READER = "rfid_reader"
    LOCKER_BANK = "locker_bank"
    BLE_SCANNER = "ble_scanner"


class DriverState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    DEGRADED = "degraded"
    BACKOFF = "backoff"
    FAILED = "failed"
    STOPPED = "stopped"


class DeviceInfo(_Model):
    device: Identifier
    kind: DeviceKind
    driver: str = Field(max_length=64, description="driver name, e.g. llrp, cu16, bleak, sim")
    state: DriverState = DriverState.STARTING
    model: str | None = Field(default=None, max_length=128)
    firmware: str | None = Field(default=None, max_length=64)


class SeqRange(_Model):
    first: Seq
    last: Seq


class StreamPosition(_Model):
    stream: str
    seq: Seq = Field(description="last sequence number assigned on this stream")
    kept_from: Seq | None = Field(
        default=None,
        description="lowest seq of the stream the outbox still holds (and will resend);"
        " seq + 1 when it holds none; absent from edges older than commit marks",
    )
    dropped: list[SeqRange] = Field(
        default_factory=list,
        max_length=64,
        description="runs of seqs between kept_from and seq the outbox dropped (counted in"
        " its health): the cloud does not wait for them",
    )


class CommitMark(_Model):
    stream: str
    seq: Seq = Field(description="every seq up to this one is committed at the cloud")


class ShelfCount(_Model):
    shelf: Identifier
    gtin: Gtin
    count: Count


class CompartmentState(StrEnum):
    AVAILABLE = "available"
    RESERVED = "reserved"
    LOADING = "loading"
    AWAITING_PICKUP = "awaiting_pickup"
    PICKUP_OPEN = "pickup_open"
    EXPIRED_HOLD = "expired_hold"
    OUT_OF_SERVICE = "out_of_service"
    # a locker return (drop-off): empty and waiting for the shopper's drop-off code, the
    # door unlocked for it, and the returned parcel inside until staff empty it
    RETURN_PENDING = "return_pending"
    RETURN_OPEN = "return_open"
    RETURN_DROPPED = "return_dropped"


class CompartmentFlag(StrEnum):
    DOOR_AJAR = "door_ajar"
    FORCED_OPEN = "forced_open"
    FAULT = "fault"


class CompartmentStatus(_Model):
    compartment: Identifier
    state: CompartmentState
    door_open: bool = False
    occupied: bool = False
    flags: list[CompartmentFlag] = Field(default_factory=list)
    order_ref: str | None = Field(default=None, max_length=64)


class ZoneOccupancy(_Model):
    zone: Identifier
    beacons: list[BeaconId] = Field(default_factory=list, max_length=10_000)


class Birth(Message):
    """Sent on every (re)connect: what the node has and the full state of each device."""

    channel: ClassVar[Channel] = Channel.BIRTH
    type: Literal["birth"] = "birth"
    bd_seq: Seq
    version: str = Field(max_length=64, description="software version of the node")
    devices: list[DeviceInfo] = Field(default_factory=list)
    streams: list[StreamPosition] = Field(
        default_factory=list, description="last seq per stream, so the cloud can spot gaps"
    )
    shelves: list[ShelfCount] = Field(default_factory=list)
    compartments: dict[Identifier, list[CompartmentStatus]] = Field(
        default_factory=dict, description="per locker bank"
    )
    zones: list[ZoneOccupancy] = Field(default_factory=list)
    # A store's shelves do not fit one payload (50,000 items are ~2.5 MB): the birth goes in
    # numbered parts, the first with everything but shelves beyond it, the others with
    # shelves only. The cloud replaces the node's state when all parts are in.
    part: PartNumber = 1
    parts: PartNumber = 1
    snapshot_id: MessageId | None = Field(default=None, description=SNAPSHOT_ID_DESCRIPTION)


class Death(Message):
    """The goodbye of a clean shutdown (an unclean one leaves it to the Last Will)."""

    channel: ClassVar[Channel] = Channel.DEATH
    type: Literal["death"] = "death"
    bd_seq: Seq
    reason: str = Field(default="shutdown", max_length=200)


class OutboxHealth(_Model):
    depth: Amount = Field(description="messages waiting")
    bytes: Amount
    capacity_bytes: Amount
    oldest_age_s: float | None = Field(default=None, ge=0)
    dropped: dict[str, Amount] = Field(default_factory=dict, description="drops per reason")


class DriverHealth(_Model):
    device: Identifier
    kind: DeviceKind
    state: DriverState
    events_per_s: float = Field(ge=0)
    restarts: Amount = 0
    last_error: str | None = Field(default=None, max_length=500)
    metrics: dict[str, float] = Field(
        default_factory=dict, description="driver-specific, e.g. reads_per_s, adverts_per_s"
    )


class Health(Message):
    """Heartbeat."""

    channel: ClassVar[Channel] = Channel.HEALTH
    type: Literal["health"] = "health"
    version: str = Field(max_length=64)
    bd_seq: Seq
    uptime_s: float = Field(ge=0)
    cpu_percent: float = Field(ge=0)
    rss_bytes: Amount
    disk_free_bytes: Amount
    outbox: OutboxHealth
    drivers: list[DriverHealth] = Field(default_factory=list)


# --------------------------------------------------------------------------- RFID shelves


class ItemEventKind(StrEnum):
    ARRIVED = "arrived"
    MOVED = "moved"
    DEPARTED = "departed"
    LEFT_STORE = "left_store"


class ItemEvent(_Model):
    kind: ItemEventKind
    epc: Epc
    gtin: Gtin | None = Field(default=None, description="absent for non-SGTIN EPCs")
    shelf: Identifier | None = Field(default=None, description="the shelf it is on now")
    from_shelf: Identifier | None = None
    at: UtcDatetime
    rssi: float | None = None


class CountDelta(_Model):
    shelf: Identifier
    gtin: Gtin
    delta: CountChange
    count: Count = Field(description="count after the delta, so a consumer can self-heal")


class RfidEvents(Message):
    channel: ClassVar[Channel] = Channel.RFID
    type: Literal["rfid.events"] = "rfid.events"
    reader: Identifier
    items: list[ItemEvent] = Field(default_factory=list, max_length=5_000)
    counts: list[CountDelta] = Field(default_factory=list, max_length=5_000)

    def device(self) -> str:
        return self.reader


class RfidSnapshot(Message):
    """Full shelf contents of one reader; large snapshots are split into parts."""

    channel: ClassVar[Channel] = Channel.RFID
    type: Literal["rfid.snapshot"] = "rfid.snapshot"
    reader: Identifier
    shelves: list[ShelfCount] = Field(default_factory=list, max_length=5_000)
    part: PartNumber = 1
    parts: PartNumber = 1
    snapshot_id: MessageId | None = Field(default=None, description=SNAPSHOT_ID_DESCRIPTION)

    def device(self) -> str:
        return self.reader


# --------------------------------------------------------------------------- lockers


class CompartmentEvent(_Model):
    compartment: Identifier
    state: CompartmentState
    previous: CompartmentState | None = None
    cause: str = Field(max_length=64, description="what caused it, e.g. door_closed, code_ok")
    door_open: bool = False
    occupied: bool = False
    flags: list[CompartmentFlag] = Field(default_factory=list)
    order_ref: str | None = Field(default=None, max_length=64)
    at: UtcDatetime


class LockerEvents(Message):
    channel: ClassVar[Channel] = Channel.LOCKER
    type: Literal["locker.events"] = "locker.events"
    bank: Identifier
    events: list[CompartmentEvent] = Field(default_factory=list, max_length=1_000)

    def device(self) -> str:
        return self.bank


class LockerSnapshot(Message):
    channel: ClassVar[Channel] = Channel.LOCKER
    type: Literal["locker.snapshot"] = "locker.snapshot"
    bank: Identifier
    compartments: list[CompartmentStatus] = Field(default_factory=list, max_length=1_000)

    def device(self) -> str:
        return self.bank


# --------------------------------------------------------------------------- BLE


class PresenceKind(StrEnum):
    ENTER = "enter"
    DWELL = "dwell"
    EXIT = "exit"


class PresenceEvent(_Model):
    kind: PresenceKind
    beacon: BeaconId = Field(description="allowlisted beacon id or rotating token, never a MAC")
    zone: Identifier
    rssi: float | None = None
    dwell_s: float | None = Field(default=None, ge=0)
    at: UtcDatetime


class BlePresence(Message):
    channel: ClassVar[Channel] = Channel.BLE
    type: Literal["ble.presence"] = "ble.presence"
    scanner: Identifier
    events: list[PresenceEvent] = Field(default_factory=list, max_length=5_000)

    def device(self) -> str:
        return self.scanner


# --------------------------------------------------------------------------- commands


class Command(Message):
    """Cloud -> edge. Published on `cmd/{name}`; answered by a `CommandAck`."""

    channel: ClassVar[Channel] = Channel.CMD
    type: Literal["command"] = "command"
    name: Identifier = Field(description="e.g. resync, reload-config, locker.reserve")
    correlation_id: MessageId
    expires_at: UtcDatetime
    target: Identifier | None = Field(default=None, description="device the command is for")
    args: dict[str, JsonValue] = Field(default_factory=dict)

    def device(self) -> str:
        return self.name

    def expired(self, now: datetime | None = None) -> bool:
        return (now or utc_now()) >= self.expires_at


class Committed(Message):
    """Cloud -> edge, retained, on `committed`: per stream, the highest seq such that every
    seq up to it is committed at the cloud (or given up on after a gap). The edge deletes
    its outbox messages up to it; it keeps, and resends, everything above.

    `seq` counts these messages per node since the ingestor started; the edge does not
    sequence them (MQTT keeps their order on the one topic, and the latest counts).
    """

    channel: ClassVar[Channel] = Channel.COMMITTED
    type: Literal["committed"] = "committed"
    streams: list[CommitMark] = Field(
        default_factory=list, max_length=10_000, description="committed seq per stream"
    )


class AckStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DONE = "done"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self is not AckStatus.ACCEPTED


class CommandAck(Message):
    channel: ClassVar[Channel] = Channel.ACK
    type: Literal["ack"] = "ack"
    correlation_id: MessageId
    command: Identifier
    status: AckStatus
    reason: str | None = Field(default=None, max_length=500)
    result: dict[str, JsonValue] | None = None


# --------------------------------------------------------------------------- offers


class OfferTrigger(StrEnum):
    ENTER = "enter"
    DWELL = "dwell"
    EXIT = "exit"


class Offer(Message):
    """Cloud -> one shopper's app, on `shopper/{shopper}/offers`. `node` is the cloud node."""

    channel: ClassVar[Channel] = Channel.OFFERS
    type: Literal["offer"] = "offer"
    shopper: Identifier = Field(
        description="the shopper app's inbox, given with its broker login (never a BLE token)"
    )
    offer_id: MessageId
    campaign: Identifier
    zone: Identifier
    trigger: OfferTrigger
    gtins: list[Gtin] = Field(default_factory=list, max_length=100)
    title: str = Field(max_length=120)
    body: str = Field(default="", max_length=1_000)
    expires_at: UtcDatetime

    def topic(self) -> ShopperTopic:
        return ShopperTopic(self.shopper)


class OrderUpdate(Message):
    """Cloud -> one shopper's app, on `shopper/{shopper}/orders`: a BOPIS order changed
    state. `node` is the cloud node. Never carries the pickup code."""

    channel: ClassVar[Channel] = Channel.ORDERS
    type: Literal["order.update"] = "order.update"
    shopper: Identifier = Field(
        description="the shopper app's inbox, given with its broker login (never a BLE token)"
    )
    order_id: MessageId
    state: str = Field(
        max_length=32, description="created, ..., ready_for_pickup, collected, expired, ..."
    )
    bank: Identifier | None = None
    compartment: Identifier | None = None
    hold_until: UtcDatetime | None = Field(default=None, description="pickup possible until")

    def topic(self) -> ShopperTopic:
        return ShopperTopic(self.shopper, Channel.ORDERS)


AnyMessage = (
    Status
    | Birth
    | Death
    | Health
    | RfidEvents
    | RfidSnapshot
    | LockerEvents
    | LockerSnapshot
    | BlePresence
    | Command
    | CommandAck
    | Committed
    | Offer
    | OrderUpdate
)

MESSAGE_CLASSES: tuple[type[Message], ...] = (
    Status,
    Birth,
    Death,
    Health,
    RfidEvents,
    RfidSnapshot,
    LockerEvents,
    LockerSnapshot,
    BlePresence,
    Command,
    CommandAck,
    Committed,
    Offer,
    OrderUpdate,
)
MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.model_fields["type"].default: cls for cls in MESSAGE_CLASSES
}
