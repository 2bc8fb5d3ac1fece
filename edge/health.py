"""The heartbeat: outbox, drivers and the process itself, every `health_interval_s`."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable

import psutil

from edge.outbox import Outbox
from edge.supervisor import DriverSupervisor
from protocols.messages import Health, OutboxHealth
from protocols.topics import Channel


class HealthReporter:
    def __init__(self, store: str, node: str, version: str, outbox: Outbox) -> None:
        self._store = store
        self._node = node
        self._version = version
        self._outbox = outbox
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # first call starts the measurement window
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
            cpu_percent=self._process.cpu_percent(None),
            rss_bytes=self._process.memory_info().rss,
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
