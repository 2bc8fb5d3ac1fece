"""Splitting a byte stream into LLRP messages: partial reads, merged reads, garbage."""

from __future__ import annotations

import asyncio
import struct

import pytest

from protocols.llrp import FrameBuffer, LLRPFrameError, encode_message, message, param, read_message
from tests.conftest import FIXTURES


def _stream() -> tuple[bytes, list[int]]:
    report_body = (FIXTURES / "llrp" / "ROAccessReport-001.bytes").read_bytes()
    report = struct.pack(">HII", (1 << 10) | 61, 10 + len(report_body), 7) + report_body
    msgs = [
        encode_message(message("KEEPALIVE", 1)),
        report,
        encode_message(message("GET_READER_CAPABILITIES", 2, ReqCapabilities=0)),
        encode_message(message("ADD_ROSPEC", 3, param("ROSpec", ROSpecID=5, Priority=0))),
    ]
    return b"".join(msgs), [62, 61, 1, 20]


@pytest.mark.parametrize("chunk", [1, 3, 7, 10, 11, 64, 10_000])
def test_frame_buffer_any_chunking(chunk: int) -> None:
    data, types = _stream()
    buffer = FrameBuffer()
    got = []
    for i in range(0, len(data), chunk):
        got += buffer.feed(data[i : i + chunk])
    assert [m.type for m in got] == types
    assert [m.id for m in got] == [1, 7, 2, 3]
    assert buffer.pending == 0


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (struct.pack(">HII", (1 << 10) | 61, 3, 1), "bad message length 3"),
        (struct.pack(">HII", (1 << 10) | 61, 0x7FFFFFFF, 1), "bad message length"),
        (struct.pack(">HII", (5 << 10) | 61, 10, 1), "unsupported LLRP version 5"),
    ],
)
def test_frame_buffer_rejects_garbage(header: bytes, reason: str) -> None:
    with pytest.raises(LLRPFrameError, match=reason):
        FrameBuffer().feed(header)


async def test_read_message_over_a_real_socket_in_odd_chunks() -> None:
    data, types = _stream()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in range(0, len(data), 5):
            writer.write(data[i : i + 5])
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        got = []
        while (msg := await read_message(reader)) is not None:
            got.append(msg.type)
        writer.close()
    assert got == types  # and the clean close between messages gave None


async def test_read_message_connection_closed_mid_message() -> None:
    data = encode_message(message("START_ROSPEC", 9, ROSpecID=1))
    reader = asyncio.StreamReader()
    reader.feed_data(data[:12])
    reader.feed_eof()
    with pytest.raises(LLRPFrameError, match="closed inside message type 22"):
        await read_message(reader)
    reader = asyncio.StreamReader()
    reader.feed_data(data[:4])
    reader.feed_eof()
    with pytest.raises(LLRPFrameError, match="inside a message header"):
        await read_message(reader)


async def test_read_message_bad_length() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(struct.pack(">HII", (1 << 10) | 61, 2, 1))
    with pytest.raises(LLRPFrameError, match="bad message length 2"):
        await read_message(reader)
