"""A simulated Impinj R700 IoT device interface: a small HTTP/1.1 server on asyncio streams.

It serves what the `impinj-iot` driver uses, with HTTP basic auth:

- `GET /api/v1/status` -> `{"status": "running"|"idle", "serialNumber": ..., ...}`
- `POST /api/v1/profiles/inventory/presets/{id}/start` -> 204 (404 for an unknown preset)
- `POST /api/v1/profiles/stop` -> 204
- `GET /api/v1/data/stream` -> 200, chunked, one JSON event per line: a `tagInventory`
  event per read while a preset runs, and a keepalive event every `keepalive_s`.

Reads come from a `simulators.llrp.world.World` (one read cycle every `cycle_s`), which
keeps the ground truth. Fault injection: `drop_connections()`, `inject_line()` (e.g. bad
JSON), and changing `credentials`. Standard library only, so it runs on an edge install.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from datetime import UTC, datetime

from simulators.llrp.world import TagRead, World

log = logging.getLogger(__name__)

STREAM_QUEUE = 10_000  # lines per stream client; a client that falls behind loses the oldest
REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def tag_event(read: TagRead, hostname: str, t: float) -> dict[str, object]:
    """A `tagInventory` event shaped like the R700's (all optional fields enabled)."""
    return {
        "timestamp": iso(t),
        "hostname": hostname,
        "eventType": "tagInventory",
        "tagInventoryEvent": {
            "epc": base64.b64encode(bytes.fromhex(read.epc)).decode(),
            "epcHex": read.epc,
            "antennaPort": read.antenna,
            "antennaName": f"Antenna {read.antenna}",
            "peakRssiCdbm": read.rssi * 100,
            "frequency": 902_750 + 500 * read.channel,
            "transmitPowerCdbm": 3000,
            "lastSeenTime": iso(read.last_seen_us / 1e6),
            "phaseAngle": 0.0,
        },
    }


class SimulatedImpinjReader:
    def __init__(
        self,
        world: World,
        *,
        cycle_s: float = 1.0,
        credentials: tuple[str, str] | None = ("root", "impinj"),
        presets: frozenset[str] = frozenset({"storegate"}),
        keepalive_s: float = 5.0,
        hostname: str = "impinj-sim",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.world = world
        self.cycle_s = cycle_s
        self.credentials = credentials
        self.presets = presets
        self.keepalive_s = keepalive_s
        self.hostname = hostname
        self.host = host
        self.port = port
        self.running_preset: str | None = None
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) for tests
        self.events_sent = 0
        self.lines_dropped = 0
        self._server: asyncio.Server | None = None
        self._streams: set[asyncio.Queue[bytes | None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks = [
            asyncio.create_task(self._inventory_loop(), name="impinj-sim-inventory"),
            asyncio.create_task(self._keepalive_loop(), name="impinj-sim-keepalive"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close()
        await self.drop_connections()
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()

    async def __aenter__(self) -> SimulatedImpinjReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ faults

    async def drop_connections(self) -> None:
        """Cut every open connection (a reader reboot, a flapping switch)."""
        for queue in self._streams:  # wake the stream writers so they notice
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await asyncio.sleep(0)

    def inject_line(self, line: bytes) -> None:
        """Send a raw line to every stream client (e.g. garbage, a truncated event)."""
        self._broadcast(line.rstrip(b"\n") + b"\n")

    # ------------------------------------------------------------------ event sources

    def _broadcast(self, line: bytes) -> None:
        for queue in self._streams:
            if queue.full():
                queue.get_nowait()
                self.lines_dropped += 1
            queue.put_nowait(line)

    async def _inventory_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cycle_s)
            if self.running_preset is None:
                continue
            now = time.time()
            for read in self.world.cycle(now, self.cycle_s):
                event = tag_event(read, self.hostname, now)
                self._broadcast(json.dumps(event, separators=(",", ":")).encode() + b"\n")
                self.events_sent += 1

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            event = {"timestamp": iso(time.time()), "hostname": self.hostname}
            self._broadcast(json.dumps({**event, "eventType": "keepalive"}).encode() + b"\n")

    # ------------------------------------------------------------------ HTTP

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                method, path, headers = request
                if not await self._handle(method, path, headers, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _read_request(
        reader: asyncio.StreamReader,
    ) -> tuple[str, str, dict[str, str]] | None:
        head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
        if not head:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, path, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length:
            await reader.readexactly(length)  # request bodies are not used
        return method, path, headers

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.credentials is None:
            return True
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        with contextlib.suppress(ValueError):
            user, _, password = base64.b64decode(value).decode().partition(":")
            return (user, password) == self.credentials
        return False

    async def _respond(
        self, writer: asyncio.StreamWriter, status: int, body: object | None = None
    ) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}"]
        if status == 401:
            head.append('WWW-Authenticate: Basic realm="impinj"')
        if payload:
            head.append("Content-Type: application/json")
        head.append(f"Content-Length: {len(payload)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        await writer.drain()

    async def _handle(
        self, method: str, path: str, headers: dict[str, str], writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection is done."""
        status = self._route(method, path, headers)
        self.requests.append((method, path, status))
        if status == 401:
            await self._respond(writer, 401, {"message": "authentication required"})
        elif status == 404:
            await self._respond(writer, 404, {"message": f"no such resource {path}"})
        elif path == "/api/v1/status":
            await self._respond(
                writer,
                200,
                {
                    "status": "running" if self.running_preset else "idle",
                    "time": iso(time.time()),
                    "serialNumber": "SIM-700-0001",
                    "activePreset": (
                        {"id": self.running_preset, "profile": "inventory"}
                        if self.running_preset
                        else None
                    ),
                },
            )
        elif path == "/api/v1/data/stream":
            await self._stream(writer)
            return False
        else:
            await self._respond(writer, 204)
        return True

    def _route(self, method: str, path: str, headers: dict[str, str]) -> int:
        if not self._authorized(headers):
            return 401
        if method == "GET" and path in ("/api/v1/status", "/api/v1/data/stream"):
            return 200
        if method == "POST" and path == "/api/v1/profiles/stop":
            self.running_preset = None
            return 204
        prefix, suffix = "/api/v1/profiles/inventory/presets/", "/start"
        if method == "POST" and path.startswith(prefix) and path.endswith(suffix):
            preset = path[len(prefix) : -len(suffix)]
            if preset in self.presets:
                self.running_preset = preset
                return 204
        return 404

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(STREAM_QUEUE)
        self._streams.add(queue)
        try:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            await writer.drain()
            while True:
                line = await queue.get()
                if line is None:
                    break
                writer.write(b"%x\r\n%s\r\n" % (len(line), line))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            self._streams.discard(queue)
