"""The heartbeat: outbox, drivers and the process itself, every `health_interval_s`."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from typing import Any

from edge.outbox import Outbox
from edge.supervisor import DriverSupervisor
from protocols.messages import Health, OutboxHealth
from protocols.topics import Channel


class ProcessStats:
    """This process's CPU share and resident memory, from the kernel directly: psutil
    would add about 1 MB to a daemon whose footprint is budgeted (docs/edge.md), for two
    numbers. psutil (a dependency anyway) is imported only where /proc/self/statm is not
    there to read (not Linux)."""

    STATM = "/proc/self/statm"

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._psutil: Any = None
        if not os.path.exists(self.STATM):
            import psutil

            self._psutil = psutil.Process()
        self._cpu_s = self._cpu_seconds()
        self._at = time.monotonic()

    @staticmethod
    def _cpu_seconds() -> float:
        times = os.times()
        return times.user + times.system  # this process only, as psutil counts it

    def cpu_percent(self) -> float:
        """% of one core since the last call (or since creation), as psutil's
        `Process.cpu_percent(None)`: over 100 when more than one core was busy."""
        cpu_s, at = self._cpu_seconds(), time.monotonic()
        spent, elapsed = cpu_s - self._cpu_s, at - self._at
        self._cpu_s, self._at = cpu_s, at
        return 100.0 * spent / elapsed if elapsed > 0 else 0.0

    def rss_bytes(self) -> int:
        if self._psutil is not None:
            return int(self._psutil.memory_info().rss)
        with open(self.STATM) as statm:
            return int(statm.read().split()[1]) * self._page


class HealthReporter:
    def __init__(self, store: str, node: str, version: str, outbox: Outbox) -> None:
        self._store = store
        self._node = node
        self._version = version
        self._outbox = outbox
        self._process = ProcessStats()  # its creation starts the CPU measurement window
        self._started = time.monotonic()

    def build(self, bd_seq: int, drivers: Iterable[DriverSupervisor]) -> Health:
        stats = self._outbox.stats()
        try:
            disk_free = shutil.disk_usage(self._outbox.path.parent).free
        except OSError:
            disk_free = 0
        return Health(
            store=self._store,
            node=self._node,
            seq=self._outbox.next_seq(Channel.HEALTH.value),
            version=self._version,
            bd_seq=bd_seq,
            uptime_s=time.monotonic() - self._started,
            cpu_percent=self._process.cpu_percent(),
            rss_bytes=self._process.rss_bytes(),
            disk_free_bytes=disk_free,
            outbox=OutboxHealth(
                depth=stats.depth,
                bytes=stats.bytes,
                capacity_bytes=stats.capacity_bytes,
                oldest_age_s=stats.oldest_age_s,
                dropped=stats.dropped,
            ),
            drivers=[driver.health() for driver in drivers],
        )
