"""Bytes <-> messages, with a size limit and typed errors.

`decode` raises only `DecodeError`: whatever arrives (random bytes, half a JSON document,
a message from the future, a message on the wrong topic) comes back as one exception type
with a machine-readable `reason` and a sentence for humans, so a consumer can dead-letter
it and carry on. `encode` raises only `EncodeError`.
"""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import Annotated, TypeVar, cast

import pydantic_core
from pydantic import Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from protocols.messages import MESSAGE_TYPES, SCHEMA_VERSION, AnyMessage, Message
from protocols.topics import NodeTopic, ShopperTopic, TopicError, parse_topic

# 256 KiB: far above any batched event message (they stay under ~64 KiB by construction),
# below the default limits of the brokers we deploy on once they are configured for it.
MAX_PAYLOAD_BYTES = 256 * 1024

M = TypeVar("M", bound=Message)


class DecodeErrorReason(StrEnum):
    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid"
    BAD_TOPIC = "bad_topic"
    TOPIC_MISMATCH = "topic_mismatch"


class DecodeError(ValueError):
    """A payload that is not a valid storegate message, and why."""

    def __init__(self, reason: DecodeErrorReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class EncodeError(ValueError):
    """A message that cannot be sent as it is (too large for one payload)."""


def encode(message: Message, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> bytes:
    payload = message.model_dump_json(exclude_none=True).encode()
    if len(payload) > max_bytes:
        raise EncodeError(
            f"{message.type} message is {len(payload)} bytes, over the {max_bytes}-byte limit;"
            " split it into smaller batches"
        )
    return payload


def decode(
    payload: bytes | bytearray | memoryview,
    *,
    topic: str | None = None,
    expect: type[M] | None = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> AnyMessage:
    """Parse and validate one payload; with `topic`, also check it belongs on that topic."""
    message = _decode(payload, expect=expect, max_bytes=max_bytes)
    if topic is not None:
        check_topic(message, topic)
    return message


def decode_as(
    cls: type[M],
    payload: bytes | bytearray | memoryview,
    *,
    topic: str | None = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> M:
    """Like `decode`, for a consumer that accepts exactly one message type."""
    message = decode(payload, topic=topic, expect=cls, max_bytes=max_bytes)
    assert isinstance(message, cls)  # _decode checked the type
    return message


# Every message type in one validator, picked by its `type` field, straight from JSON bytes:
# one pass in pydantic-core, no intermediate dict. It is the fast path for valid messages;
# whatever it refuses goes through `_diagnose`, which says precisely what is wrong.
@functools.cache
def _any_message() -> TypeAdapter[AnyMessage]:
    # built at the first decode without `expect`: a process that only decodes known types
    # (an edge node) never builds the validators of every message
    return TypeAdapter(Annotated[AnyMessage, Field(discriminator="type")])


def _decode(
    payload: bytes | bytearray | memoryview, *, expect: type[Message] | None, max_bytes: int
) -> AnyMessage:
    size = len(payload)
    if size > max_bytes:
        raise DecodeError(DecodeErrorReason.TOO_LARGE, f"{size} bytes, limit is {max_bytes}")
    data = payload if isinstance(payload, bytes) else bytes(payload)
    try:
        if expect is None:
            message = _any_message().validate_json(data)
        else:
            message = cast(AnyMessage, expect.model_validate_json(data))
        # `v` has a default for building messages in code, but the wire must carry it.
        if "v" in message.model_fields_set:
            return message
    except ValidationError as exc:
        detail = _field_errors(exc) if expect is None else None
        if detail is not None:
            raise DecodeError(DecodeErrorReason.INVALID, detail) from None
    except (ValueError, TypeError, ArithmeticError, RecursionError):
        pass  # say why, the slow way
    return _diagnose(data, expect=expect)


def _field_errors(exc: ValidationError) -> str | None:
    """The detail of an `invalid` payload, if the fast path's errors already say it all:
    JSON that parsed, a known type, a supported version, and fields that are wrong.

    Saves parsing and validating the payload again (a number out of range cost 2.5 times a
    valid message's decode that way). Anything else goes to `_diagnose`.
    """
    errors = exc.errors(include_url=False, include_input=False)
    for error in errors:
        location = error["loc"]
        if len(location) < 2 or location[0] not in MESSAGE_TYPES or location[1] in ("v", "type"):
            return None
    return _describe(errors, exc.error_count(), skip=1)


def _diagnose(payload: bytes, *, expect: type[Message] | None) -> AnyMessage:
    """Validate step by step, so a refused payload gets the most useful reason."""
    try:
        data = pydantic_core.from_json(payload, allow_inf_nan=False)
    except ValueError as exc:
        raise DecodeError(DecodeErrorReason.NOT_JSON, _short(str(exc))) from None
    if not isinstance(data, dict):
        raise DecodeError(
            DecodeErrorReason.NOT_AN_OBJECT, f"expected a JSON object, got {_json_kind(data)}"
        )
    version = data.get("v")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        if version is None:
            raise DecodeError(DecodeErrorReason.INVALID, "v: missing schema version")
        raise DecodeError(
            DecodeErrorReason.UNSUPPORTED_VERSION,
            f"schema version {_short(repr(version))} is not supported (this build speaks"
            f" {SCHEMA_VERSION})",
        )
    type_name = data.get("type")
    cls = MESSAGE_TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        if type_name is None:
            raise DecodeError(DecodeErrorReason.INVALID, "type: missing message type")
        raise DecodeError(
            DecodeErrorReason.UNKNOWN_TYPE,
            f"unknown message type {_short(repr(type_name))}; known: {', '.join(MESSAGE_TYPES)}",
        )
    if expect is not None and cls is not expect:
        raise DecodeError(
            DecodeErrorReason.UNKNOWN_TYPE,
            f"expected a {expect.model_fields['type'].default} message, got {type_name}",
        )
    try:
        return cast(AnyMessage, cls.model_validate(data))
    except ValidationError as exc:
        raise DecodeError(DecodeErrorReason.INVALID, describe_validation_error(exc)) from None
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:  # never escape
        raise DecodeError(DecodeErrorReason.INVALID, _short(str(exc))) from None


@functools.lru_cache(maxsize=16_384)
def _parse_topic_cached(topic: str) -> NodeTopic | ShopperTopic:
    # A consumer sees the same few topics over and over (one per stream); parsing is pure.
    return parse_topic(topic)


def check_topic(message: Message, topic: str) -> None:
    """Raise `DecodeError` unless `message` belongs on `topic` (same store, node, stream)."""
    try:
        parsed = _parse_topic_cached(topic)
    except TopicError as exc:
        raise DecodeError(DecodeErrorReason.BAD_TOPIC, exc.reason) from None
    if (
        isinstance(parsed, NodeTopic)
        and parsed.channel is message.channel
        and parsed.store == message.store
        and parsed.node == message.node
        and parsed.stream == message.stream
    ):
        return  # the common case, without building the expected topic
    expected = message.topic()
    if parsed == expected:
        return
    if isinstance(parsed, NodeTopic) and isinstance(expected, NodeTopic):
        if (parsed.store, parsed.node) != (expected.store, expected.node):
            detail = (
                f"payload says store {message.store!r} node {message.node!r}, topic says"
                f" store {parsed.store!r} node {parsed.node!r}"
            )
        else:
            detail = f"a {message.type} message on stream {message.stream!r} cannot go on {topic}"
    elif isinstance(parsed, ShopperTopic) and isinstance(expected, ShopperTopic):
        detail = "offer addressed to another shopper than the topic's"
    else:
        detail = f"a {message.type} message does not belong on {topic}"
    raise DecodeError(DecodeErrorReason.TOPIC_MISMATCH, detail)


def topic_for(message: Message) -> str:
    return str(message.topic())


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """`field.path: message` for the first few errors, readable in a dead-letter table."""
    return _describe(exc.errors(include_url=False, include_input=False), exc.error_count(), limit)


def _describe(errors: list[ErrorDetails], count: int, limit: int = 3, *, skip: int = 0) -> str:
    parts = []
    for error in errors[:limit]:
        location = ".".join(str(part) for part in error["loc"][skip:]) or "(message)"
        parts.append(f"{location}: {error['msg']}")
    more = count - limit
    if more > 0:
        parts.append(f"and {more} more")
    return _short("; ".join(parts), 500)


def _json_kind(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
