"""A simulated LLRP reader: an asyncio TCP server any LLRP client can talk to.

It answers capabilities, config and ROSpec/AccessSpec messages, sends an RO_ACCESS_REPORT
per read cycle (about every second) while a ROSpec is active, keepalives when configured,
and AntennaEvents when an antenna fails or comes back. It can drop every connection, like a
reader that reboots or a switch that flaps. What it reads comes from a `World`, which also
keeps the ground truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from protocols.llrp import (
    LLRPError,
    Message,
    MessageWriter,
    Param,
    message,
    param,
    read_message,
    status,
)
from simulators.llrp.world import TagRead, World

log = logging.getLogger(__name__)

M_UNSUPPORTED_MESSAGE = 108
M_FIELD_ERROR = 100
P_INVALID = 103  # used for a ROSpec id that is unknown or taken

# content selector fields -> (TV parameter, how to get its value from a read)
_DEFAULT_SELECTOR = {
    "EnableAntennaID": True,
    "EnableChannelIndex": True,
    "EnablePeakRSSI": True,
    "EnableFirstSeenTimestamp": True,
    "EnableLastSeenTimestamp": True,
    "EnableTagSeenCount": True,
    "EnableROSpecID": False,
}

_SIMPLE_RESPONSES = {
    "SET_READER_CONFIG": "SET_READER_CONFIG_RESPONSE",
    "ADD_ACCESSSPEC": "ADD_ACCESSSPEC_RESPONSE",
    "DELETE_ACCESSSPEC": "DELETE_ACCESSSPEC_RESPONSE",
    "ENABLE_ACCESSSPEC": "ENABLE_ACCESSSPEC_RESPONSE",
    "DISABLE_ACCESSSPEC": "DISABLE_ACCESSSPEC_RESPONSE",
}


def capabilities(antennas: int) -> list[Param]:
    """What the simulated reader says it can do (shaped like a small 4-port reader)."""
    general = param(
        "GeneralDeviceCapabilities",
        param("ReceiveSensitivityTableEntry", Index=1, ReceiveSensitivity=0),
        param("GPIOCapabilities", NumGPIs=0, NumGPOs=0),
        *(
            param("PerAntennaAirProtocol", AntennaID=a, AirProtocolIDs=b"\x01")
            for a in range(1, antennas + 1)
        ),
        MaxSupportedAntennas=antennas,
        CanSetAntennaProperties=False,
        HasUTCClock=True,
        DeviceManufacturer=0,
        Model=1,
        FirmwareVersion="storegate-sim-1",
    )
    llrp = param(
        "LLRPCapabilities",
        CanReportBufferFillWarning=True,
        SupportsEventsAndReportHolding=False,
        MaxPriorityLevelSupported=1,
        MaxROSpecs=8,
        MaxSpecsPerROSpec=8,
        MaxInventoryParameterSpecsPerAISpec=1,
        MaxAccessSpecs=8,
        MaxOpSpecsPerAccessSpec=8,
    )
    band = param(
        "UHFBandCapabilities",
        *(
            param("TransmitPowerLevelTableEntry", Index=i, TransmitPowerValue=1000 + 25 * (i - 1))
            for i in range(1, 82)
        ),
        param(
            "FrequencyInformation",
            param(
                "FrequencyHopTable", HopTableID=1, Frequencies=[902750 + 500 * i for i in range(50)]
            ),
            Hopping=True,
        ),
        param(
            "C1G2UHFRFModeTable",
            param(
                "C1G2UHFRFModeTableEntry",
                ModeID=1000,
                DivideRatio=True,
                Modulation=1,
                ForwardLinkModulation=2,
                SpectralMask=2,
                BackscatterDataRate=320000,
                PIERatio=1500,
                MinTariTime=6250,
                MaxTariTime=25000,
                StepTariTime=0,
            ),
        ),
    )
    regulatory = param("RegulatoryCapabilities", band, CountryCode=840, CommunicationsStandard=1)
    c1g2 = param("C1G2LLRPCapabilities", SupportsBlockWrite=True, MaxSelectFiltersPerQuery=2)
    return [status(), general, llrp, regulatory, c1g2]


@dataclass(slots=True)
class _ROSpec:
    spec: Param
    state: int = 0  # 0 disabled, 1 inactive, 2 active (LLRP ROSpecState)

    @property
    def id(self) -> int:
        return int(self.spec.fields.get("ROSpecID", 0))

    def immediate_start(self) -> bool:
        boundary = self.spec.child("ROBoundarySpec")
        trigger = boundary.child("ROSpecStartTrigger") if boundary else None
        return bool(trigger and trigger.fields.get("Trigger") == 1)

    def antennas(self) -> set[int] | None:
        ids: set[int] = set()
        for ai in self.spec.children_named("AISpec"):
            ids.update(ai.fields.get("AntennaIDs", []))
        return None if not ids or 0 in ids else ids

    def selector(self) -> dict[str, bool]:
        report = self.spec.child("ROReportSpec")
        chosen = report.child("TagReportContentSelector") if report else None
        if chosen is None:
            return dict(_DEFAULT_SELECTOR)
        return {k: bool(v) for k, v in chosen.fields.items()}


@dataclass(eq=False)
class _Session:
    writer: MessageWriter
    transport: asyncio.StreamWriter
    rospecs: dict[int, _ROSpec] = field(default_factory=dict)
    keepalive: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, msg: Message) -> None:
        async with self.lock:
            await self.writer.send(msg)


def tag_report(reads: list[TagRead], selector: dict[str, bool], rospec_id: int) -> Message:
    entries: list[Param] = []
    for read in reads:
        children = [param("EPC96", EPC=bytes.fromhex(read.epc))]
        if selector.get("EnableROSpecID"):
            children.append(param("ROSpecID", Value=rospec_id))
        if selector.get("EnableAntennaID"):
            children.append(param("AntennaID", Value=read.antenna))
        if selector.get("EnablePeakRSSI"):
            children.append(param("PeakRSSI", Value=read.rssi))
        if selector.get("EnableChannelIndex"):
            children.append(param("ChannelIndex", Value=read.channel))
        if selector.get("EnableFirstSeenTimestamp"):
            children.append(param("FirstSeenUTC", Value=read.first_seen_us))
        if selector.get("EnableLastSeenTimestamp"):
            children.append(param("LastSeenUTC", Value=read.last_seen_us))
        if selector.get("EnableTagSeenCount"):
            children.append(param("TagSeenCount", Value=read.count))
        entries.append(param("TagReportData", *children))
    return message("RO_ACCESS_REPORT", 0, *entries)


class SimulatedReader:
    """`async with SimulatedReader(world) as reader:` serves on `reader.port`."""

    def __init__(
        self,
        world: World | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        cycle_s: float = 1.0,
    ) -> None:
        self.world = world or World()
        self.host = host
        self.port = port
        self.cycle_s = cycle_s
        self.reports_sent = 0
        self.reads_sent = 0
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._inventory: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._inventory = asyncio.create_task(self._inventory_loop(), name="llrp-sim-inventory")

    async def stop(self) -> None:
        if self._inventory:
            self._inventory.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._inventory
        if self._server:
            self._server.close()
        await self.drop_connections()
        if self._server:
            # Python 3.11's wait_closed waits for every accepted connection, including one
            # whose handler has not started yet (or a client socket leaked by a cancelled
            # open_connection): a stopping simulator must not hang on that.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()

    async def __aenter__(self) -> SimulatedReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ faults

    async def drop_connections(self) -> None:
        """Cut every client off without a goodbye (a reboot, a flapping switch)."""
        for session in list(self._sessions):
            if session.keepalive:
                session.keepalive.cancel()
            session.transport.transport.abort()
        self._sessions.clear()

    async def fail_antenna(self, antenna: int) -> None:
        self.world.down.add(antenna)
        await self._broadcast(self._antenna_event(antenna, connected=False))

    async def restore_antenna(self, antenna: int) -> None:
        self.world.down.discard(antenna)
        await self._broadcast(self._antenna_event(antenna, connected=True))

    @staticmethod
    def _antenna_event(antenna: int, *, connected: bool) -> Message:
        return _event(param("AntennaEvent", Trigger=1 if connected else 0, AntennaID=antenna))

    async def _broadcast(self, msg: Message) -> None:
        for session in list(self._sessions):
            with contextlib.suppress(ConnectionError, OSError):
                await session.send(Message(msg.type, 0, msg.fields, msg.children))

    # ------------------------------------------------------------------ protocol

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(MessageWriter(writer), writer)
        self._sessions.add(session)
        try:
            await session.send(_event(param("ConnectionAttemptEvent", Status=0)))
            while True:
                try:
                    msg = await read_message(reader)
                except LLRPError as exc:
                    log.warning("simulated reader: bad message from client: %s", exc)
                    await session.send(message("ERROR_MESSAGE", 0, status(M_FIELD_ERROR, str(exc))))
                    continue
                if msg is None:
                    return
                if not await self._handle(session, msg):
                    return
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            return  # the client went away; nothing to tell it
        finally:
            self._sessions.discard(session)
            if session.keepalive:
                session.keepalive.cancel()
            writer.close()

    async def _handle(self, session: _Session, msg: Message) -> bool:
        name = msg.name
        reply: Message
        if name == "GET_READER_CAPABILITIES":
            reply = message(
                "GET_READER_CAPABILITIES_RESPONSE",
                msg.id,
                *capabilities(self.world.config.antennas),
            )
        elif name == "GET_READER_CONFIG":
            reply = message("GET_READER_CONFIG_RESPONSE", msg.id, *self._config())
        elif name in _SIMPLE_RESPONSES:
            if name == "SET_READER_CONFIG":
                self._configure_keepalive(session, msg)
            reply = message(_SIMPLE_RESPONSES[name], msg.id, status())
        elif name in (
            "ADD_ROSPEC",
            "DELETE_ROSPEC",
            "ENABLE_ROSPEC",
            "DISABLE_ROSPEC",
            "START_ROSPEC",
            "STOP_ROSPEC",
        ):
            reply = message(f"{name}_RESPONSE", msg.id, self._rospec(session, msg))
        elif name == "GET_ROSPECS":
            specs = []
            for ro in session.rospecs.values():
                ro.spec.fields["ROSpecCurrentState"] = ro.state
                specs.append(ro.spec)
            reply = message("GET_ROSPECS_RESPONSE", msg.id, status(), *specs)
        elif name == "GET_ACCESSSPECS":
            reply = message("GET_ACCESSSPECS_RESPONSE", msg.id, status())
        elif name == "KEEPALIVE_ACK" or name == "ENABLE_EVENTS_AND_REPORTS":
            return True
        elif name == "CLOSE_CONNECTION":
            await session.send(message("CLOSE_CONNECTION_RESPONSE", msg.id, status()))
            return False
        else:
            reply = message(
                "ERROR_MESSAGE",
                msg.id,
                status(M_UNSUPPORTED_MESSAGE, f"unsupported message type {msg.type}"),
            )
        await session.send(reply)
        return True

    def _config(self) -> list[Param]:
        antennas = range(1, self.world.config.antennas + 1)
        return [
            status(),
            param("Identification", IDType=0, ReaderID=b"\x00\x16\x25\xff\xfe\x00\x00\x01"),
            *(
                param(
                    "AntennaProperties",
                    AntennaConnected=a not in self.world.down,
                    AntennaID=a,
                    AntennaGain=0,
                )
                for a in antennas
            ),
            param("KeepAliveSpec", Trigger=0, Interval=0),
        ]

    def _configure_keepalive(self, session: _Session, msg: Message) -> None:
        spec = msg.child("KeepAliveSpec")
        if spec is None:
            return
        if session.keepalive:
            session.keepalive.cancel()
            session.keepalive = None
        interval_ms = int(spec.fields.get("Interval", 0))
        if spec.fields.get("Trigger") == 1 and interval_ms > 0:
            session.keepalive = asyncio.create_task(self._keepalives(session, interval_ms / 1000))

    async def _keepalives(self, session: _Session, interval: float) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                await asyncio.sleep(interval)
                await session.send(message("KEEPALIVE"))

    def _rospec(self, session: _Session, msg: Message) -> Param:
        name = msg.name
        if name == "ADD_ROSPEC":
            spec = msg.child("ROSpec")
            if spec is None:
                return status(P_INVALID, "ADD_ROSPEC without a ROSpec")
            ro = _ROSpec(spec)
            if ro.id == 0 or ro.id in session.rospecs:
                return status(P_INVALID, f"ROSpec id {ro.id} is invalid or already used")
            session.rospecs[ro.id] = ro
            return status()
        rospec_id = int(msg.fields.get("ROSpecID", 0))
        targets = (
            list(session.rospecs.values())
            if rospec_id == 0
            else [session.rospecs[rospec_id]]
            if rospec_id in session.rospecs
            else []
        )
        if not targets and not (name == "DELETE_ROSPEC" and rospec_id == 0):
            return status(P_INVALID, f"no ROSpec {rospec_id}")
        for ro in targets:
            if name == "DELETE_ROSPEC":
                del session.rospecs[ro.id]
            elif name == "ENABLE_ROSPEC":
                ro.state = 2 if ro.immediate_start() else 1
            elif name == "DISABLE_ROSPEC":
                ro.state = 0
            elif name == "START_ROSPEC":
                if ro.state == 0:
                    return status(P_INVALID, f"ROSpec {ro.id} is disabled")
                ro.state = 2
            elif name == "STOP_ROSPEC":
                ro.state = 1 if ro.state else 0
        return status()

    async def _inventory_loop(self) -> None:
        next_t = time.monotonic()
        while True:
            next_t += self.cycle_s
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            reads = self.world.cycle(time.time(), self.cycle_s)
            for session in list(self._sessions):
                for ro in list(session.rospecs.values()):
                    if ro.state != 2:
                        continue
                    wanted = ro.antennas()
                    chosen = reads if wanted is None else [r for r in reads if r.antenna in wanted]
                    try:
                        await session.send(tag_report(chosen, ro.selector(), ro.id))
                    except (ConnectionError, OSError):
                        break
                    self.reports_sent += 1
                    self.reads_sent += len(chosen)


def _event(*children: Param) -> Message:
    data = param(
        "ReaderEventNotificationData",
        param("UTCTimestamp", Microseconds=int(time.time() * 1e6)),
        *children,
    )
    return message("READER_EVENT_NOTIFICATION", 0, data)
