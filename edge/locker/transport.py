"""Byte transports to a locker bus (or a keypad line), chosen by URL.

- `serial:///dev/ttyUSB0` — a USB-RS485 adapter, opened 19200 8N1 with pyserial-asyncio-fast;
- `pty:///dev/pts/7` — a pseudo-terminal (the simulator), opened exactly like serial;
- `tcp://host:port` — an RS-485-to-Ethernet bridge in raw TCP server mode.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

from protocols import cu16

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True, slots=True)
class TransportUrl:
    scheme: str  # serial | pty | tcp
    path: str = ""
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, url: str) -> TransportUrl:
        parts = urlsplit(url)
        if parts.scheme in {"serial", "pty"}:
            if not parts.path:
                raise ValueError(
                    f"{url!r}: a serial URL needs a device path, e.g. serial:///dev/ttyUSB0"
                )
            return cls(parts.scheme, path=parts.path)
        if parts.scheme == "tcp":
            if not parts.hostname or parts.port is None:
                raise ValueError(
                    f"{url!r}: a TCP URL needs host and port, e.g. tcp://10.0.0.5:4001"
                )
            return cls("tcp", host=parts.hostname, port=parts.port)
        raise ValueError(f"{url!r}: unknown transport (use serial://, pty:// or tcp://)")

    def __str__(self) -> str:
        if self.scheme == "tcp":
            return f"tcp://{self.host}:{self.port}"
        return f"{self.scheme}://{self.path}"


async def open_transport(url: TransportUrl, *, baudrate: int = cu16.BAUDRATE) -> Streams:
    """Open the line; raises OSError (with the URL in the message) when it cannot."""
    try:
        if url.scheme == "tcp":
            return await asyncio.open_connection(url.host, url.port)
        # Imported here: the TCP path (and the tests of it) need no serial stack.
        from serial_asyncio_fast import open_serial_connection

        reader, writer = await open_serial_connection(
            url=url.path, baudrate=baudrate, bytesize=8, parity="N", stopbits=1
        )
        return reader, writer
    except OSError as exc:
        raise OSError(f"cannot open {url}: {exc}") from exc
    except Exception as exc:  # pyserial raises SerialException (not an OSError) for bad ports
        raise OSError(f"cannot open {url}: {exc}") from exc
