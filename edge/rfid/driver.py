"""The LLRP reader driver ("llrp"; its simulated twin "sim-llrp" is in simulators/drivers).

The driver connects to a reader on TCP 5084, sets it up to report AntennaID, PeakRSSI,
FirstSeen/LastSeen and TagSeenCount about every read cycle with a ROSpec that keeps
inventorying under LLRP 1.0.1 rules (periodic, continuous, or restarted at every
End_of_ROSpec), feeds the reads to the presence engine and emits `RfidEvents` (item events +
count deltas) every `report_interval_s`. Connection loss, and a connection that stays up
without tag reports, are handled here: it reports DEGRADED with the reason, freezes
departures (the outage guard: a reader that is gone or stopped does not make items
disappear), repairs the ROSpec or reconnects with exponential backoff; the engine keeps its
state across reconnects. On shutdown it deletes its ROSpec and closes the connection. What
every shelf reader shares (the engine, the publish loop, metrics) is in
`edge.rfid.shelf_reader`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.drivers.base import DeviceConfig, Driver, DriverContext, DriverSpec
from edge.rfid.shelf_reader import (
    MAX_BATCH,  # noqa: F401  (re-exported: older callers import it from here)
    MAX_UNSENT,  # noqa: F401
    Backoff,
    ShelfReaderDriver,
)
from protocols.ids import Identifier
from protocols.llrp import (
    LLRPError,
    Message,
    MessageWriter,
    Param,
    decode_body,
    encode_body,
    encode_message,
    message,
    param,
    read_frame,
    read_message,
)
from protocols.llrp.constants import (
    AIR_PROTOCOL_EPC_C1G2,
    IANA_PEN_IMPINJ,
    AISpecStopTrigger,
    ConnectionAttemptStatus,
    KeepaliveTrigger,
    ReaderEventType,
    ReportTrigger,
    ROSpecEventType,
    ROSpecState,
    ROSpecStopTrigger,
    StartTrigger,
    describe_status,
)
from protocols.llrp.tagreads import RO_ACCESS_REPORT, tag_reads
from protocols.messages import DeviceKind

log = logging.getLogger(__name__)

ROSPEC_ID = 0x5347  # "SG": ours, so DELETE_ROSPEC of it never touches someone else's
GOODBYE_TIMEOUT_S = 2.0  # per step of the goodbye (DELETE_ROSPEC, CLOSE_CONNECTION)
IDLE_GAP_MS = 100  # a periodic ROSpec's AISpec ends this much (at most) before the next start
MANUFACTURERS = {IANA_PEN_IMPINJ: "Impinj"}  # GeneralDeviceCapabilities.DeviceManufacturer


class LlrpSessionError(ConnectionError):
    """The reader refused a setup step or the connection broke; the driver reconnects."""


class InventoryOptions(BaseModel):
    """How the ROSpec keeps the reader inventorying (LLRP 1.0.1 has no loop: a ROSpec whose
    AISpec ends is over, so either it never ends, a periodic trigger restarts it, or the
    driver restarts it at each End_of_ROSpec event)."""

    model_config = ConfigDict(extra="forbid")

    start: Literal["periodic", "immediate", "null"] = Field(
        default="periodic",
        description="ROSpec start trigger: periodic (every cycle_ms), immediate (on enable), "
        "null (START_ROSPEC from the driver)",
    )
    stop: Literal["duration", "null"] = Field(
        default="duration",
        description="AISpec stop trigger: duration (one read cycle; the ROSpec then ends and "
        "is restarted) or null (one endless AISpec: continuous inventory)",
    )
    cycle_ms: int = Field(
        default=1000, ge=100, le=10_000, description="read cycle: AISpec duration / period"
    )
    report_every_n_tags: int = Field(
        default=0,
        ge=0,
        le=0xFFFF,
        description="a report every N tag reads; 0 = at the end of each AISpec only",
    )

    @model_validator(mode="after")
    def _reports_come(self) -> InventoryOptions:
        if self.stop == "null" and self.report_every_n_tags == 0:
            raise ValueError(
                "stop: null runs one endless AISpec, whose end never comes: "
                "set report_every_n_tags >= 1"
            )
        if self.start == "periodic" and self.stop == "null":
            raise ValueError("start: periodic needs stop: duration (an endless AISpec never ends)")
        return self

    @property
    def restarts_on_end(self) -> bool:
        """The driver starts the ROSpec again when it ends (no periodic trigger does)."""
        return self.start != "periodic"

    def aispec_duration_ms(self) -> int:
        if self.start == "periodic":
            return self.cycle_ms - min(IDLE_GAP_MS, self.cycle_ms // 10)
        return self.cycle_ms


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
    silent_intervals: int = Field(
        default=3,
        ge=2,
        le=100,
        description="connected but no tag report for this many report intervals = outage",
    )
    inventory: InventoryOptions = Field(default_factory=InventoryOptions)
    presence: dict[str, Any] = Field(default_factory=dict, description="PresenceConfig fields")

    @model_validator(mode="after")
    def _report_every_epoch(self) -> LlrpOptions:
        # the engine counts reads per epoch by receive time: a report that spans several
        # epochs would make every tag look read once in them
        epoch_s = float(self.presence.get("epoch_s", 1.0))
        if self.inventory.stop == "duration" and self.inventory.cycle_ms > epoch_s * 1000:
            raise ValueError(
                f"inventory.cycle_ms {self.inventory.cycle_ms} is longer than the presence "
                f"epoch ({epoch_s * 1000:.0f} ms): reports must come at least once an epoch"
            )
        return self


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
        self.rospec_restarts = 0  # START_ROSPEC after an End_of_ROSpec or a silent spell
        self.silent_spells = 0  # times the reader was connected but reported nothing
        self.last_rospec_state: ROSpecState | None = None
        self._last_report = time.monotonic()
        self._silent = False
        self._inventorying = False  # set up and running: restarts are ours to do
        self._closing = False
        self._identity_known = asyncio.Event()  # set once the capabilities have come

    async def identified(self) -> None:
        await self._identity_known.wait()

    @property
    def silence_limit_s(self) -> float:
        cycle_s = self.options.inventory.cycle_ms / 1000
        return self.options.silent_intervals * max(self.report_interval_s, cycle_s)

    def _extra_metrics(self) -> dict[str, float]:
        return {
            "rospec_restarts": float(self.rospec_restarts),
            "silent_spells": float(self.silent_spells),
        }

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
        self._inventorying = self._closing = self._silent = False
        watchdog: asyncio.Task[None] | None = None
        greeted = False
        try:
            await self._expect_connection_event(reader)
            greeted = True
            await self._set_up(reader, out)
            self._last_report = time.monotonic()
            self._inventorying = True
            self._reader_up(ctx)
            log.info("LLRP reader %s connected at %s:%s", self.device, self.host, self.port)
            watchdog = asyncio.create_task(self._watch_reports(ctx, out), name="llrp-watchdog")
            timeout = self.options.keepalive_s * 3
            while True:
                async with asyncio.timeout(timeout):
                    frame = await read_frame(reader)
                if frame is None:
                    return
                version, type_, id_, body = frame
                if type_ == RO_ACCESS_REPORT:
                    # the hot path: tag reads straight from the bytes, no Param tree
                    self._report_came(ctx)
                    self.feed_report_body(body)
                else:
                    await self._dispatch(decode_body(type_, body, id_, version), out, ctx)
        except asyncio.CancelledError:
            if watchdog:
                watchdog.cancel()
            if greeted:
                await self._goodbye(reader, out)
            raise
        finally:
            self._inventorying = False
            if watchdog:
                watchdog.cancel()
            if greeted and not self._closing:
                # not a shutdown: still say goodbye (a reader serves one client at a time)
                with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                    writer.write(encode_message(message("CLOSE_CONNECTION", out.next_id())))
            await out.close()

    async def _set_up(self, reader: asyncio.StreamReader, out: MessageWriter) -> None:
        caps = await self._request(
            reader, out, message("GET_READER_CAPABILITIES", 0, ReqCapabilities=0)
        )
        self._read_identity(caps)
        # ours may be left from a connection that broke (ROSpecs outlive connections)
        await self._request(
            reader, out, message("DELETE_ROSPEC", 0, ROSpecID=ROSPEC_ID), allow_error=True
        )
        await self._request(reader, out, self._reader_config())
        await self._request(reader, out, message("ADD_ROSPEC", 0, self._rospec()))
        await self._request(reader, out, message("ENABLE_ROSPEC", 0, ROSpecID=ROSPEC_ID))
        if self.options.inventory.start == "null":
            await self._request(reader, out, message("START_ROSPEC", 0, ROSpecID=ROSPEC_ID))

    async def _goodbye(self, reader: asyncio.StreamReader, out: MessageWriter) -> None:
        """Shutdown: delete our ROSpec (the reader stops inventorying for nobody) and close
        the connection the LLRP way, waiting for each answer a bounded time."""
        self._closing = True
        self._inventorying = False
        for msg in (
            message("DELETE_ROSPEC", 0, ROSpecID=ROSPEC_ID),
            message("CLOSE_CONNECTION", 0),
        ):
            try:
                async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                    await self._request(reader, out, msg, allow_error=True, timeout_s=None)
            except (OSError, LLRPError, TimeoutError) as exc:
                log.warning(
                    "LLRP reader %s: no answer to %s on shutdown (%s)", self.device, msg.name, exc
                )
                return
        log.info("LLRP reader %s: ROSpec deleted, connection closed", self.device)

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
        code = int(attempt.fields.get("Status", 0))
        if code != ConnectionAttemptStatus.SUCCESS:
            try:
                why = ConnectionAttemptStatus(code).name
            except ValueError:
                why = f"status {code}"
            raise LlrpSessionError(f"reader refused the connection ({why})")

    async def _request(
        self,
        reader: asyncio.StreamReader,
        out: MessageWriter,
        msg: Message,
        *,
        allow_error: bool = False,
        timeout_s: float | None = -1.0,
    ) -> Message:
        """Send a request and wait for its response, handling anything that comes between."""
        if timeout_s is not None and timeout_s < 0:
            timeout_s = self.options.connect_timeout_s
        msg_id = await out.send(msg)
        while True:
            async with asyncio.timeout(timeout_s):
                reply = await read_message(reader)
            if reply is None:
                raise LlrpSessionError(
                    f"connection closed while waiting for the answer to {msg.name}"
                )
            if reply.id == msg_id and reply.name in (f"{msg.name}_RESPONSE", "ERROR_MESSAGE"):
                st = reply.child("LLRPStatus")
                code = st.fields.get("Status", 0) if st else 0
                if code and not allow_error:
                    raise LlrpSessionError(f"{msg.name} failed: {describe_status(st)}")
                return reply
            await self._dispatch(reply, out, None)

    def _read_identity(self, caps: Message) -> None:
        general = caps.child("GeneralDeviceCapabilities")
        if general is not None:
            pen = general.fields.get("DeviceManufacturer")
            maker = MANUFACTURERS.get(int(pen or 0), f"manufacturer {pen}")
            self.model = f"{maker} model {general.fields.get('Model')}"[:128]
            self.firmware = str(general.fields.get("FirmwareVersion", ""))[:64] or None
            log.info("LLRP reader %s is %s, firmware %s", self.device, self.model, self.firmware)
        self._identity_known.set()  # without GeneralDeviceCapabilities there is none to wait for

    def _reader_config(self) -> Message:
        events = param(
            "ReaderEventNotificationSpec",
            *(
                param("EventNotificationState", ReaderEventType=t, NotificationEnabled=True)
                for t in (
                    ReaderEventType.ROSPEC,
                    ReaderEventType.READER_EXCEPTION,
                    ReaderEventType.ANTENNA,
                )
            ),
        )
        keepalive = param(
            "KeepAliveSpec",
            Trigger=KeepaliveTrigger.PERIODIC,
            Interval=int(self.options.keepalive_s * 1000),
        )
        return message("SET_READER_CONFIG", 0, events, keepalive, ResetToFactoryDefaults=False)

    def _rospec(self) -> Param:
        inventory = self.options.inventory
        selector = param(
            "TagReportContentSelector",
            EnableAntennaID=True,
            EnablePeakRSSI=True,
            EnableFirstSeenTimestamp=True,
            EnableLastSeenTimestamp=True,
            EnableTagSeenCount=True,
            EnableChannelIndex=True,
        )
        if inventory.start == "periodic":
            start = param(
                "ROSpecStartTrigger",
                param("PeriodicTriggerValue", Offset=0, Period=inventory.cycle_ms),
                Trigger=StartTrigger.PERIODIC,
            )
        else:
            kind = StartTrigger.IMMEDIATE if inventory.start == "immediate" else StartTrigger.NULL
            start = param("ROSpecStartTrigger", Trigger=kind)
        if inventory.stop == "duration":
            ai_stop = param(
                "AISpecStopTrigger",
                Trigger=AISpecStopTrigger.DURATION,
                DurationTriggerValue=inventory.aispec_duration_ms(),
            )
        else:
            ai_stop = param("AISpecStopTrigger", Trigger=AISpecStopTrigger.NULL)
        return param(
            "ROSpec",
            param(
                "ROBoundarySpec",
                start,
                # Null: the ROSpec ends with its AISpec (or never, with an endless one)
                param("ROSpecStopTrigger", Trigger=ROSpecStopTrigger.NULL, DurationTriggerValue=0),
            ),
            param(
                "AISpec",
                ai_stop,
                param(
                    "InventoryParameterSpec",
                    InventoryParameterSpecID=1,
                    AirProtocolID=AIR_PROTOCOL_EPC_C1G2,
                ),
                AntennaIDs=[0],  # all antennas; unmapped ones are counted and ignored
            ),
            param(
                "ROReportSpec",
                selector,
                Trigger=ReportTrigger.N_TAGS_OR_END_OF_AISPEC,
                N=inventory.report_every_n_tags,
            ),
            ROSpecID=ROSPEC_ID,
            Priority=0,
            ROSpecCurrentState=ROSpecState.DISABLED,
        )

    # ------------------------------------------------------------------ running

    async def _watch_reports(self, ctx: DriverContext, out: MessageWriter) -> None:
        """Connected is not enough: a reader whose ROSpec stopped sends keepalives only.
        No tag report for `silence_limit_s` is an outage (departures frozen, DEGRADED with
        the reason), and the driver asks the reader what its ROSpec is doing."""
        limit = self.silence_limit_s
        next_check = 0.0
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            now = time.monotonic()
            silent_s = now - self._last_report
            if silent_s < limit:
                continue
            if not self._silent:
                self._silent = True
                self.silent_spells += 1
                reason = (
                    f"{self.host}:{self.port}: connected, but no tag report for "
                    f"{silent_s:.0f} s (inventory stopped or no tag in view); "
                    "departures frozen"
                )
                log.warning("LLRP reader %s: %s", self.device, reason)
                self._reader_down(ctx, reason, reconnecting=False)
            if now >= next_check:
                next_check = now + limit
                # a broken connection is the receive loop's to notice and report
                with contextlib.suppress(ConnectionError, OSError):
                    await out.send(message("GET_ROSPECS", 0))

    async def _dispatch(self, msg: Message, out: MessageWriter, ctx: DriverContext | None) -> None:
        name = msg.name
        if name == "RO_ACCESS_REPORT":
            self._report_came(ctx)
            self.feed_report_body(encode_body(msg))
        elif name == "KEEPALIVE":
            await out.send(message("KEEPALIVE_ACK", msg.id))
        elif name == "READER_EVENT_NOTIFICATION":
            await self._reader_event(msg, out)
        elif name == "GET_ROSPECS_RESPONSE":
            await self._check_rospec(msg, out)
        elif name in ("START_ROSPEC_RESPONSE", "ENABLE_ROSPEC_RESPONSE"):
            st = msg.child("LLRPStatus")
            if st is not None and st.fields.get("Status", 0):
                # the reader will not run our ROSpec: set everything up again
                raise LlrpSessionError(f"{name}: {describe_status(st)}")
        elif name == "ERROR_MESSAGE":
            log.warning(
                "LLRP reader %s reports an error: %s",
                self.device,
                describe_status(msg.child("LLRPStatus")),
            )
        else:
            log.debug("LLRP reader %s: ignoring %s", self.device, name)

    async def _restart(self, out: MessageWriter, why: str) -> None:
        self.rospec_restarts += 1
        log.debug("LLRP reader %s: START_ROSPEC (%s)", self.device, why)
        await out.send(message("START_ROSPEC", 0, ROSpecID=ROSPEC_ID))

    async def _check_rospec(self, msg: Message, out: MessageWriter) -> None:
        """The answer to the watchdog's GET_ROSPECS: repair what stopped our inventory."""
        if self._closing:
            return  # an answer still in flight while we delete the ROSpec on shutdown
        ours = next(
            (s for s in msg.children_named("ROSpec") if s.fields.get("ROSpecID") == ROSPEC_ID),
            None,
        )
        if ours is None:
            raise LlrpSessionError("the reader no longer has our ROSpec (rebooted or deleted)")
        state = ROSpecState(int(ours.fields.get("ROSpecCurrentState", 0)))
        self.last_rospec_state = state
        if not self._inventorying:
            return
        if state is ROSpecState.DISABLED:
            log.warning("LLRP reader %s: our ROSpec was disabled; enabling it", self.device)
            await out.send(message("ENABLE_ROSPEC", 0, ROSpecID=ROSPEC_ID))
            if self.options.inventory.start == "null":
                await self._restart(out, "it was disabled")
        elif state is ROSpecState.INACTIVE and self.options.inventory.restarts_on_end:
            log.warning("LLRP reader %s: our ROSpec is not running; starting it", self.device)
            await self._restart(out, "found inactive")
        else:
            log.warning(
                "LLRP reader %s: our ROSpec is %s but reports no tags (antennas, tags?)",
                self.device,
                state.name.lower(),
            )

    def _report_came(self, ctx: DriverContext | None) -> None:
        self._last_report = time.monotonic()
        if self._silent and ctx is not None:
            self._silent = False
            log.warning("LLRP reader %s: tag reports again", self.device)
            self._reader_up(ctx)

    def feed_report_body(self, body: bytes, now: float | None = None) -> int:
        """The tag reads of one RO_ACCESS_REPORT body into the engine, stamped `now` (the
        receive time; a caller replaying recorded reports passes its own clock). A
        malformed report is refused whole (LLRPError), as the generic decoder would."""
        t = time.time() if now is None else now
        observe = self.engine.observe_bytes
        reads = tag_reads(body)
        for epc, antenna, rssi in reads:
            observe(epc, antenna, float(rssi), t)
        return len(reads)

    async def _reader_event(self, msg: Message, out: MessageWriter) -> None:
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
        rospec_event = data.child("ROSpecEvent")
        if (
            rospec_event is not None
            and rospec_event.fields.get("ROSpecID") == ROSPEC_ID
            and rospec_event.fields.get("Trigger") == ROSpecEventType.END_OF_ROSPEC
            and self._inventorying
            and self.options.inventory.restarts_on_end
        ):
            # LLRP 1.0.1: an ended ROSpec stays Inactive until something starts it again
            await self._restart(out, "End_of_ROSpec")
        attempt = data.child("ConnectionAttemptEvent")
        if attempt is not None:
            log.warning(
                "LLRP reader %s: another client tried to connect (status %s)",
                self.device,
                attempt.fields.get("Status"),
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


LLRP_DRIVER = DriverSpec(DeviceKind.RFID_READER, _llrp_factory)
