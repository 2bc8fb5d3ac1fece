"""The versioned MQTT topic tree.

    storegate/v1/{store}/{node}/status              retained online/offline (Last Will: offline)
    storegate/v1/{store}/{node}/birth               full snapshots on every (re)connect
    storegate/v1/{store}/{node}/death               goodbye on clean shutdown
    storegate/v1/{store}/{node}/health              heartbeat
    storegate/v1/{store}/{node}/rfid/{reader}       shelf item events, count deltas, snapshots
    storegate/v1/{store}/{node}/locker/{bank}       compartment events and snapshots
    storegate/v1/{store}/{node}/ble/{scanner}       zone presence
    storegate/v1/{store}/{node}/cmd/{command}       commands, cloud -> edge
    storegate/v1/{store}/{node}/ack                 command acks, edge -> cloud
    storegate/v1/{store}/{node}/committed           retained: what the cloud has committed
    storegate/v1/shopper/{inbox}/offers             offers to one shopper's app
    storegate/v1/shopper/{inbox}/orders             order updates (BOPIS) to one shopper's app

The major version lives in the topic so that a v2 can run beside v1 during a migration;
the payload carries the same version (`v`) so a message is self-describing in a dead-letter
table. The `stream` of a node message is everything after `{node}/` and is the unit of
sequencing: each stream has its own gap-free sequence numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocols.ids import RESERVED_STORE_IDS, is_identifier

TOPIC_ROOT = "storegate"
TOPIC_VERSION = "v1"
TOPIC_PREFIX = f"{TOPIC_ROOT}/{TOPIC_VERSION}"
SHOPPER_LEVEL = "shopper"
OFFERS_LEVEL = "offers"
ORDERS_LEVEL = "orders"


class Channel(StrEnum):
    STATUS = "status"
    BIRTH = "birth"
    DEATH = "death"
    HEALTH = "health"
    RFID = "rfid"
    LOCKER = "locker"
    BLE = "ble"
    CMD = "cmd"
    ACK = "ack"
    COMMITTED = "committed"
    OFFERS = "offers"
    ORDERS = "orders"

    @property
    def has_device(self) -> bool:
        """Whether the topic has a device (or command name) level after the channel."""
        return self in _DEVICE_CHANNELS

    @property
    def from_cloud(self) -> bool:
        return self in (Channel.CMD, Channel.COMMITTED, Channel.OFFERS, Channel.ORDERS)

    @property
    def to_shopper(self) -> bool:
        """Published under `shopper/{inbox}/`, not under a node."""
        return self in _SHOPPER_CHANNELS


# The node's lifecycle streams: published directly, never through the outbox (so never
# resent, and never confirmed by a commit mark).
LIFECYCLE_STREAMS = frozenset(
    {Channel.STATUS.value, Channel.BIRTH.value, Channel.DEATH.value, Channel.HEALTH.value}
)
_DEVICE_CHANNELS = frozenset({Channel.RFID, Channel.LOCKER, Channel.BLE, Channel.CMD})
_SHOPPER_CHANNELS = frozenset({Channel.OFFERS, Channel.ORDERS})
NODE_CHANNELS = tuple(c for c in Channel if c not in _SHOPPER_CHANNELS)


class TopicError(ValueError):
    """A topic that is not part of the storegate tree, with the reason."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"bad topic {topic!r}: {reason}")
        self.topic = topic
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NodeTopic:
    """A topic under one edge node: `storegate/v1/{store}/{node}/{channel}[/{device}]`."""

    store: str
    node: str
    channel: Channel
    device: str | None = None

    def __post_init__(self) -> None:
        _check_level("store", self.store)
        if self.store in RESERVED_STORE_IDS:
            raise TopicError(str(self._unchecked()), f"store id {self.store!r} is reserved")
        _check_level("node", self.node)
        if self.channel.to_shopper:
            raise TopicError(
                self._unchecked(), f"{self.channel} are published under shopper/, not a node"
            )
        if self.channel.has_device:
            if self.device is None:
                raise TopicError(self._unchecked(), f"channel {self.channel} needs a device level")
            _check_level("device", self.device)
        elif self.device is not None:
            raise TopicError(self._unchecked(), f"channel {self.channel} has no device level")

    @property
    def stream(self) -> str:
        """The sequencing unit: the topic after `{node}/`, for example `rfid/reader-1`."""
        return self.channel.value if self.device is None else f"{self.channel}/{self.device}"

    def __str__(self) -> str:
        return self._unchecked()

    def _unchecked(self) -> str:
        return f"{TOPIC_PREFIX}/{self.store}/{self.node}/{self.stream}"


@dataclass(frozen=True, slots=True)
class ShopperTopic:
    """A topic of one shopper app: `storegate/v1/shopper/{inbox}/offers` or `.../orders`.

    The inbox is the app's, handed out with its broker login; never a token it broadcasts.
    """

    inbox: str
    channel: Channel = Channel.OFFERS

    def __post_init__(self) -> None:
        _check_level("shopper inbox", self.inbox)
        if not self.channel.to_shopper:
            raise TopicError(str(self), f"channel {self.channel} is not a shopper channel")

    def __str__(self) -> str:
        return f"{TOPIC_PREFIX}/{SHOPPER_LEVEL}/{self.inbox}/{self.channel}"


AnyTopic = NodeTopic | ShopperTopic


def _check_level(what: str, value: str) -> None:
    if not is_identifier(value):
        raise TopicError(
            value, f"{what} {value!r} must be 1-64 characters of A-Z a-z 0-9 _ . - (no / + # $)"
        )


def parse_topic(topic: str) -> AnyTopic:
    """Parse a concrete topic (no wildcards) into its parts, or raise `TopicError`."""
    levels = topic.split("/")
    if len(levels) < 4 or f"{levels[0]}/{levels[1]}" != TOPIC_PREFIX:
        if len(levels) >= 2 and levels[0] == TOPIC_ROOT and levels[1] != TOPIC_VERSION:
            raise TopicError(topic, f"unsupported topic version {levels[1]!r}")
        raise TopicError(topic, f"not under {TOPIC_PREFIX}/")
    if levels[2] == SHOPPER_LEVEL:
        if len(levels) != 5 or levels[4] not in (OFFERS_LEVEL, ORDERS_LEVEL):
            raise TopicError(
                topic, "shopper topics are shopper/{inbox}/offers or shopper/{inbox}/orders"
            )
        try:
            return ShopperTopic(levels[3], Channel(levels[4]))
        except TopicError as exc:
            raise TopicError(topic, exc.reason) from None
    if len(levels) < 5:
        raise TopicError(topic, "expected {store}/{node}/{channel}")
    try:
        channel = Channel(levels[4])
    except ValueError:
        raise TopicError(topic, f"unknown channel {levels[4]!r}") from None
    expected_levels = 6 if channel.has_device else 5
    if len(levels) != expected_levels:
        raise TopicError(topic, f"channel {channel} takes {expected_levels} levels")
    try:
        return NodeTopic(levels[2], levels[3], channel, levels[5] if channel.has_device else None)
    except TopicError as exc:
        raise TopicError(topic, exc.reason) from None


def node_filter(
    store: str = "+", node: str = "+", channel: Channel | str = "#", *, shared_group: str = ""
) -> str:
    """A subscription filter under nodes, optionally as an MQTT 5 shared subscription.

    `node_filter()` is every node stream of every store; `node_filter("s1", channel="cmd")`
    with `node="n1"` adds `/+` for device channels. A shared group spreads the matching
    messages across the subscribers of the group (`$share/{group}/...`).
    """
    channel = Channel(channel) if channel != "#" else channel
    suffix = str(channel)
    if isinstance(channel, Channel) and channel.has_device:
        suffix += "/+"
    topic_filter = f"{TOPIC_PREFIX}/{store}/{node}/{suffix}"
    return f"$share/{shared_group}/{topic_filter}" if shared_group else topic_filter


def command_topic(store: str, node: str, command: str) -> str:
    return str(NodeTopic(store, node, Channel.CMD, command))


def offers_topic(inbox: str) -> str:
    return str(ShopperTopic(inbox))


def orders_topic(inbox: str) -> str:
    return str(ShopperTopic(inbox, Channel.ORDERS))
