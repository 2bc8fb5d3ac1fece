"""The LLRP reader driver ("llrp") and its simulated twin ("sim-llrp").

The driver connects to a reader on TCP 5084, sets it up to report AntennaID, PeakRSSI,
FirstSeen/LastSeen and TagSeenCount about every second, feeds the reads to the presence
engine and emits `RfidEvents` (item events + count deltas) every `report_interval_s`.
Connection loss is handled here: it reports DEGRADED, freezes departures (the outage guard:
a reader that is gone does not make items disappear) and reconnects with exponential
backoff; the engine keeps its state across reconnects. What every shelf reader shares (the
engine, the publish loop, metrics) is in `edge.rfid.shelf_reader`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edge.drivers.base import DeviceConfig, Driver, DriverContext, register_driver
from edge.rfid.shelf_reader import (
    MAX_BATCH,  # noqa: F401  (re-exported: older callers import it from here)
    MAX_UNSENT,  # noqa: F401
    Backoff,
    ShelfReaderDriver,
    SimReaderOptions,
    simulated_world,
)
from protocols.ids import Identifier
from protocols.llrp import (
    LLRPError,
    Message,
    MessageWriter,
    Param,
    encode_message,
    message,
    param,
    read_message,
)
from protocols.messages import DeviceKind

log = logging.getLogger(__name__)

AI_SPEC_DURATION_MS = 1_000  # one report per ~1 s read cycle
ROSPEC_ID = 0x5347  # "SG": ours, so DELETE_ROSPEC of it never touches someone else's

# LLRP reader event types (EventNotificationState)
_ANTENNA_EVENT = 8
_ROSPEC_EVENT = 2
_READER_EXCEPTION = 4
_TYPE_TAG_REPORT = 240
_TYPE_EPC96 = 13
_TYPE_EPCDATA = 241
_TYPE_ANTENNA = 1
_TYPE_RSSI = 6


class LlrpSessionError(ConnectionError):
    """The reader refused a setup step or the connection broke; the driver reconnects."""


class LlrpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=5084, ge=1, le=65535)
    antennas: dict[int, Identifier] = Field(description="antenna id -> shelf id", min_length=1)
    report_interval_s: float = Field(default=2.0, ge=1.0, le=5.0)
    snapshot_interval_s: float = Field(default=300.0, ge=10.0)
    keepalive_s: float = Field(default=5.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    presence: dict[str, Any] = Field(default_factory=dict, description="PresenceConfig fields")


class LlrpDriver(ShelfReaderDriver):
    driver_name = "llrp"

    def __init__(self, device: str, options: LlrpOptions) -> None:
        super().__init__(
            device,
            options.antennas,
            options.presence,
            report_interval_s=options.report_interval_s,
            snapshot_interval_s=options.snapshot_interval_s,
        )
        self.options = options
        self.host = options.host
        self.port = options.port

    # ------------------------------------------------------------------ connection

    async def _connection_loop(self, ctx: DriverContext) -> None:
        backoff = Backoff(self.options.backoff_initial_s, self.options.backoff_max_s)
        while True:
            try:
                await self._session(ctx)
                reason = "reader closed the connection"
            except (OSError, LLRPError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if self._reader_down(ctx, f"{self.host}:{self.port}: {reason}"):
                backoff.reset()
            log.warning(
                "LLRP reader %s: %s; reconnecting in %.1f s",
                self.device,
                reason,
                backoff.current_s,
            )
            await backoff.sleep()

    async def _session(self, ctx: DriverContext) -> None:
        async with asyncio.timeout(self.options.connect_timeout_s):
            reader, writer = await asyncio.open_connection(self.host, self.port)
        out = MessageWriter(writer)
        try:
            await self._expect_connection_event(reader)
            caps = await self._request(
                reader, out, message("GET_READER_CAPABILITIES", 0, ReqCapabilities=0)
            )
            self._read_identity(caps)
            await self._request(
                reader, out, message("DELETE_ROSPEC", 0, ROSpecID=ROSPEC_ID), allow_error=True
            )
            await self._request(reader, out, self._reader_config())
            await self._request(reader, out, message("ADD_ROSPEC", 0, self._rospec()))
            await self._request(reader, out, message("ENABLE_ROSPEC", 0, ROSpecID=ROSPEC_ID))
            await self._request(reader, out, message("START_ROSPEC", 0, ROSpecID=ROSPEC_ID))
            self._reader_up(ctx)
            log.info("LLRP reader %s connected at %s:%s", self.device, self.host, self.port)
            timeout = self.options.keepalive_s * 3
            while True:
                async with asyncio.timeout(timeout):
                    msg = await read_message(reader)
                if msg is None:
                    return
                await self._dispatch(msg, out)
        finally:
            if self.connected.is_set():
                # say goodbye (also when cancelled): a reader serves one client at a time
                with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                    writer.write(encode_message(message("CLOSE_CONNECTION", out.next_id())))
            await out.close()

    async def _expect_connection_event(self, reader: asyncio.StreamReader) -> None:
        async with asyncio.timeout(self.options.connect_timeout_s):
            msg = await read_message(reader)
        if msg is None:
            raise LlrpSessionError("reader closed the connection before greeting")
        data = (
            msg.child("ReaderEventNotificationData")
            if msg.name == "READER_EVENT_NOTIFICATION"
            else None
        )
        attempt = data.child("ConnectionAttemptEvent") if data else None
        if attempt is None:
            raise LlrpSessionError(f"expected a ConnectionAttemptEvent, got {msg.name}")
        if attempt.fields.get("Status", 0) != 0:
            raise LlrpSessionError(
                f"reader refused the connection (status {attempt.fields['Status']})"
            )

    async def _request(
        self,
        reader: asyncio.StreamReader,
        out: MessageWriter,
        msg: Message,
        *,
        allow_error: bool = False,
    ) -> Message:
        """Send a request and wait for its response, handling anything that comes between."""
        msg_id = await out.send(msg)
        while True:
            async with asyncio.timeout(self.options.connect_timeout_s):
                reply = await read_message(reader)
            if reply is None:
                raise LlrpSessionError(
                    f"connection closed while waiting for the answer to {msg.name}"
                )
            if reply.id == msg_id and reply.name in (f"{msg.name}_RESPONSE", "ERROR_MESSAGE"):
                st = reply.child("LLRPStatus")
                code = st.fields.get("Status", 0) if st else 0
                if code and not allow_error:
                    detail = st.fields.get("ErrorDescription", "") if st else ""
                    raise LlrpSessionError(f"{msg.name} failed: status {code} {detail}".strip())
                return reply
            await self._dispatch(reply, out)

    def _read_identity(self, caps: Message) -> None:
        general = caps.child("GeneralDeviceCapabilities")
        if general is not None:
            self.model = f"{general.fields.get('DeviceManufacturer')}/{general.fields.get('Model')}"
            self.firmware = str(general.fields.get("FirmwareVersion", ""))[:64] or None

    def _reader_config(self) -> Message:
        events = param(
            "ReaderEventNotificationSpec",
            *(
                param("EventNotificationState", ReaderEventType=t, NotificationEnabled=True)
                for t in (_ROSPEC_EVENT, _READER_EXCEPTION, _ANTENNA_EVENT)
            ),
        )
        keepalive = param("KeepAliveSpec", Trigger=1, Interval=int(self.options.keepalive_s * 1000))
        return message("SET_READER_CONFIG", 0, events, keepalive, ResetToFactoryDefaults=False)

    def _rospec(self) -> Param:
        selector = param(
            "TagReportContentSelector",
            EnableAntennaID=True,
            EnablePeakRSSI=True,
            EnableFirstSeenTimestamp=True,
            EnableLastSeenTimestamp=True,
            EnableTagSeenCount=True,
            EnableChannelIndex=True,
        )
        return param(
            "ROSpec",
            param(
                "ROBoundarySpec",
                param("ROSpecStartTrigger", Trigger=0),  # null: START_ROSPEC starts it
                param("ROSpecStopTrigger", Trigger=0, DurationTriggerValue=0),
            ),
            param(
                "AISpec",
                param("AISpecStopTrigger", Trigger=1, DurationTriggerValue=AI_SPEC_DURATION_MS),
                param("InventoryParameterSpec", InventoryParameterSpecID=1, AirProtocolID=1),
                AntennaIDs=[0],  # all antennas; unmapped ones are counted and ignored
            ),
            # report at the end of each AISpec, i.e. once per read cycle
            param("ROReportSpec", selector, Trigger=1, N=0),
            ROSpecID=ROSPEC_ID,
            Priority=0,
            ROSpecCurrentState=0,
        )

    async def _dispatch(self, msg: Message, out: MessageWriter) -> None:
        name = msg.name
        if name == "RO_ACCESS_REPORT":
            self._feed(msg)
        elif name == "KEEPALIVE":
            await out.send(message("KEEPALIVE_ACK", msg.id))
        elif name == "READER_EVENT_NOTIFICATION":
            self._reader_event(msg)
        elif name == "ERROR_MESSAGE":
            st = msg.child("LLRPStatus")
            log.warning(
                "LLRP reader %s reports an error: %s", self.device, st.fields if st else msg
            )
        else:
            log.debug("LLRP reader %s: ignoring %s", self.device, name)

    def _feed(self, report: Message) -> None:
        now = time.time()
        observe = self.engine.observe
        for tag in report.children:
            if tag.type != _TYPE_TAG_REPORT or not isinstance(tag, Param):
                continue
            epc: bytes | None = None
            antenna = 0
            rssi = -80.0  # readers asked for PeakRSSI always send it; a weak default otherwise
            for p in tag.children:
                if not isinstance(p, Param):
                    continue
                t = p.type
                if t == _TYPE_EPC96:
                    epc = p.fields["EPC"]
                elif t == _TYPE_EPCDATA:
                    epc = p.fields.get("EPC")
                elif t == _TYPE_ANTENNA:
                    antenna = p.fields["Value"]
                elif t == _TYPE_RSSI:
                    rssi = float(p.fields["Value"])
            if epc:
                observe(epc.hex().upper(), antenna, rssi, now)

    def _reader_event(self, msg: Message) -> None:
        data = msg.child("ReaderEventNotificationData")
        if data is None:
            return
        antenna_event = data.child("AntennaEvent")
        if antenna_event is not None:
            antenna = int(antenna_event.fields.get("AntennaID", 0))
            up = antenna_event.fields.get("Trigger") == 1
            self.engine.set_antenna_up(antenna, up, time.time())
            log.warning(
                "LLRP reader %s: antenna %s %s", self.device, antenna, "up" if up else "down"
            )
        if data.child("ConnectionCloseEvent") is not None:
            raise LlrpSessionError("the reader is closing the connection")
        exception = data.child("ReaderExceptionEvent")
        if exception is not None:
            log.warning(
                "LLRP reader %s exception: %s", self.device, exception.fields.get("Message")
            )


def _llrp_factory(config: DeviceConfig) -> Driver:
    return LlrpDriver(config.id, LlrpOptions.model_validate(config.options))


register_driver("llrp", DeviceKind.RFID_READER, _llrp_factory)


# ---------------------------------------------------------------------- simulated twin


class SimLlrpOptions(SimReaderOptions):
    """sim-llrp: the simulated reader's tag population."""


class SimLlrpDriver(LlrpDriver):
    """The same driver, talking LLRP over TCP to a simulated reader it starts itself."""

    driver_name = "sim-llrp"

    def __init__(self, device: str, options: SimLlrpOptions) -> None:
        from simulators.llrp.reader import SimulatedReader

        world = simulated_world(options)
        self.simulator = SimulatedReader(world, cycle_s=options.cycle_s)
        super().__init__(
            device,
            LlrpOptions(
                port=1,  # replaced by the simulator's port once it listens
                antennas=world.shelves(),
                report_interval_s=options.report_interval_s,
                presence=options.presence,
            ),
        )

    async def run(self, ctx: DriverContext) -> None:
        await self.simulator.start()
        self.port = self.simulator.port
        try:
            await super().run(ctx)
        finally:
            with contextlib.suppress(Exception):
                await self.simulator.stop()


def _sim_factory(config: DeviceConfig) -> Driver:
    return SimLlrpDriver(config.id, SimLlrpOptions.model_validate(config.options))


register_driver("sim-llrp", DeviceKind.RFID_READER, _sim_factory)
