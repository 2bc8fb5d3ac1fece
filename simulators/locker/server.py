"""Serve a simulated CU16 bank over a real pty or TCP, plus a keypad/QR scanner line.

The pty is a real pseudo-terminal (`os.openpty`): the driver opens the slave path as a
serial port with pyserial, exactly as it opens /dev/ttyUSB0 on a store node. TCP mode is
what an RS-485-to-Ethernet bridge looks like (raw bytes on a socket).

The keypad is a second pty that behaves like a USB keypad / QR scanner in serial (CDC)
mode: every entry arrives as one line of ASCII ending in CR LF. `enter_code()` types a line
on it. That is the only way a code reaches the driver: over bytes, like on a store floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import Callable
from dataclasses import dataclass

from protocols import cu16
from simulators.locker.board import LockerBank

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pty:
    master: int
    slave: int  # kept open so the master never sees EIO while the driver reconnects
    path: str

    @classmethod
    def open(cls) -> _Pty:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing: a serial line, not a terminal
        os.set_blocking(master, False)
        return cls(master, slave, os.ttyname(slave))

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class LockerSimulator:
    """Runs in the caller's event loop. Start with `start_pty()` and/or `start_tcp()`."""

    def __init__(self, bank: LockerBank) -> None:
        self.bank = bank
        self.dropped_writes = 0  # replies the pty could not take (nobody reading)
        self._pty: _Pty | None = None
        self._keypad: _Pty | None = None
        self._parser = cu16.FrameParser()
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ pty

    async def start_pty(self) -> str:
        """Open the board pty and the keypad pty; returns the board's serial device path."""
        self._loop = asyncio.get_running_loop()
        self._pty = _Pty.open()
        self._keypad = _Pty.open()
        self._loop.add_reader(self._pty.master, self._on_pty_readable)
        # Nobody listens to what the driver might write to the keypad; drain it anyway.
        self._loop.add_reader(self._keypad.master, self._drain_keypad)
        return self._pty.path

    @property
    def serial_path(self) -> str:
        if self._pty is None:
            raise RuntimeError("start_pty() first")
        return self._pty.path

    @property
    def keypad_path(self) -> str:
        if self._keypad is None:
            raise RuntimeError("start_pty() first")
        return self._keypad.path

    def _on_pty_readable(self) -> None:
        assert self._pty is not None
        try:
            data = os.read(self._pty.master, 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO: the slave side is between opens
        for frame in self._parser.feed(data):
            reply, delay = self.bank.reply_for(frame)
            if reply is not None:
                self._later(delay, self._write_pty, reply)

    def _write_pty(self, data: bytes) -> None:
        if self._pty is None:
            return
        try:
            os.write(self._pty.master, data)
        except OSError:
            self.dropped_writes += 1

    def _drain_keypad(self) -> None:
        assert self._keypad is not None
        with contextlib.suppress(OSError):
            os.read(self._keypad.master, 1024)

    def enter_code(self, code: str) -> None:
        """A shopper types a code (or scans a QR code) at the locker."""
        if self._keypad is None:
            raise RuntimeError("start_pty() first")
        os.write(self._keypad.master, code.encode("ascii") + b"\r\n")

    def inject_bytes(self, data: bytes) -> None:
        """Raw line noise on the board bus, outside any request."""
        self._write_pty(data)

    # ------------------------------------------------------------------ tcp

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen like an RS-485-to-Ethernet bridge; returns the bound port."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._serve_tcp, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = cu16.FrameParser()
        self._clients.add(writer)
        try:
            while data := await reader.read(1024):
                for frame in parser.feed(data):
                    reply, delay = self.bank.reply_for(frame)
                    if reply is not None:
                        if delay:
                            await asyncio.sleep(delay)
                        writer.write(reply)
                        await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    # ------------------------------------------------------------------ common

    def _later(self, delay: float, fn: Callable[[bytes], None], data: bytes) -> None:
        assert self._loop is not None
        if delay > 0:
            self._loop.call_later(delay, fn, data)
        else:
            fn(data)

    async def close(self) -> None:
        if self._loop is not None:
            for pty in (self._pty, self._keypad):
                if pty is not None:
                    self._loop.remove_reader(pty.master)
                    pty.close()
        self._pty = self._keypad = None
        if self._server is not None:
            self._server.close()  # stops listening; the bridge's open links are cut below
            for client in list(self._clients):
                client.close()
            # bounded: 3.11's wait_closed also waits for connections not yet handed to us
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()
            self._server = None
