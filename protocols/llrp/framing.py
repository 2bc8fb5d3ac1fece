"""Splitting a TCP byte stream into LLRP messages.

`FrameBuffer` is the incremental, I/O-free splitter (feed it any chunks, get whole messages
back); `read_message` reads one message from an `asyncio.StreamReader`; `MessageWriter`
numbers and writes outgoing messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from protocols.llrp.codec import (
    HEADER_SIZE,
    LLRPError,
    Message,
    decode_body,
    encode_message,
    parse_header,
)

# Real readers send reports of a few kB; anything near this is a desynchronised stream.
MAX_MESSAGE_SIZE = 4 * 1024 * 1024
SUPPORTED_VERSIONS = frozenset({1, 2})  # LLRP 1.0.1 and 1.1 share the header


class LLRPFrameError(LLRPError):
    """The stream is not (or no longer) a sequence of LLRP messages; the connection is lost."""


def check_header(header: bytes | bytearray) -> tuple[int, int, int, int]:
    version, type_, length, id_ = parse_header(header)
    if version not in SUPPORTED_VERSIONS:
        raise LLRPFrameError(f"unsupported LLRP version {version} (message type {type_})")
    if length < HEADER_SIZE or length > MAX_MESSAGE_SIZE:
        raise LLRPFrameError(f"bad message length {length} (message type {type_})")
    return version, type_, length, id_


class FrameBuffer:
    """Accumulates bytes and yields every complete message in them."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= HEADER_SIZE:
            version, type_, length, id_ = check_header(self._buf)
            if len(self._buf) < length:
                break
            body = bytes(self._buf[HEADER_SIZE:length])
            del self._buf[:length]
            out.append(decode_body(type_, body, id_, version))
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message still waiting for the rest."""
        return len(self._buf)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, int, bytes] | None:
    """(version, type, id, body) of the next message, or None when the peer closed the
    connection between messages. For callers that decode some message types themselves
    (the tag reports of a busy reader); the checks are `read_message`'s."""
    try:
        header = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise LLRPFrameError(
            f"connection closed inside a message header ({len(exc.partial)} bytes)"
        ) from None
    version, type_, length, id_ = check_header(header)
    try:
        body = await reader.readexactly(length - HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        raise LLRPFrameError(
            f"connection closed inside message type {type_}: "
            f"{len(exc.partial)} of {length - HEADER_SIZE} body bytes"
        ) from None
    return version, type_, id_, body


async def read_message(reader: asyncio.StreamReader) -> Message | None:
    """The next message, or None when the peer closed the connection between messages.

    Raises LLRPFrameError on a bad header or a connection closed mid-message, and
    LLRPError when a message body is malformed (the stream itself stays in step)."""
    frame = await read_frame(reader)
    if frame is None:
        return None
    version, type_, id_, body = frame
    return decode_body(type_, body, id_, version)


class MessageWriter:
    """Writes messages, giving each a fresh message id unless it has one."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids) & 0xFFFFFFFF

    async def send(self, msg: Message) -> int:
        if not msg.id:
            msg.id = self.next_id()
        self._writer.write(encode_message(msg))
        await self._writer.drain()
        return msg.id

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):  # already gone: that is all we wanted
            await self._writer.wait_closed()
