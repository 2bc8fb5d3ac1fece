"""Driver supervision: each driver's `run()` in its own task, restarted with backoff.

A driver that raises goes to BACKOFF with its error, waits an exponentially growing,
jittered delay (0.5 s doubling to 60 s) and runs again; a run that lasted longer than the
maximum delay resets the delay. Restarts are counted for the heartbeat. Nothing a driver
does can stop the daemon: the supervisor catches everything except cancellation.

The supervisor is also the driver's `DriverContext`: `emit` stamps the envelope, hands the
message to the outbox (which assigns the stream seq in the same transaction that stores
it) and wakes the forwarder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from edge.drivers.base import DeviceConfig, Driver, Priority
from edge.outbox import Outbox
from protocols.codec import encode, topic_for
from protocols.messages import DeviceInfo, DriverHealth, DriverState, Message

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 60.0


def backoff_delay(
    failures: int, *, low: float = BACKOFF_MIN_S, high: float = BACKOFF_MAX_S
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped at `high`."""
    ceiling = min(high, low * 2 ** max(0, failures - 1))
    return float(ceiling / 2 + random.uniform(0, ceiling / 2))


class DriverSupervisor:
    """Runs one driver and is its DriverContext."""

    def __init__(
        self,
        config: DeviceConfig,
        driver: Driver,
        *,
        store: str,
        node: str,
        outbox: Outbox,
        on_emit: Callable[[], None],
        backoff_min_s: float = BACKOFF_MIN_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.config = config
        self.driver = driver
        self._store = store
        self._node = node
        self._outbox = outbox
        self._on_emit = on_emit
        self._backoff = (backoff_min_s, backoff_max_s)
        self.state = DriverState.STARTING
        self.last_error: str | None = None
        self.restarts = 0
        self.emitted = 0
        self._rate_mark = (time.monotonic(), 0)
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ DriverContext

    @property
    def store(self) -> str:
        return self._store

    @property
    def node(self) -> str:
        return self._node

    def emit(
        self, message_type: type[M], /, *, priority: Priority = Priority.EVENT, **fields: Any
    ) -> M:
        draft = message_type(store=self._store, node=self._node, seq=0, **fields)
        built: list[M] = []

        def build(seq: int) -> tuple[str, bytes]:
            message = draft.model_copy(update={"seq": seq})
            built.append(message)
            return topic_for(message), encode(message)

        self._outbox.append(draft.stream, priority, build)
        self.emitted += 1
        self._on_emit()
        return built[0]

    def set_state(self, state: DriverState, error: str | None = None) -> None:
        if state is not self.state:
            log.info("%s: %s%s", self.config.id, state, f" ({error})" if error else "")
        self.state = state
        if error is not None:
            self.last_error = error[:500]

    # ------------------------------------------------------------ supervision

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"driver:{self.config.id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.state = DriverState.STOPPED

    async def _supervise(self) -> None:
        failures = 0
        while True:
            # RUNNING until the driver says otherwise (DEGRADED with a reason, ...).
            self.state = DriverState.RUNNING
            started = time.monotonic()
            try:
                await self.driver.run(self)
                error = "run() returned; drivers run until cancelled"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a driver failing must never take the daemon down
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if time.monotonic() - started > self._backoff[1]:
                failures = 0
            failures += 1
            self.restarts += 1
            delay = backoff_delay(failures, low=self._backoff[0], high=self._backoff[1])
            log.warning(
                "%s failed: %s; restart #%d in %.1f s", self.config.id, error, self.restarts, delay
            )
            # FAILED once the delay has reached its cap: the device keeps failing.
            at_cap = self._backoff[0] * 2 ** (failures - 1) >= self._backoff[1]
            self.state = DriverState.FAILED if at_cap else DriverState.BACKOFF
            self.last_error = error[:500]
            await asyncio.sleep(delay)

    # ------------------------------------------------------------ reporting

    def info(self) -> DeviceInfo:
        try:
            info = self.driver.info()
        except Exception:  # info() is the driver's code: never let it break a birth
            log.exception("%s: info() failed", self.config.id)
            info = DeviceInfo(
                device=self.config.id, kind=self.config.kind, driver=self.config.driver
            )
        return info.model_copy(update={"state": self.state})

    def health(self) -> DriverHealth:
        now = time.monotonic()
        since, count = self._rate_mark
        rate = (self.emitted - count) / (now - since) if now > since else 0.0
        self._rate_mark = (now, self.emitted)
        try:
            metrics = {str(k): float(v) for k, v in self.driver.metrics().items()}
        except Exception as exc:
            metrics = {}
            log.warning("%s: metrics() failed: %s", self.config.id, exc)
        return DriverHealth(
            device=self.config.id,
            kind=self.config.kind,
            state=self.state,
            events_per_s=max(0.0, rate),
            restarts=self.restarts,
            last_error=self.last_error,
            metrics=metrics,
        )
