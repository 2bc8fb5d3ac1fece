"""The Zebra IoT Connector driver ("zebra-iot"; its simulated twin is in simulators/drivers).

A Zebra fixed reader (FX7500, FX9600, ATR7000) running the IoT Connector publishes its tag
data events as JSON to an MQTT broker it is configured for; this driver subscribes to that
topic and feeds every read into the presence engine. A tag data event looks like
`{"data": {"idHex": "3074...", "antenna": 1, "peakRssi": -55, "reads": 1, "eventNum": 7,
"format": "epc", ...}, "timestamp": "...", "type": "SIMPLE"}`; with batching on, a message
is a JSON array of such events. Messages that are not JSON, and events without an EPC or
antenna, are counted (`bad_events`) and skipped.

Optionally the driver also subscribes to the reader's management events topic: any
heartbeat (or other management event) there proves the reader alive, and with
`heartbeat_timeout_s` set, a reader silent on both topics for that long is reported
DEGRADED and its departures frozen (the outage guard) until it speaks again.

paho runs its own network thread and reconnects by itself (clean session: reads from while
we were away are stale, the outage guard covers the gap). Messages hop onto the event loop
through a bounded buffer (`MAX_PENDING`, the oldest dropped and counted when full).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from edge.drivers.base import DeviceConfig, Driver, DriverContext, DriverSpec
from edge.rfid.shelf_reader import (
    NO_RSSI_DBM,
    ShelfReaderDriver,
    epc_hex,
)
from protocols.ids import Identifier
from protocols.messages import DeviceKind
from protocols.mqtt import MqttSettings, connect, new_client

if TYPE_CHECKING:
    import paho.mqtt.client as paho
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

MAX_PENDING = 10_000  # MQTT messages waiting for the event loop; then the oldest go


class ZebraIotOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mqtt: MqttSettings = Field(description="the broker the reader's IoT Connector publishes to")
    password_env: str | None = Field(
        default=None, description="env var with the broker password (instead of mqtt.password)"
    )
    data_topic: str = Field(min_length=1, description="the reader's tag data event topic")
    management_topic: str | None = Field(
        default=None, description="the reader's management events topic (heartbeats)"
    )
    heartbeat_timeout_s: float | None = Field(
        default=None, gt=0, description="silent this long on both topics = reader down"
    )
    qos: Literal[0, 1] = 1
    antennas: dict[int, Identifier] = Field(description="antenna id -> shelf id", min_length=1)
    report_interval_s: float = Field(default=2.0, ge=1.0, le=5.0)
    snapshot_interval_s: float = Field(default=300.0, ge=10.0)
    presence: dict[str, Any] = Field(default_factory=dict, description="PresenceConfig fields")


def parse_tag_events(payload: bytes) -> tuple[list[tuple[str, int, float]], list[str]]:
    """One data-topic message -> (reads as (EPC hex, antenna, RSSI dBm), problems)."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return [], ["not JSON"]
    events = body if isinstance(body, list) else [body]
    reads: list[tuple[str, int, float]] = []
    problems: list[str] = []
    for event in events:
        data = event.get("data") if isinstance(event, dict) else None
        if not isinstance(data, dict):
            problems.append("event without a data object")
            continue
        fmt = data.get("format", "epc")
        if fmt != "epc":
            problems.append(f"idHex format {fmt!r} is not an EPC")
            continue
        epc = epc_hex(data.get("idHex"))
        if epc is None:
            problems.append("event without a valid idHex")
            continue
        antenna = data.get("antenna")
        if not isinstance(antenna, int) or isinstance(antenna, bool):
            problems.append("event without an integer antenna")
            continue
        rssi = data.get("peakRssi", NO_RSSI_DBM)
        if not isinstance(rssi, int | float) or isinstance(rssi, bool):
            problems.append("peakRssi is not a number")
            continue
        reads.append((epc, antenna, float(rssi)))
    return reads, problems


class ZebraIotDriver(ShelfReaderDriver):
    driver_name = "zebra-iot"
    # set by _connection_loop before paho's thread starts calling back
    _loop: asyncio.AbstractEventLoop
    _ctx: DriverContext

    def __init__(self, device: str, options: ZebraIotOptions) -> None:
        super().__init__(
            device,
            options.antennas,
            options.presence,
            report_interval_s=options.report_interval_s,
            snapshot_interval_s=options.snapshot_interval_s,
        )
        self.options = options
        self.heartbeats = 0
        self.dropped_messages = 0
        self._pending: deque[tuple[str, bytes]] = deque()
        self._pending_lock = threading.Lock()
        self._link_up = False
        self._last_heard = time.monotonic()
        self._bad_logged_at = 0.0
        self._wake = asyncio.Event()

    def _extra_metrics(self) -> dict[str, float]:
        return {
            "bad_events": float(self.bad_events),
            "heartbeats": float(self.heartbeats),
            "dropped_messages": float(self.dropped_messages),
        }

    def _settings(self) -> MqttSettings:
        settings = self.options.mqtt
        if self.options.password_env is not None:
            password = os.environ.get(self.options.password_env)
            if password is None:
                raise ValueError(f"environment variable {self.options.password_env} not set")
            settings = settings.model_copy(update={"password": SecretStr(password)})
        return settings

    # ------------------------------------------------------------------ connection

    async def _connection_loop(self, ctx: DriverContext) -> None:
        while True:
            try:
                settings = self._settings()
                break
            except ValueError as exc:  # e.g. the password's env var is not set (yet)
                self._reader_down(ctx, str(exc))
                log.warning("Zebra reader %s: %s; retrying in 5 s", self.device, exc)
                await asyncio.sleep(5.0)
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        client = new_client(settings, f"storegate-{self.device}", clean_start=True)
        self._loop, self._ctx = loop, ctx
        client.on_connect = self._connect_cb
        client.on_disconnect = self._disconnect_cb
        client.on_message = self._message_cb
        client.on_connect_fail = self._connect_fail_cb
        self._reader_down(ctx, f"connecting to {settings.describe()}")
        connect(client, settings, clean_start=True, asynchronous=True)
        client.loop_start()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
                self._wake.clear()
                self._drain(ctx)
                self._check_heartbeat(ctx)
        finally:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)

    # ------------------------------------------------------------------ paho's thread
    # only buffer and hop onto the event loop: the engine is not thread-safe

    def _connect_cb(
        self, client: paho.Client, _u: Any, _flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        self._loop.call_soon_threadsafe(self._on_link, client, True, reason, self._ctx)

    def _disconnect_cb(
        self, client: paho.Client, _u: Any, _flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        self._loop.call_soon_threadsafe(self._on_link, client, False, reason, self._ctx)

    def _connect_fail_cb(self, _c: paho.Client, _u: Any) -> None:
        self._loop.call_soon_threadsafe(self._on_connect_fail, self._ctx)

    def _message_cb(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        with self._pending_lock:
            if len(self._pending) >= MAX_PENDING:
                self._pending.popleft()
                self.dropped_messages += 1
            self._pending.append((message.topic, bytes(message.payload)))
            if len(self._pending) == 1:  # one wake-up per burst
                self._loop.call_soon_threadsafe(self._wake.set)

    # ------------------------------------------------------------------ event loop

    def _on_link(
        self, client: paho.Client, up: bool, reason: ReasonCode, ctx: DriverContext
    ) -> None:
        where = self.options.mqtt.describe()
        if up and not reason.is_failure:
            self._link_up = True
            topics: list[tuple[str, int]] = [(self.options.data_topic, self.options.qos)]
            if self.options.management_topic:
                topics.append((self.options.management_topic, self.options.qos))
            client.subscribe(topics)
            self._last_heard = time.monotonic()
            self._reader_up(ctx)
            log.info("Zebra reader %s: subscribed to %s on %s", self.device, topics, where)
            return
        was_up, self._link_up = self._link_up, False
        if not up and not was_up:
            return  # paho's disconnect right after a refused CONNECT: keep the real reason
        # a refused CONNECT (bad credentials, not authorised) names its reason code
        what = "broker refused the connection" if up else "disconnected from the broker"
        self._reader_down(ctx, f"{where}: {what}: {reason}")
        log.warning("Zebra reader %s: %s: %s; paho reconnects", self.device, what, reason)

    def _on_connect_fail(self, ctx: DriverContext) -> None:
        self._link_up = False
        where = self.options.mqtt.describe()
        self._reader_down(ctx, f"{where}: cannot reach the broker")
        log.warning("Zebra reader %s: cannot reach %s; paho retries", self.device, where)

    def _drain(self, ctx: DriverContext) -> None:
        with self._pending_lock:
            batch, self._pending = self._pending, deque()
        if not batch:
            return
        self._last_heard = time.monotonic()
        if self._link_up and not self.connected.is_set():
            self._reader_up(ctx)  # the reader speaks again after a heartbeat timeout
        now = time.time()
        observe = self.engine.observe
        for topic, payload in batch:
            if topic != self.options.data_topic:
                self._management_event(payload)
                continue
            reads, problems = parse_tag_events(payload)
            for epc, antenna, rssi in reads:
                observe(epc, antenna, rssi, now)
            if problems:
                self._count_bad(problems)

    def _management_event(self, payload: bytes) -> None:
        try:
            event = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            self._count_bad(["management event is not JSON"])
            return
        if not isinstance(event, dict):
            self._count_bad(["management event is not a JSON object"])
            return
        kind = str(event.get("type") or event.get("eventName") or "").lower()
        if kind == "heartbeat":
            self.heartbeats += 1
        else:
            log.info("Zebra reader %s management event: %.200s", self.device, event)

    def _check_heartbeat(self, ctx: DriverContext) -> None:
        timeout = self.options.heartbeat_timeout_s
        if timeout is None or not self.connected.is_set():
            return
        silent = time.monotonic() - self._last_heard
        if silent > timeout:
            self._reader_down(ctx, f"reader silent for {silent:.0f} s (no heartbeat, no reads)")
            log.warning("Zebra reader %s: no heartbeat or reads for %.0f s", self.device, silent)

    def _count_bad(self, problems: list[str]) -> None:
        self.bad_events += len(problems)
        now = time.monotonic()
        if now - self._bad_logged_at >= 10.0:  # a stream of garbage is one log line / 10 s
            self._bad_logged_at = now
            log.warning(
                "Zebra reader %s: skipped a bad event (%s); %d so far",
                self.device,
                problems[0],
                self.bad_events,
            )


def _factory(config: DeviceConfig) -> Driver:
    return ZebraIotDriver(config.id, ZebraIotOptions.model_validate(config.options))


ZEBRA_IOT_DRIVER = DriverSpec(DeviceKind.RFID_READER, _factory)
