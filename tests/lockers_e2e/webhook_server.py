"""A real HTTP server for webhook tests: asyncio streams, HTTP/1.1, one request per
connection. It answers the next `fail_next` requests with 503, then 204."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Received:
    status: int
    delivery: str | None
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""


@dataclass
class WebhookServer:
    fail_next: int = 0
    received: list[Received] = field(default_factory=list)
    _server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/orders"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers: dict[str, str] = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = 503 if self.fail_next > 0 else 204
            self.fail_next = max(0, self.fail_next - 1)
            self.received.append(
                Received(
                    status, headers.get("x-storegate-delivery"), json.loads(body), headers, body
                )
            )
            reason = "Service Unavailable" if status == 503 else "No Content"
            reply = f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n"
            writer.write(reply.encode() + b"\r\n")
            await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
