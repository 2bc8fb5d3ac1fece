"""A simulated LLRP reader as strict as real ones: an asyncio TCP server any LLRP client
can talk to.

It follows the LLRP 1.0.1 ROSpec model: ROSpecs belong to the reader (not to a connection)
and are Disabled, Inactive or Active. ENABLE_ROSPEC makes one Inactive; its start trigger
(Null: only START_ROSPEC; Immediate: once, on enable; Periodic; GPI) makes it Active; it
runs its AISpecs in order, each until its stop trigger (Null: until the ROSpec stops;
Duration; GPI; tag observation), and ends when they are done or its own stop trigger fires
(Null: when the AISpecs are done; Duration; GPI), or on STOP_ROSPEC. A ROSpec that ended is
Inactive again: with a Null or Immediate start trigger it stays so until the client starts
it. Reports follow the ROReportSpec trigger (None: on GET_REPORT; every N TagReportData or at
the end of the AISpec / ROSpec). ROSpecEvent, AntennaEvent, GPIEvent and
ReaderExceptionEvent notifications go out when the client enabled them in
SET_READER_CONFIG; the ConnectionAttemptEvent always.

Requests it cannot honour get the LLRPStatus a real reader gives: the status code of the
LLRP 1.0.1 error table with a FieldError / nested ParameterError saying where (the checks
are in `simulators.llrp.rospec`). One client at
a time: a second one gets a failed ConnectionAttemptEvent and is closed (the first is told
with Another_Connection_Attempted). `reboot()` drops the connection and forgets every
ROSpec and setting. What it reads comes from a `World`, which also keeps the ground truth.

Not modelled: priorities and preemption (ROSpecs run side by side), AccessSpecs (accepted
and listed, never executed), RF surveys, LLRP 1.1 additions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field

from protocols.llrp import (
    LLRPError,
    LLRPFrameError,
    Message,
    MessageWriter,
    Param,
    RawParam,
    message,
    param,
    read_message,
    status,
)
from protocols.llrp.constants import (
    AISpecStopTrigger,
    ConnectionAttemptStatus,
    KeepaliveTrigger,
    ReaderEventType,
    ReportTrigger,
    ROSpecEventType,
    ROSpecState,
    ROSpecStopTrigger,
    StartTrigger,
    StatusCode,
    TagObservationTrigger,
)
from protocols.llrp.spec import CUSTOM, MESSAGE_NAMES, PARAM_NAMES
from simulators.llrp.rospec import (
    MAX_PRIORITY,
    MAX_ROSPECS,
    MAX_SPECS_PER_ROSPEC,
    NUM_GPIS,
    NUM_GPOS,
    AIPlan,
    GpiWait,
    RequestRefusedError,
    ROPlan,
    field_error,
    in_range,
    parameter_error,
    plan_rospec,
)
from simulators.llrp.world import ReaderView, TagRead, World

log = logging.getLogger(__name__)

S = StatusCode
MAX_QUEUED_MESSAGES = 10_000  # per connection; beyond it reports are dropped and counted
ACCESS_SPEC = 207  # a parameter the codec keeps raw
RO_ACCESS_REPORT = MESSAGE_NAMES["RO_ACCESS_REPORT"]
MAX_BUFFERED_TAGS = 100_000  # per ROSpec, for report trigger None without GET_REPORT

_T = PARAM_NAMES  # parameter name -> type number


def capabilities(
    antennas: int,
    *,
    manufacturer: int = 0,
    model: int = 1,
    firmware: str = "storegate-sim-1",
) -> list[Param]:
    """What the simulated reader says it can do (shaped like a small 4-port reader)."""
    general = param(
        "GeneralDeviceCapabilities",
        param("ReceiveSensitivityTableEntry", Index=1, ReceiveSensitivity=0),
        param("GPIOCapabilities", NumGPIs=NUM_GPIS, NumGPOs=NUM_GPOS),
        *(
            param("PerAntennaAirProtocol", AntennaID=a, AirProtocolIDs=b"\x01")
            for a in range(1, antennas + 1)
        ),
        MaxSupportedAntennas=antennas,
        CanSetAntennaProperties=False,
        HasUTCClock=True,
        DeviceManufacturer=manufacturer,
        Model=model,
        FirmwareVersion=firmware,
    )
    llrp = param(
        "LLRPCapabilities",
        CanReportBufferFillWarning=True,
        SupportsEventsAndReportHolding=False,
        MaxPriorityLevelSupported=MAX_PRIORITY,
        MaxROSpecs=MAX_ROSPECS,
        MaxSpecsPerROSpec=MAX_SPECS_PER_ROSPEC,
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


def tag_report(
    reads: Iterable[TagRead], selector: dict[str, bool], rospec_id: int, spec_index: int = 1
) -> Message:
    return message("RO_ACCESS_REPORT", 0, *tag_data(reads, selector, rospec_id, spec_index))


def tag_data(
    reads: Iterable[TagRead], selector: dict[str, bool], rospec_id: int, spec_index: int = 1
) -> list[Param]:
    """One TagReportData per read, with the fields the content selector enables."""
    entries: list[Param] = []
    for read in reads:
        children = [param("EPC96", EPC=bytes.fromhex(read.epc))]
        if selector.get("EnableROSpecID"):
            children.append(param("ROSpecID", Value=rospec_id))
        if selector.get("EnableSpecIndex"):
            children.append(param("SpecIndex", Value=spec_index))
        if selector.get("EnableInventoryParamSpecID"):
            children.append(param("InventoryParameterSpecID", Value=1))
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
    return entries


def tag_report_body(
    reads: Iterable[TagRead], selector: dict[str, bool], rospec_id: int, spec_index: int = 1
) -> bytes:
    """The bytes of `encode_body(tag_report(...))`, written directly: a store-sized world
    reports tens of thousands of tags a cycle, and building Param trees for them costs a
    simulator more than the reader it simulates (tests check the two agree)."""
    return b"".join(tag_report_entries(reads, selector, rospec_id, spec_index))


def tag_report_entries(
    reads: Iterable[TagRead], selector: dict[str, bool], rospec_id: int, spec_index: int = 1
) -> list[bytes]:
    """One encoded TagReportData parameter per read (what `tag_report_body` joins): the
    simulated reader buffers these until a report goes out, a bytes object per read rather
    than a dozen Param objects."""
    pack = struct.pack
    head = b""
    if selector.get("EnableROSpecID"):
        head += pack(">BI", 0x80 | 9, rospec_id)
    if selector.get("EnableSpecIndex"):
        head += pack(">BH", 0x80 | 14, spec_index)
    if selector.get("EnableInventoryParamSpecID"):
        head += pack(">BH", 0x80 | 10, 1)
    antenna = selector.get("EnableAntennaID", False)
    rssi = selector.get("EnablePeakRSSI", False)
    channel = selector.get("EnableChannelIndex", False)
    first = selector.get("EnableFirstSeenTimestamp", False)
    last = selector.get("EnableLastSeenTimestamp", False)
    count = selector.get("EnableTagSeenCount", False)
    out: list[bytes] = []
    for read in reads:
        body = b"\x8d" + bytes.fromhex(read.epc) + head
        if antenna:
            body += pack(">BH", 0x81, read.antenna)
        if rssi:
            body += pack(">Bb", 0x86, read.rssi)
        if channel:
            body += pack(">BH", 0x87, read.channel)
        if first:
            body += pack(">BQ", 0x82, read.first_seen_us)
        if last:
            body += pack(">BQ", 0x84, read.last_seen_us)
        if count:
            body += pack(">BH", 0x88, read.count)
        out.append(pack(">HH", 240, 4 + len(body)) + body)
    return out


# ---------------------------------------------------------------------- state


@dataclass(eq=False)
class _ROSpec:
    spec: Param
    plan: ROPlan
    state: ROSpecState = ROSpecState.DISABLED
    run: asyncio.Task[None] | None = None
    trigger: asyncio.Task[None] | None = None
    buffer: list[bytes] = field(default_factory=list)  # encoded TagReportData, one per read
    starts: int = 0

    @property
    def id(self) -> int:
        return int(self.spec.fields["ROSpecID"])


@dataclass(eq=False)
class _Session:
    writer: MessageWriter
    transport: asyncio.StreamWriter
    queue: asyncio.Queue[Message] = field(
        default_factory=lambda: asyncio.Queue(MAX_QUEUED_MESSAGES)
    )
    keepalive: asyncio.Task[None] | None = None
    sender: asyncio.Task[None] | None = None
    dropped: int = 0

    def post(self, msg: Message) -> None:
        """Queue a message for this client (never blocks the reader's own work)."""
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run_sender(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                msg = await self.queue.get()
                try:
                    await self.writer.send(msg)
                finally:
                    self.queue.task_done()

    def abort(self) -> None:
        for task in (self.keepalive, self.sender):
            if task:
                task.cancel()
        self.transport.transport.abort()


class SimulatedReader:
    """`async with SimulatedReader(world) as reader:` serves on `reader.port`."""

    def __init__(
        self,
        world: World | ReaderView | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        cycle_s: float = 1.0,
        *,
        manufacturer: int = 0,
        model: int = 1,
        firmware: str = "storegate-sim-1",
        empty_reports: bool = False,
    ) -> None:
        """`cycle_s`: the longest inventory round (a shorter one ends a Duration-stopped
        AISpec). `empty_reports`: send an RO_ACCESS_REPORT without tags at a report point
        that has none (readers differ; the default sends nothing)."""
        self.source: World | ReaderView = world or World()  # what it reads: a world, or its share
        self.world = self.source.world if isinstance(self.source, ReaderView) else self.source
        self.host = host
        self.port = port
        self.cycle_s = cycle_s
        self.identity = (manufacturer, model, firmware)
        self.empty_reports = empty_reports
        self.reports_sent = 0
        self.reads_sent = 0
        self.refused_connections = 0
        self.goodbyes = 0  # CLOSE_CONNECTION requests answered
        # event types this reader never sends, whatever the client enables (a firmware that
        # lacks them): a fault to inject
        self.muted_events: set[ReaderEventType] = set()
        self.boots = 1
        self.rospecs: dict[int, _ROSpec] = {}
        self.access_specs: dict[int, Param | RawParam] = {}
        self.gpi_state = dict.fromkeys(range(1, NUM_GPIS + 1), False)
        self._gpi_changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._session: _Session | None = None
        self._booting_until = 0.0
        self._reset_config()

    def _reset_config(self) -> None:
        self.events: set[ReaderEventType] = set()
        self.keepalive_ms = 0
        self.default_report: Param | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        tasks = self._forget_rospecs()
        await self.drop_connections()
        await asyncio.gather(*tasks, return_exceptions=True)
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

    # ------------------------------------------------------------------ faults and inputs

    async def drop_connections(self) -> None:
        """Cut the client off without a goodbye (a flapping switch). ROSpecs keep running."""
        if self._session is not None:
            self._session.abort()
            self._session = None

    async def reboot(self, down_s: float = 0.0) -> None:
        """Like a power cycle: the connection drops, every ROSpec, AccessSpec and setting is
        forgotten, and for `down_s` connections are closed at once."""
        self._forget_rospecs()
        self.access_specs.clear()
        self._reset_config()
        await self.drop_connections()
        self._booting_until = time.monotonic() + down_s
        self.boots += 1

    def _forget_rospecs(self) -> list[asyncio.Task[None]]:
        tasks = [t for ro in self.rospecs.values() for t in (ro.run, ro.trigger) if t]
        for task in tasks:
            task.cancel()
        self.rospecs.clear()
        return tasks

    async def fail_antenna(self, antenna: int) -> None:
        self.source.down.add(antenna)
        self._notify(ReaderEventType.ANTENNA, param("AntennaEvent", Trigger=0, AntennaID=antenna))

    async def restore_antenna(self, antenna: int) -> None:
        self.source.down.discard(antenna)
        self._notify(ReaderEventType.ANTENNA, param("AntennaEvent", Trigger=1, AntennaID=antenna))

    async def raise_exception(self, text: str) -> None:
        """A ReaderExceptionEvent, e.g. an over-temperature warning."""
        self._notify(ReaderEventType.READER_EXCEPTION, param("ReaderExceptionEvent", Message=text))

    async def set_gpi(self, port: int, state: bool) -> None:
        """A general-purpose input changes (a light barrier, a door contact)."""
        if self.gpi_state.get(port) == state:
            return
        self.gpi_state[port] = state
        self._notify(ReaderEventType.GPI, param("GPIEvent", Port=port, Event=state))
        async with self._gpi_changed:
            self._gpi_changed.notify_all()

    async def _gpi_event(self, wait: GpiWait) -> None:
        """Returns when the GPI port transitions to the awaited state."""
        async with self._gpi_changed:
            before = self.gpi_state[wait.port]
            while True:
                await self._gpi_changed.wait()
                now = self.gpi_state[wait.port]
                if now != before and now == wait.event:
                    return
                before = now

    # ------------------------------------------------------------------ connections

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        out = MessageWriter(writer)
        if time.monotonic() < self._booting_until:
            writer.transport.abort()
            return
        if self._session is not None:
            # one client at a time: the newcomer is refused, the client in charge is told
            self.refused_connections += 1
            self._session.post(
                _event(
                    param(
                        "ConnectionAttemptEvent",
                        Status=ConnectionAttemptStatus.ANOTHER_CONNECTION_ATTEMPTED,
                    )
                )
            )
            with contextlib.suppress(ConnectionError, OSError):
                await out.send(
                    _event(
                        param(
                            "ConnectionAttemptEvent",
                            Status=ConnectionAttemptStatus.FAILED_CLIENT_INITIATED_CONNECTION_EXISTS,
                        )
                    )
                )
            await out.close()
            return
        session = _Session(out, writer)
        self._session = session
        session.sender = asyncio.create_task(session.run_sender(), name="llrp-sim-send")
        self._start_keepalive(session)
        try:
            session.post(
                _event(param("ConnectionAttemptEvent", Status=ConnectionAttemptStatus.SUCCESS))
            )
            while True:
                try:
                    msg = await read_message(reader)
                except LLRPError as exc:
                    log.warning("simulated reader: bad message from client: %s", exc)
                    if isinstance(exc, LLRPFrameError):
                        return  # the stream is out of step: a reader closes it
                    session.post(message("ERROR_MESSAGE", 0, status(S.M_PARAMETER_ERROR, str(exc))))
                    continue
                if msg is None:
                    return
                if not self._handle(session, msg):
                    await self._drain(session)
                    return
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            return  # the client went away; nothing to tell it
        finally:
            if self._session is session:
                self._session = None
            session.abort()

    @staticmethod
    async def _drain(session: _Session) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await session.queue.join()
                await session.transport.drain()

    def _start_keepalive(self, session: _Session) -> None:
        if session.keepalive:
            session.keepalive.cancel()
            session.keepalive = None
        if self.keepalive_ms:
            session.keepalive = asyncio.create_task(
                self._keepalives(session, self.keepalive_ms / 1000), name="llrp-sim-keepalive"
            )

    @staticmethod
    async def _keepalives(session: _Session, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            session.post(message("KEEPALIVE"))

    def _notify(self, kind: ReaderEventType, event: Param) -> None:
        if self._session is not None and kind in self.events and kind not in self.muted_events:
            self._session.post(_event(event))

    # ------------------------------------------------------------------ requests

    def _handle(self, session: _Session, msg: Message) -> bool:
        """Answer one request; False when the connection is to be closed."""
        if msg.version != 1:
            session.post(
                message(
                    "ERROR_MESSAGE",
                    msg.id,
                    status(S.M_UNSUPPORTED_VERSION, f"LLRP version {msg.version} not supported"),
                )
            )
            return True
        name = msg.name
        if name in ("KEEPALIVE_ACK", "ENABLE_EVENTS_AND_REPORTS"):
            return True  # no answer in LLRP
        if name == "CLOSE_CONNECTION":
            self.goodbyes += 1
            session.post(message("CLOSE_CONNECTION_RESPONSE", msg.id, status()))
            return False
        if name == "GET_REPORT":
            for ro in self.rospecs.values():
                self._flush(ro, force=True)
            return True
        handler = self._handlers.get(name)
        if handler is None or not msg.known:
            session.post(
                message(
                    "ERROR_MESSAGE",
                    msg.id,
                    status(S.M_UNSUPPORTED_MESSAGE, f"unsupported message type {msg.type}"),
                )
            )
            return True
        try:
            extra = handler(self, msg)
            reply = message(f"{name}_RESPONSE", msg.id, status(), *extra)
        except RequestRefusedError as refused:
            reply = message(f"{name}_RESPONSE", msg.id, refused.status)
        session.post(reply)
        if name == "SET_READER_CONFIG":
            self._start_keepalive(session)
        return True

    def _capabilities(self, msg: Message) -> list[Param]:
        requested = int(msg.fields.get("ReqCapabilities", 0))
        if requested > 4:
            raise field_error(0, S.A_OUT_OF_RANGE, f"ReqCapabilities {requested} not in 0..4")
        manufacturer, model, firmware = self.identity
        caps = capabilities(
            self.source.config.antennas, manufacturer=manufacturer, model=model, firmware=firmware
        )[1:]
        return caps if requested == 0 else [caps[requested - 1]]

    def _get_config(self, msg: Message) -> list[Param]:
        antennas = range(1, self.source.config.antennas + 1)
        antenna = int(msg.fields.get("AntennaID", 0))
        if antenna > self.source.config.antennas:
            raise field_error(0, S.A_OUT_OF_RANGE, f"no antenna {antenna}")
        return [
            param("Identification", IDType=0, ReaderID=b"\x00\x16\x25\xff\xfe\x00\x00\x01"),
            *(
                param(
                    "AntennaProperties",
                    AntennaConnected=a not in self.source.down,
                    AntennaID=a,
                    AntennaGain=0,
                )
                for a in antennas
                if antenna in (0, a)
            ),
            param(
                "ReaderEventNotificationSpec",
                *(
                    param(
                        "EventNotificationState",
                        ReaderEventType=t,
                        NotificationEnabled=t in self.events,
                    )
                    for t in ReaderEventType
                ),
            ),
            param(
                "KeepAliveSpec",
                Trigger=KeepaliveTrigger.PERIODIC if self.keepalive_ms else KeepaliveTrigger.NULL,
                Interval=self.keepalive_ms,
            ),
            *(
                param("GPIPortCurrentState", Port=port, Enabled=True, State=int(state))
                for port, state in self.gpi_state.items()
            ),
        ]

    def _set_config(self, msg: Message) -> list[Param]:
        # check everything before changing anything: a refused request changes nothing
        antennas = self.source.config.antennas
        allowed = {
            "AntennaProperties", "AntennaConfiguration", "ReaderEventNotificationSpec",
            "ROReportSpec", "AccessReportSpec", "KeepAliveSpec", "GPOWriteData",
            "GPIPortCurrentState", "EventsAndReports",
        }  # fmt: skip
        for child in msg.children:
            if isinstance(child, RawParam) or child.type == CUSTOM:
                code = S.M_UNSUPPORTED_PARAMETER if child.type == CUSTOM else S.M_UNKNOWN_PARAMETER
                raise parameter_error(
                    [child.type], code, f"parameter {child.type} is not supported",
                    message_status=code,
                )  # fmt: skip
            if child.name not in allowed:
                raise parameter_error(
                    [child.type],
                    S.M_UNEXPECTED_PARAMETER,
                    f"{child.name} is not allowed in SET_READER_CONFIG",
                    message_status=S.M_UNEXPECTED_PARAMETER,
                )
        events: dict[ReaderEventType, bool] = {}
        spec = msg.child("ReaderEventNotificationSpec")
        if spec is not None:
            for state in spec.children_named("EventNotificationState"):
                kind = in_range(
                    state, "ReaderEventType", 0, 0, max(ReaderEventType),
                    [spec.type, state.type],
                )  # fmt: skip
                events[ReaderEventType(kind)] = bool(state.fields.get("NotificationEnabled"))
        keepalive = msg.child("KeepAliveSpec")
        keepalive_ms = self.keepalive_ms
        if keepalive is not None:
            path = [keepalive.type]
            trigger = in_range(keepalive, "Trigger", 0, 0, 1, path)
            keepalive_ms = 0
            if trigger == KeepaliveTrigger.PERIODIC:
                keepalive_ms = in_range(keepalive, "Interval", 1, 1, 2**32 - 1, path)
        for config in msg.children_named("AntennaConfiguration"):
            in_range(config, "AntennaID", 0, 0, antennas, [config.type])
        for gpo in msg.children_named("GPOWriteData"):
            in_range(gpo, "Port", 0, 1, NUM_GPOS, [gpo.type])
        report = msg.child("ROReportSpec")
        if report is not None:
            in_range(report, "Trigger", 0, 0, 2, [report.type])
        if msg.fields.get("ResetToFactoryDefaults"):
            self._reset_config()
        for kind, enabled in events.items():
            (self.events.add if enabled else self.events.discard)(kind)
        self.keepalive_ms = keepalive_ms
        if report is not None:
            self.default_report = report
        return []

    # ------------------------------------------------------------------ ROSpec messages

    def _target(self, msg: Message) -> list[_ROSpec]:
        rospec_id = int(msg.fields.get("ROSpecID", 0))
        if rospec_id == 0:
            return list(self.rospecs.values())
        ro = self.rospecs.get(rospec_id)
        if ro is None:
            raise field_error(0, S.A_INVALID, f"no ROSpec {rospec_id}")
        return [ro]

    def _add_rospec(self, msg: Message) -> list[Param]:
        specs = list(msg.children_named("ROSpec"))
        if not specs:
            raise parameter_error(
                [_T["ROSpec"]],
                S.M_MISSING_PARAMETER,
                "ADD_ROSPEC without a ROSpec",
                message_status=S.M_MISSING_PARAMETER,
            )
        spec = specs[0]
        rospec_id = int(spec.fields.get("ROSpecID", 0))
        if rospec_id in self.rospecs:
            raise parameter_error(
                [spec.type], S.A_INVALID, f"ROSpecID {rospec_id} is already in use", field=0
            )
        if len(self.rospecs) >= MAX_ROSPECS:
            raise parameter_error(
                [spec.type],
                S.M_OVERFLOW_PARAMETER,
                f"the reader holds {MAX_ROSPECS} ROSpecs already",
                message_status=S.M_OVERFLOW_PARAMETER,
            )
        plan = plan_rospec(spec, self.source.config.antennas, self.default_report)
        self.rospecs[rospec_id] = _ROSpec(spec, plan)
        return []

    def _delete_rospec(self, msg: Message) -> list[Param]:
        for ro in self._target(msg):
            self._deactivate(ro, ROSpecState.DISABLED)
            del self.rospecs[ro.id]
        return []

    def _enable_rospec(self, msg: Message) -> list[Param]:
        for ro in self._target(msg):
            if ro.state is ROSpecState.DISABLED:
                ro.state = ROSpecState.INACTIVE
                self._arm(ro)
        return []

    def _disable_rospec(self, msg: Message) -> list[Param]:
        for ro in self._target(msg):
            self._deactivate(ro, ROSpecState.DISABLED)
        return []

    def _start_rospec(self, msg: Message) -> list[Param]:
        targets = self._target(msg)
        for ro in targets:
            if ro.state is ROSpecState.DISABLED:
                raise field_error(0, S.A_INVALID, f"ROSpec {ro.id} is disabled")
        for ro in targets:
            if ro.state is ROSpecState.INACTIVE:
                self._begin(ro)
        return []

    def _stop_rospec(self, msg: Message) -> list[Param]:
        targets = self._target(msg)
        for ro in targets:
            if ro.state is not ROSpecState.ACTIVE and len(targets) == 1:
                raise field_error(0, S.A_INVALID, f"ROSpec {ro.id} is not active")
        for ro in targets:
            if ro.state is ROSpecState.ACTIVE:
                self._end(ro)
        return []

    def _get_rospecs(self, msg: Message) -> list[Param]:
        out = []
        for ro in self.rospecs.values():
            spec = Param(ro.spec.type, dict(ro.spec.fields), ro.spec.children)
            spec.fields["ROSpecCurrentState"] = int(ro.state)
            out.append(spec)
        return out

    def _add_accessspec(self, msg: Message) -> list[Param]:
        spec = next((c for c in msg.children if c.type == ACCESS_SPEC), None)
        if spec is None:
            raise parameter_error(
                [207], S.M_MISSING_PARAMETER, "ADD_ACCESSSPEC without an AccessSpec",
                message_status=S.M_MISSING_PARAMETER,
            )  # fmt: skip
        self.access_specs[len(self.access_specs) + 1] = spec
        return []

    def _accessspec_op(self, msg: Message) -> list[Param]:
        if msg.name == "DELETE_ACCESSSPEC" and int(msg.fields.get("AccessSpecID", 0)) == 0:
            self.access_specs.clear()
        return []

    def _get_accessspecs(self, msg: Message) -> list[Param]:
        return []

    _handlers: dict[str, Callable[[SimulatedReader, Message], list[Param]]] = {
        "GET_READER_CAPABILITIES": _capabilities,
        "GET_READER_CONFIG": _get_config,
        "SET_READER_CONFIG": _set_config,
        "ADD_ROSPEC": _add_rospec,
        "DELETE_ROSPEC": _delete_rospec,
        "ENABLE_ROSPEC": _enable_rospec,
        "DISABLE_ROSPEC": _disable_rospec,
        "START_ROSPEC": _start_rospec,
        "STOP_ROSPEC": _stop_rospec,
        "GET_ROSPECS": _get_rospecs,
        "ADD_ACCESSSPEC": _add_accessspec,
        "DELETE_ACCESSSPEC": _accessspec_op,
        "ENABLE_ACCESSSPEC": _accessspec_op,
        "DISABLE_ACCESSSPEC": _accessspec_op,
        "GET_ACCESSSPECS": _get_accessspecs,
    }

    # ------------------------------------------------------------------ ROSpec execution

    def _arm(self, ro: _ROSpec) -> None:
        """The ROSpec was enabled: set up its start trigger."""
        plan = ro.plan
        if plan.start is StartTrigger.IMMEDIATE:
            self._begin(ro)
        elif plan.start is StartTrigger.PERIODIC:
            ro.trigger = asyncio.create_task(self._periodic(ro), name=f"llrp-sim-periodic-{ro.id}")
        elif plan.start is StartTrigger.GPI:
            ro.trigger = asyncio.create_task(self._gpi_start(ro), name=f"llrp-sim-gpi-{ro.id}")

    async def _periodic(self, ro: _ROSpec) -> None:
        plan = ro.plan
        first = (plan.utc_start if plan.utc_start is not None else time.time()) + plan.offset_s
        await asyncio.sleep(max(0.0, first - time.time()))
        next_t = time.monotonic()
        while True:
            if ro.state is ROSpecState.INACTIVE:
                self._begin(ro)  # a period that finds it still active is skipped
            if plan.period_s <= 0:
                return
            next_t += plan.period_s
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))

    async def _gpi_start(self, ro: _ROSpec) -> None:
        assert ro.plan.start_gpi is not None
        while True:
            await self._gpi_event(ro.plan.start_gpi)
            if ro.state is ROSpecState.INACTIVE:
                self._begin(ro)

    def _begin(self, ro: _ROSpec) -> None:
        ro.state = ROSpecState.ACTIVE
        ro.starts += 1
        self._notify(ReaderEventType.ROSPEC, _rospec_event(ROSpecEventType.START_OF_ROSPEC, ro.id))
        ro.run = asyncio.create_task(self._execute(ro), name=f"llrp-sim-rospec-{ro.id}")

    def _end(self, ro: _ROSpec, state: ROSpecState = ROSpecState.INACTIVE) -> None:
        """The ROSpec stops (its stop trigger, its specs done, STOP/DISABLE/DELETE)."""
        task, ro.run = ro.run, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if ro.plan.report is not ReportTrigger.NONE:
            self._flush(ro, force=True)
        ro.state = state
        self._notify(ReaderEventType.ROSPEC, _rospec_event(ROSpecEventType.END_OF_ROSPEC, ro.id))

    def _deactivate(self, ro: _ROSpec, state: ROSpecState) -> None:
        if ro.trigger is not None:
            ro.trigger.cancel()
            ro.trigger = None
        if ro.state is ROSpecState.ACTIVE:
            self._end(ro, state)
        ro.state = state

    async def _execute(self, ro: _ROSpec) -> None:
        plan = ro.plan
        try:
            async with asyncio.timeout(
                plan.duration_s if plan.stop is ROSpecStopTrigger.DURATION else None
            ):
                if plan.stop_gpi is not None:
                    await self._until_gpi(self._run_aispecs(ro), plan.stop_gpi)
                else:
                    await self._run_aispecs(ro)
        except TimeoutError:
            pass  # the ROSpec's Duration stop trigger
        if ro.run is asyncio.current_task():
            self._end(ro)

    async def _until_gpi(self, work: Coroutine[object, object, None], wait: GpiWait) -> None:
        """Run `work` until it ends, the GPI event comes, or the GPI timeout passes."""
        worker = asyncio.ensure_future(work)
        waiter = asyncio.ensure_future(self._gpi_event(wait))
        try:
            await asyncio.wait(
                {worker, waiter},
                timeout=wait.timeout_s or None,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (worker, waiter):
                task.cancel()
            await asyncio.gather(worker, waiter, return_exceptions=True)

    async def _run_aispecs(self, ro: _ROSpec) -> None:
        for index, ai in enumerate(ro.plan.aispecs, 1):
            if ai.stop is AISpecStopTrigger.GPI:
                assert ai.gpi is not None
                await self._until_gpi(self._inventory(ro, ai, index), ai.gpi)
            else:
                await self._inventory(ro, ai, index)
            if ro.plan.report is ReportTrigger.N_TAGS_OR_END_OF_AISPEC:
                self._flush(ro, force=True)

    async def _inventory(self, ro: _ROSpec, ai: AIPlan, index: int) -> None:
        """Read cycles until the AISpec's stop trigger (GPI: the caller stops it)."""
        started = time.monotonic()
        deadline = started + ai.duration_s if ai.stop is AISpecStopTrigger.DURATION else None
        if ai.observation is not None and ai.timeout_s:
            deadline = started + ai.timeout_s
        observations = attempts = 0
        seen: set[tuple[str, int]] = set()
        last_new = started
        while True:
            cycle = self.cycle_s
            if deadline is not None:
                cycle = min(cycle, deadline - time.monotonic())
                if cycle <= 0:
                    return
            await asyncio.sleep(cycle)
            reads = [
                r
                for r in self.source.cycle(time.time(), cycle)
                if ai.antennas is None or r.antenna in ai.antennas
            ]
            attempts += 1
            observations += len(reads)
            now = time.monotonic()
            for read in reads:
                key = (read.epc, read.antenna)
                if key not in seen:
                    seen.add(key)
                    last_new = now
            self._collect(ro, reads, index)
            if ai.observation is TagObservationTrigger.N_TAG_OBSERVATIONS:
                if observations >= ai.number:
                    return
            elif ai.observation is TagObservationTrigger.N_ATTEMPTS:
                if attempts >= ai.number:
                    return
            elif (
                ai.observation is TagObservationTrigger.NO_NEW_TAGS_FOR_T
                and now - last_new >= ai.t_s
            ):
                return

    def _collect(self, ro: _ROSpec, reads: list[TagRead], index: int) -> None:
        ro.buffer.extend(tag_report_entries(reads, ro.plan.selector, ro.id, index))
        if len(ro.buffer) > MAX_BUFFERED_TAGS:
            del ro.buffer[: len(ro.buffer) - MAX_BUFFERED_TAGS]
        self.reads_sent += len(reads) if self._session is not None else 0
        if ro.plan.report is not ReportTrigger.NONE and ro.plan.n:
            self._flush(ro)

    def _flush(self, ro: _ROSpec, *, force: bool = False) -> None:
        """Send the buffered TagReportData: every full N of them, or all (`force`)."""
        n = ro.plan.n
        if force and not ro.buffer and self.empty_reports:
            self._send_report([])
        while ro.buffer and (force or (n and len(ro.buffer) >= n)):
            take = len(ro.buffer) if not n else min(n, len(ro.buffer))
            chunk, ro.buffer = ro.buffer[:take], ro.buffer[take:]
            self._send_report(chunk)

    def _send_report(self, entries: list[bytes]) -> None:
        if self._session is None:
            return  # nobody listening: a reader without report holding drops it
        # the body is the buffered parameters as they are: the same bytes as the Param tree
        self._session.post(Message(RO_ACCESS_REPORT, 0, raw_body=b"".join(entries)))
        self.reports_sent += 1


def _rospec_event(kind: ROSpecEventType, rospec_id: int) -> Param:
    return param("ROSpecEvent", Trigger=kind, ROSpecID=rospec_id, PreemptingROSpecID=0)


def _event(*children: Param) -> Message:
    data = param(
        "ReaderEventNotificationData",
        param("UTCTimestamp", Microseconds=int(time.time() * 1e6)),
        *children,
    )
    return message("READER_EVENT_NOTIFICATION", 0, data)
