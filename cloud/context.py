"""What the API needs from the running cloud, in one object (`app.state.cloud`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.bus import LiveBus
from cloud.config import CloudSettings
from cloud.ingest.registry import Registry
from cloud.metrics import CloudMetrics


@dataclass(slots=True)
class CloudContext:
    settings: CloudSettings
    engine: AsyncEngine
    registry: Registry
    bus: LiveBus
    metrics: CloudMetrics
    broker_connected: Callable[[], bool]
    # Why history is degraded (sink down, spool growing); blocking, called in a thread.
    history_problems: Callable[[], list[str]] | None = None
