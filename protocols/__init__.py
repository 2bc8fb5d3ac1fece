"""The storegate contract: MQTT topics, message models and the codec.

Everything that crosses the broker is defined here and nowhere else. Edge, cloud and
simulators depend on this package; it depends on nothing of theirs (only on pydantic).
"""

from protocols.codec import (
    MAX_PAYLOAD_BYTES,
    DecodeError,
    DecodeErrorReason,
    EncodeError,
    decode,
    encode,
    topic_for,
)
from protocols.messages import (
    MESSAGE_TYPES,
    SCHEMA_VERSION,
    AckStatus,
    AnyMessage,
    Birth,
    BlePresence,
    Command,
    CommandAck,
    Death,
    Health,
    LockerEvents,
    LockerSnapshot,
    Message,
    NodeState,
    Offer,
    RfidEvents,
    RfidSnapshot,
    Status,
)
from protocols.topics import (
    TOPIC_PREFIX,
    Channel,
    NodeTopic,
    ShopperTopic,
    TopicError,
    parse_topic,
)

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MESSAGE_TYPES",
    "SCHEMA_VERSION",
    "TOPIC_PREFIX",
    "AckStatus",
    "AnyMessage",
    "Birth",
    "BlePresence",
    "Channel",
    "Command",
    "CommandAck",
    "Death",
    "DecodeError",
    "DecodeErrorReason",
    "EncodeError",
    "Health",
    "LockerEvents",
    "LockerSnapshot",
    "Message",
    "NodeState",
    "NodeTopic",
    "Offer",
    "RfidEvents",
    "RfidSnapshot",
    "ShopperTopic",
    "Status",
    "TopicError",
    "decode",
    "encode",
    "parse_topic",
    "topic_for",
]
