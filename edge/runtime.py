"""The edge daemon: wires config, outbox, uplink, drivers, commands and health together.

    drivers --emit--> outbox (SQLite) --forwarder--> uplink (paho) --> broker
                                         ^ lifecycle (status, birth, death, health) direct
    broker --cmd/+--> commands --> runtime (resync, reload-config) or a driver
    broker --committed--> forwarder: deletes what the cloud has committed

Everything runs on one asyncio loop; paho's network thread only hops callbacks onto it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from edge import systemd
from edge.commands import CommandDispatcher
from edge.config import EdgeSettings, create_drivers, load_edge_settings
from edge.drivers.base import CommandOutcome, Driver
from edge.forwarder import Forwarder
from edge.health import HealthReporter
from edge.lifecycle import Lifecycle
from edge.outbox import Outbox
from edge.supervisor import DriverSupervisor
from edge.uplink import Uplink, Will
from protocols.codec import DecodeError, decode, encode, topic_for
from protocols.messages import Command, Committed, Message, NodeState
from protocols.settings import ConfigError
from protocols.topics import Channel, NodeTopic, node_filter

log = logging.getLogger(__name__)

EXPIRY_CHECK_S = 60.0
FIRST_BIRTH_WAIT_S = 5.0


class EdgeRuntime:
    def __init__(
        self,
        settings: EdgeSettings,
        drivers: dict[str, Driver],
        *,
        version: str,
        config_path: Path | None = None,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 60.0,
        handle_signals: bool = True,
    ) -> None:
        """`handle_signals=False` for several runtimes in one process (simulators, tests):
        then `stop()` ends `run()`."""
        self.settings = settings
        self.version = version
        self.config_path = config_path
        self._initial_drivers = drivers
        self._backoff = (backoff_min_s, backoff_max_s)
        self._signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        self.stop_requested = asyncio.Event()
        self.supervisors: dict[str, DriverSupervisor] = {}
        self.bd_seq = 0
        self._tasks: list[asyncio.Task[Any]] = []

    # ------------------------------------------------------------------ main

    async def run(self) -> int:
        settings = self.settings
        box = settings.outbox
        self.outbox = Outbox(
            box.path, max_bytes=box.max_bytes, max_age_s=box.max_age_s, synchronous=box.synchronous
        )
        self.outbox.expire()
        self.lifecycle = Lifecycle(settings.store, settings.node, self.version, self.outbox)
        self.health = HealthReporter(settings.store, settings.node, self.version, self.outbox)
        self.uplink = Uplink(
            settings.mqtt,
            settings.client_id(),
            inflight=box.inflight,
            will=self._next_will,
            on_connected=self._on_connected,
            on_disconnected=self._on_disconnected,
            on_message=self._on_message,
        )
        self.forwarder = Forwarder(
            self.outbox,
            self.uplink,
            rate=box.replay_rate,
            window=box.inflight,
            confirm_timeout_s=box.confirm_timeout_s,
            on_stall=self._publish_birth,
        )
        self.commands = CommandDispatcher(
            settings.store,
            settings.node,
            self.outbox,
            runtime_commands={"resync": self._resync, "reload-config": self._reload_config},
            checks={"reload-config": self._check_config},
            drivers=lambda: self.supervisors,
            on_ack=self.forwarder.wake,
        )
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.add_signal_handler(sig, self.stop_requested.set)
        try:
            for device_id, driver in self._initial_drivers.items():
                self._start_driver(device_id, driver, settings)
            self._spawn(self.forwarder.run())
            self._spawn(self.forwarder.watch_confirmations())
            self._spawn(self._heartbeat())
            self._spawn(self._expire_loop())
            if (interval := systemd.watchdog_interval()) is not None:
                self._spawn(systemd.watchdog(interval))
            await self._wait_for_identities()
            self.uplink.start()
            systemd.notify("READY=1")
            log.info(
                "edge %s/%s running with %d device(s)",
                settings.store,
                settings.node,
                len(self.supervisors),
            )
            await self.stop_requested.wait()
            systemd.notify("STOPPING=1")
            await self._shutdown()
        finally:
            for sig in self._signals:
                loop.remove_signal_handler(sig)
            # Also reached when start-up fails half-way: leave no task or thread behind.
            for supervisor in self.supervisors.values():
                await supervisor.stop()
            await self.uplink.stop()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.outbox.close()
        return 0

    def stop(self) -> None:
        self.stop_requested.set()

    async def _wait_for_identities(self) -> None:
        """Give the drivers a moment to learn their devices' model and firmware (an LLRP
        reader's capabilities), so the first birth carries them; a device that does not
        answer holds the node back at most FIRST_BIRTH_WAIT_S."""
        waits = [
            asyncio.create_task(supervisor.driver.identified())
            for supervisor in self.supervisors.values()
        ]
        if not waits:
            return
        _, pending = await asyncio.wait(waits, timeout=FIRST_BIRTH_WAIT_S)
        for task in pending:
            task.cancel()
        if pending:
            log.info("first birth without the identity of %d device(s)", len(pending))

    async def _shutdown(self) -> None:
        log.info("shutting down")
        for supervisor in list(self.supervisors.values()):
            await supervisor.stop()
        await self.commands.drain(within_s=1.0)
        flush_s = self.settings.shutdown_flush_s
        if self.uplink.connected.is_set():
            flushed = await self.forwarder.flush(flush_s)
            if not flushed:
                log.warning(
                    "outbox not empty after %.1f s; %d kept for next start",
                    flush_s,
                    self.outbox.depth,
                )
            goodbyes = [
                self._publish(self.lifecycle.death(self.bd_seq)),
                self._publish(
                    self.lifecycle.status(NodeState.OFFLINE, self.bd_seq, reason="shutdown"),
                    retain=True,
                ),
            ]
            await asyncio.wait(goodbyes, timeout=max(1.0, flush_s))
        await self.uplink.stop()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(coroutine))

    # ------------------------------------------------------------------ drivers

    def _start_driver(self, device_id: str, driver: Driver, settings: EdgeSettings) -> None:
        config = next(d for d in settings.devices if d.id == device_id)
        supervisor = DriverSupervisor(
            config,
            driver,
            store=settings.store,
            node=settings.node,
            outbox=self.outbox,
            on_emit=self.forwarder.wake,
            backoff_min_s=self._backoff[0],
            backoff_max_s=self._backoff[1],
        )
        self.supervisors[device_id] = supervisor
        supervisor.start()

    # ------------------------------------------------------------------ lifecycle

    def _next_will(self) -> Will:
        # paho's network thread, right before CONNECT: a new connection, a new bd_seq.
        self.bd_seq = self.outbox.next_bd_seq()
        topic, payload = self.lifecycle.will(self.bd_seq)
        return Will(topic, payload)

    def _on_connected(self, session_present: bool) -> None:
        store, node = self.settings.store, self.settings.node
        self.uplink.subscribe(node_filter(store, node, Channel.CMD))
        self.uplink.subscribe(str(NodeTopic(store, node, Channel.COMMITTED)))
        self._publish(self.lifecycle.status(NodeState.ONLINE, self.bd_seq), retain=True)
        self._publish_birth()
        # Whatever the cloud has not confirmed may be lost with the old connection (or the
        # broker); the birth just told the cloud from which seq to expect it again.
        self.forwarder.rewind("reconnected")
        self.forwarder.ready.set()

    def _on_disconnected(self) -> None:
        self.forwarder.ready.clear()

    def _publish_birth(self) -> int:
        # On every connect, on a resync command, and when the cloud's confirmations stall
        # (the forwarder's on_stall, only while connected): it lists what the outbox holds.
        births = self.lifecycle.birth(self.bd_seq, self.supervisors.values())
        for part in births:
            self._publish(part)
        return births[0].seq

    def _publish(self, message: Message, *, retain: bool = False) -> asyncio.Future[None]:
        future = self.uplink.publish(topic_for(message), encode(message), qos=1, retain=retain)
        future.add_done_callback(_ignore_result)
        return future

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self._committed_topic:
            self._on_committed(payload)
        else:
            self.commands.handle(topic, payload)

    @property
    def _committed_topic(self) -> str:
        return str(NodeTopic(self.settings.store, self.settings.node, Channel.COMMITTED))

    def _on_committed(self, payload: bytes) -> None:
        try:
            message = decode(payload, topic=self._committed_topic, expect=Committed)
        except DecodeError as exc:
            log.error("unreadable committed mark from the cloud, ignored: %s", exc)
            return
        if isinstance(message, Committed):
            self.forwarder.confirm({mark.stream: mark.seq for mark in message.streams})

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval_s)
            # A stale heartbeat is worthless: not queued. Not built either while offline:
            # building takes the stream's next seq, and a seq never sent is a gap (and a
            # dedup mark) at the cloud.
            if self.uplink.connected.is_set():
                self._publish(self.health.build(self.bd_seq, self.supervisors.values()))

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(min(EXPIRY_CHECK_S, self.settings.outbox.max_age_s / 10))
            if expired := self.outbox.expire():
                log.warning("dropped %d expired outbox message(s)", expired)

    # ------------------------------------------------------------------ commands

    async def _resync(self, command: Command) -> CommandOutcome:
        if not self.uplink.connected.is_set():
            return CommandOutcome(False, "not connected")
        return CommandOutcome(True, result={"birth_seq": self._publish_birth()})

    def _check_config(self, command: Command) -> str | None:
        try:
            create_drivers(load_edge_settings(self.config_path), str(self.config_path))
        except ConfigError as exc:
            return str(exc)
        return None

    async def _reload_config(self, command: Command) -> CommandOutcome:
        try:
            new = load_edge_settings(self.config_path)
            new_drivers = create_drivers(new, str(self.config_path))
        except ConfigError as exc:
            return CommandOutcome(False, str(exc))
        old = self.settings
        restart_required = [
            name
            for name in ("store", "node", "mqtt", "outbox")
            if getattr(old, name) != getattr(new, name)
        ]
        old_devices = {d.id: d for d in old.devices}
        new_devices = {d.id: d for d in new.devices}
        changed = sorted(
            i for i in old_devices if i in new_devices and old_devices[i] != new_devices[i]
        )
        removed = sorted(set(old_devices) - set(new_devices))
        added = sorted(set(new_devices) - set(old_devices))
        for device_id in changed + removed:
            await self.supervisors.pop(device_id).stop()
        self.settings = old.model_copy(
            update={"devices": new.devices, "health_interval_s": new.health_interval_s}
        )
        for device_id in changed + added:
            self._start_driver(device_id, new_drivers[device_id], self.settings)
        log.info("config reloaded: changed %s, added %s, removed %s", changed, added, removed)
        return CommandOutcome(
            True,
            result={
                "changed": list(changed),
                "added": list(added),
                "removed": list(removed),
                "restart_required": list(restart_required),
            },
        )


def _ignore_result(future: asyncio.Future[None]) -> None:
    # Lifecycle messages are fire-and-forget at our level (paho resends them); retrieve the
    # exception so asyncio does not log "exception was never retrieved" on shutdown.
    if not future.cancelled():
        future.exception()
