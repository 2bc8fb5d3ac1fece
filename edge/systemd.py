"""sd_notify, by hand.

The protocol is one datagram of `KEY=VALUE` lines to the unix socket named in
$NOTIFY_SOCKET (a leading '@' means the Linux abstract namespace). That is about fifteen
lines of code, so we write them rather than pull in a native dependency (libsystemd /
python-systemd) that would have to be built for every Pi image.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str, *, environ: dict[str, str] | None = None) -> bool:
    """Send `state` (e.g. "READY=1") to systemd; False when not run under systemd."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("sd_notify(%s) failed: %s", state, exc)
        return False
    return True


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Half of systemd's WatchdogSec (the recommended ping period), if a watchdog is set."""
    env = environ if environ is not None else os.environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.1, int(usec) / 2_000_000)
    except ValueError:
        return None


async def watchdog(interval: float) -> None:
    """Ping WATCHDOG=1 from the event loop: if the loop hangs, the pings stop and systemd
    restarts the daemon."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
