"""The simulated reader follows LLRP 1.0.1 as real readers do: ROSpec states and triggers,
reports, event notifications, errors, one client at a time, reboots. Real LLRP bytes over
real TCP, driven by a bare client that sends exactly what each test says."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from protocols.llrp import Message, MessageWriter, Param, message, param, read_message
from protocols.llrp.constants import (
    AISpecStopTrigger,
    ConnectionAttemptStatus,
    ReaderEventType,
    ReportTrigger,
    ROSpecEventType,
    ROSpecState,
    ROSpecStopTrigger,
    StartTrigger,
    StatusCode,
    TagObservationTrigger,
    describe_status,
)
from simulators.llrp.reader import SimulatedReader
from simulators.llrp.world import World, WorldConfig

CYCLE_S = 0.05
S = StatusCode


class Client:
    """A bare LLRP client: requests wait for their response; everything else is kept."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.out = MessageWriter(writer)
        self.received: list[Message] = []

    async def next(self, within: float = 2.0) -> Message | None:
        async with asyncio.timeout(within):
            return await read_message(self.reader)

    async def request(self, msg: Message) -> Message:
        msg_id = await self.out.send(msg)
        while True:
            reply = await self.next()
            assert reply is not None, f"closed while waiting for the answer to {msg.name}"
            if reply.id == msg_id and reply.name in (f"{msg.name}_RESPONSE", "ERROR_MESSAGE"):
                return reply
            self.received.append(reply)

    async def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError):
            while (left := deadline - time.monotonic()) > 0:
                msg = await self.next(left)
                if msg is None:
                    return
                self.received.append(msg)

    async def ok(self, msg: Message) -> None:
        st = (await self.request(msg)).child("LLRPStatus")
        assert st is not None
        assert st.fields["Status"] == 0, describe_status(st)

    def reports(self) -> list[Message]:
        return [m for m in self.received if m.name == "RO_ACCESS_REPORT"]

    def events(self, name: str) -> list[Param]:
        out = []
        for m in self.received:
            data = m.child("ReaderEventNotificationData")
            if data is not None and (event := data.child(name)) is not None:
                out.append(event)
        return out

    def rospec_events(self) -> list[ROSpecEventType]:
        return [ROSpecEventType(e.fields["Trigger"]) for e in self.events("ROSpecEvent")]


@contextlib.asynccontextmanager
async def connected(sim: SimulatedReader, *, events: bool = True) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    client = Client(reader, writer)
    greeting = await client.next()
    assert greeting is not None
    attempt = greeting.child("ReaderEventNotificationData")
    assert attempt is not None
    assert attempt.child("ConnectionAttemptEvent") is not None
    if events:
        await client.ok(
            message(
                "SET_READER_CONFIG",
                0,
                param(
                    "ReaderEventNotificationSpec",
                    *(
                        param("EventNotificationState", ReaderEventType=t, NotificationEnabled=True)
                        for t in (
                            ReaderEventType.ROSPEC,
                            ReaderEventType.ANTENNA,
                            ReaderEventType.GPI,
                        )
                    ),
                ),
            )
        )
    try:
        yield client
    finally:
        await client.out.close()


@contextlib.asynccontextmanager
async def reader(**world: Any) -> AsyncIterator[SimulatedReader]:
    config = WorldConfig(
        **{"antennas": 2, "items_per_shelf": 3, "read_rate": 1.0, "cross_read_rate": 0.0, **world}
    )
    async with SimulatedReader(World(config), cycle_s=CYCLE_S) as sim:
        yield sim


def rospec(
    rospec_id: int = 1,
    *,
    start: Param | None = None,
    stop: Param | None = None,
    ai_stop: Param | None = None,
    report: Param | None = None,
    antennas: list[int] | None = None,
    aispecs: int = 1,
    **fields: Any,
) -> Param:
    ai = param(
        "AISpec",
        ai_stop or param("AISpecStopTrigger", Trigger=AISpecStopTrigger.NULL),
        param("InventoryParameterSpec", InventoryParameterSpecID=1, AirProtocolID=1),
        AntennaIDs=antennas or [0],
    )
    return param(
        "ROSpec",
        param(
            "ROBoundarySpec",
            start or param("ROSpecStartTrigger", Trigger=StartTrigger.NULL),
            stop or param("ROSpecStopTrigger", Trigger=ROSpecStopTrigger.NULL),
        ),
        *([ai] * aispecs),
        report
        or param(
            "ROReportSpec",
            param("TagReportContentSelector", EnableAntennaID=True),
            Trigger=ReportTrigger.N_TAGS_OR_END_OF_AISPEC,
            N=0,
        ),
        **{"ROSpecID": rospec_id, "Priority": 0, "ROSpecCurrentState": 0, **fields},
    )


def duration(ms: int) -> Param:
    return param("AISpecStopTrigger", Trigger=AISpecStopTrigger.DURATION, DurationTriggerValue=ms)


async def state_of(client: Client, rospec_id: int = 1) -> ROSpecState:
    reply = await client.request(message("GET_ROSPECS"))
    spec = next(s for s in reply.children_named("ROSpec") if s.fields["ROSpecID"] == rospec_id)
    return ROSpecState(spec.fields["ROSpecCurrentState"])


# ---------------------------------------------------------------------- the trap


async def test_a_null_stop_rospec_with_a_timed_aispec_runs_once_then_only_keepalives() -> None:
    """What the old driver set up: on a real reader it inventories for one AISpec, then the
    ROSpec is over and the connection carries keepalives only."""
    async with reader() as sim, connected(sim) as client:
        await client.ok(
            message("SET_READER_CONFIG", 0, param("KeepAliveSpec", Trigger=1, Interval=100))
        )
        await client.ok(message("ADD_ROSPEC", 0, rospec(ai_stop=duration(150))))
        assert await state_of(client) is ROSpecState.DISABLED
        await client.ok(message("ENABLE_ROSPEC", 0, ROSpecID=1))
        assert await state_of(client) is ROSpecState.INACTIVE
        await client.ok(message("START_ROSPEC", 0, ROSpecID=1))
        assert await state_of(client) is ROSpecState.ACTIVE
        await client.collect(0.4)
        assert client.rospec_events() == [
            ROSpecEventType.START_OF_ROSPEC,
            ROSpecEventType.END_OF_ROSPEC,
        ]
        assert len(client.reports()) == 1  # end of the AISpec, once
        assert await state_of(client) is ROSpecState.INACTIVE
        client.received.clear()
        await client.collect(0.5)
        assert client.reports() == []
        assert [m.name for m in client.received if m.name == "KEEPALIVE"]


async def test_immediate_start_runs_on_enable_once() -> None:
    async with reader() as sim, connected(sim) as client:
        start = param("ROSpecStartTrigger", Trigger=StartTrigger.IMMEDIATE)
        await client.ok(message("ADD_ROSPEC", 0, rospec(start=start, ai_stop=duration(100))))
        await client.ok(message("ENABLE_ROSPEC", 0, ROSpecID=1))
        await client.collect(0.5)
        assert client.rospec_events() == [
            ROSpecEventType.START_OF_ROSPEC,
            ROSpecEventType.END_OF_ROSPEC,
        ]
        # START_ROSPEC starts an ended ROSpec again, whatever its start trigger
        await client.ok(message("START_ROSPEC", 0, ROSpecID=1))
        await client.collect(0.3)
        assert client.rospec_events().count(ROSpecEventType.START_OF_ROSPEC) == 2


async def test_periodic_start_restarts_every_period() -> None:
    async with reader() as sim, connected(sim) as client:
        start = param(
            "ROSpecStartTrigger",
            param("PeriodicTriggerValue", Offset=0, Period=200),
            Trigger=StartTrigger.PERIODIC,
        )
        await client.ok(message("ADD_ROSPEC", 0, rospec(start=start, ai_stop=duration(100))))
        await client.ok(message("ENABLE_ROSPEC", 0, ROSpecID=1))
        await client.collect(0.9)
        starts = client.rospec_events().count(ROSpecEventType.START_OF_ROSPEC)
        assert 4 <= starts <= 6  # at 0, 200, 400, 600, 800 ms
        assert len(client.reports()) >= 4
        await client.ok(message("DISABLE_ROSPEC", 0, ROSpecID=1))
        client.received.clear()
        await client.collect(0.4)
        assert client.reports() == []  # disabled: the trigger no longer fires


async def test_rospec_duration_stop_ends_an_endless_aispec() -> None:
    async with reader() as sim, connected(sim) as client:
        stop = param(
            "ROSpecStopTrigger", Trigger=ROSpecStopTrigger.DURATION, DurationTriggerValue=200
        )
        await client.ok(message("ADD_ROSPEC", 0, rospec(stop=stop)))
        await client.ok(message("ENABLE_ROSPEC", 0, ROSpecID=1))
        await client.ok(message("START_ROSPEC", 0, ROSpecID=1))
        await client.collect(0.5)
        assert client.rospec_events() == [
            ROSpecEventType.START_OF_ROSPEC,
            ROSpecEventType.END_OF_ROSPEC,
        ]
        assert await state_of(client) is ROSpecState.INACTIVE


async def test_stop_rospec_ends_it_and_sends_what_was_read() -> None:
    async with reader() as sim, connected(sim) as client:
        await client.ok(message("ADD_ROSPEC", 0, rospec()))  # Null / Null: runs until stopped
        await client.ok(message("ENABLE_ROSPEC", 0, ROSpecID=1))
        await client.ok(message("START_ROSPEC", 0, ROSpecID=1))
        await client.collect(0.3)
        assert client.reports() == []  # N = 0 and the AISpec never ends: nothing yet
        await client.ok(message("STOP_ROSPEC", 0, ROSpecID=1))
        await client.collect(0.1)
        assert len(client.reports()) == 1
        assert len(client.reports()[0].children) >= 6  # several cycles of 6 tags
        assert client.rospec_events()[-1] is ROSpecEventType.END_OF_ROSPEC


async def test_gpi_start_and_gpi_stop() -> None:
    async with reader() as sim, connected(sim) as client:
        start = param(
            "ROSpecStartTrigger",
            param("GPITriggerValue", GPIPortNum=1, GPIEvent=True, Timeout=0),
            Trigger=StartTrigger.GPI,
        )
        stop = param(
            "ROSpecStopTrigger",
            param("GPITriggerValue", GPIPortNum=1, GPIEvent=False, Timeout=0),
            Trigger=ROSpecStopTrigger.GPI,
        )
        await client.ok(message("ADD_ROSPEC", 0, rospec(start=start, stop=stop)))
        await client.ok(message("ENABLE_ROSPEC", 0, ROSpecID=1))
        await client.collect(0.2)
        assert client.rospec_events() == []
        await sim.set_gpi(1, True)  # a light barrier: a shopper in front of the shelf
        await client.collect(0.2)
        assert client.rospec_events() == [ROSpecEventType.START_OF_ROSPEC]
        await sim.set_gpi(1, False)
        await client.collect(0.2)
        assert client.rospec_events()[-1] is ROSpecEventType.END_OF_ROSPEC
        assert len(client.events("GPIEvent")) == 2


@pytest.mark.parametrize(
    ("trigger", "fields", "cycles"),
    [
        (TagObservationTrigger.N_TAG_OBSERVATIONS, {"NumberOfTags": 12}, (2, 2)),  # 6 a cycle
        (TagObservationTrigger.N_ATTEMPTS, {"NumberOfAttempts": 3}, (3, 3)),
        # all 6 tags are new in cycle 1; 130 ms later (cycle 4 at 50 ms a cycle) it stops
        (TagObservationTrigger.NO_NEW_TAGS_FOR_T, {"T": 130}, (4, 5)),
    ],
)
async def test_tag_observation_stops_the_aispec(
    trigger: TagObservationTrigger, fields: dict[str, int], cycles: tuple[int, int]
) -> None:
    async with reader() as sim, connected(sim) as client:
        observation = param("TagObservationTrigger", Trigger=trigger, Timeout=0, **fields)
        ai_stop = param("AISpecStopTrigger", observation, Trigger=AISpecStopTrigger.TAG_OBSERVATION)
        await client.ok(message("ADD_ROSPEC", 0, rospec(ai_stop=ai_stop)))
        await client.ok(message("ENABLE_ROSPEC", 0, ROSpecID=1))
        await client.ok(message("START_ROSPEC", 0, ROSpecID=1))
        await client.collect(0.6)
        assert client.rospec_events() == [
            ROSpecEventType.START_OF_ROSPEC,
            ROSpecEventType.END_OF_ROSPEC,
        ]
        (report,) = client.reports()
        assert 6 * cycles[0] <= len(report.children) <= 6 * cycles[1]  # read_rate 1


async def test_report_every_n_tags_and_report_on_request() -> None:
    async with reader() as sim, connected(sim) as client:
        every_4 = param("ROReportSpec", Trigger=ReportTrigger.N_TAGS_OR_END_OF_AISPEC, N=4)
        await client.ok(message("ADD_ROSPEC", 0, rospec(1, report=every_4)))
        polled = param("ROReportSpec", Trigger=ReportTrigger.NONE, N=0)
        await client.ok(message("ADD_ROSPEC", 0, rospec(2, report=polled, ai_stop=duration(100))))
        await client.ok(message("ENABLE_ROSPEC", 0, ROSpecID=0))  # 0: all of them
        await client.ok(message("START_ROSPEC", 0, ROSpecID=0))
        await client.collect(0.3)
        sizes = {len(r.children) for r in client.reports()}
        assert sizes == {4}
        client.received.clear()
        await client.ok(message("STOP_ROSPEC", 0, ROSpecID=1))
        await client.out.send(message("GET_REPORT"))
        await client.collect(0.2)
        assert any(len(r.children) >= 6 for r in client.reports())  # the polled ROSpec's reads


async def test_content_selector_decides_the_fields() -> None:
    async with reader() as sim, connected(sim) as client:
        selector = param(
            "TagReportContentSelector",
            EnableROSpecID=True,
            EnablePeakRSSI=True,
            EnableTagSeenCount=True,
        )
        report = param("ROReportSpec", selector, Trigger=ReportTrigger.N_TAGS_OR_END_OF_AISPEC, N=1)
        await client.ok(message("ADD_ROSPEC", 0, rospec(7, report=report, antennas=[2])))
        await client.ok(message("ENABLE_ROSPEC", 0, ROSpecID=7))
        await client.ok(message("START_ROSPEC", 0, ROSpecID=7))
        await client.collect(0.2)
        tag = client.reports()[0].children[0]
        assert isinstance(tag, Param)
        assert [c.name for c in tag.children if isinstance(c, Param)] == [
            "EPC96",
            "ROSpecID",
            "PeakRSSI",
            "TagSeenCount",
        ]
        assert tag.value("ROSpecID") == 7
        epcs = {r.children[0].child("EPC96").fields["EPC"].hex().upper() for r in client.reports()}  # type: ignore[union-attr]
        assert epcs == {epc for epc, antenna in sim.world.items.items() if antenna == 2}


# ---------------------------------------------------------------------- errors


def _status(reply: Message) -> Param:
    st = reply.child("LLRPStatus")
    assert st is not None
    return st


def _chain(st: Param) -> list[tuple[str, int, int]]:
    """(ParameterType name, ErrorCode, FieldIndex or -1) from the outside in."""
    out = []
    where: Param | None = st.child("ParameterError")
    while where is not None:
        field = where.child("FieldError")
        index = field.fields["FieldIndex"] if field else -1
        code = field.fields["ErrorCode"] if field else where.fields["ErrorCode"]
        out.append((Param(where.fields["ParameterType"]).name, code, index))
        where = where.child("ParameterError")
    return out


BAD_ROSPECS: list[tuple[str, Param, StatusCode, list[tuple[str, int, int]]]] = [
    ("id 0", rospec(0), S.M_PARAMETER_ERROR, [("ROSpec", S.A_INVALID, 0)]),
    ("priority 8", rospec(Priority=8), S.M_PARAMETER_ERROR, [("ROSpec", S.A_OUT_OF_RANGE, 1)]),
    (
        "not disabled",
        rospec(ROSpecCurrentState=2),
        S.M_PARAMETER_ERROR,
        [("ROSpec", S.A_INVALID, 2)],
    ),
    (
        "antenna 3 of 2",
        rospec(antennas=[1, 3]),
        S.M_PARAMETER_ERROR,
        [("ROSpec", S.P_PARAMETER_ERROR, -1), ("AISpec", S.A_OUT_OF_RANGE, 0)],
    ),
    (
        "periodic without a period",
        rospec(start=param("ROSpecStartTrigger", Trigger=StartTrigger.PERIODIC)),
        S.M_PARAMETER_ERROR,
        [
            ("ROSpec", S.P_PARAMETER_ERROR, -1),
            ("ROBoundarySpec", S.P_PARAMETER_ERROR, -1),
            ("ROSpecStartTrigger", S.P_PARAMETER_ERROR, -1),
            ("PeriodicTriggerValue", S.P_MISSING_PARAMETER, -1),
        ],
    ),
    (
        "GPI port 5 of 4",
        rospec(
            start=param(
                "ROSpecStartTrigger",
                param("GPITriggerValue", GPIPortNum=5, GPIEvent=True, Timeout=0),
                Trigger=StartTrigger.GPI,
            )
        ),
        S.M_PARAMETER_ERROR,
        [
            ("ROSpec", S.P_PARAMETER_ERROR, -1),
            ("ROBoundarySpec", S.P_PARAMETER_ERROR, -1),
            ("ROSpecStartTrigger", S.P_PARAMETER_ERROR, -1),
            ("GPITriggerValue", S.A_OUT_OF_RANGE, 0),
        ],
    ),
    (
        "duration 0",
        rospec(ai_stop=duration(0)),
        S.M_PARAMETER_ERROR,
        [
            ("ROSpec", S.P_PARAMETER_ERROR, -1),
            ("AISpec", S.P_PARAMETER_ERROR, -1),
            ("AISpecStopTrigger", S.A_OUT_OF_RANGE, 1),
        ],
    ),
    (
        "LLRP 1.1 report trigger",
        rospec(report=param("ROReportSpec", Trigger=5, N=0)),
        S.M_PARAMETER_ERROR,
        [("ROSpec", S.P_PARAMETER_ERROR, -1), ("ROReportSpec", S.A_OUT_OF_RANGE, 0)],
    ),
    (
        "vendor extension",
        rospec(
            report=param(
                "ROReportSpec", param("Custom", VendorID=25882, Subtype=50, Data=b""), Trigger=1
            )
        ),
        S.M_PARAMETER_ERROR,
        [
            ("ROSpec", S.P_PARAMETER_ERROR, -1),
            ("ROReportSpec", S.P_PARAMETER_ERROR, -1),
            ("Custom", S.P_UNSUPPORTED_PARAMETER, -1),
        ],
    ),
    (
        "nine AISpecs",
        rospec(aispecs=9),
        S.M_PARAMETER_ERROR,
        [("ROSpec", S.P_PARAMETER_ERROR, -1), ("AISpec", S.P_OVERFLOW_PARAMETER, -1)],
    ),
    (
        "no ROBoundarySpec",
        param(
            "ROSpec",
            *rospec().children[1:],
            ROSpecID=1,
            Priority=0,
            ROSpecCurrentState=0,
        ),
        S.M_PARAMETER_ERROR,
        [("ROSpec", S.P_PARAMETER_ERROR, -1), ("ROBoundarySpec", S.P_MISSING_PARAMETER, -1)],
    ),
]


@pytest.mark.parametrize(
    ("spec", "code", "chain"), [b[1:] for b in BAD_ROSPECS], ids=[b[0] for b in BAD_ROSPECS]
)
async def test_invalid_rospec_gets_the_status_a_reader_gives(
    spec: Param, code: StatusCode, chain: list[tuple[str, int, int]]
) -> None:
    async with reader() as sim, connected(sim, events=False) as client:
        st = _status(await client.request(message("ADD_ROSPEC", 0, spec)))
        assert (st.fields["Status"], _chain(st)) == (code, chain), describe_status(st)
        assert sim.rospecs == {}  # refused: nothing added


async def test_message_level_errors() -> None:
    async with reader() as sim, connected(sim, events=False) as client:
        # an unknown ROSpecID is a bad field of the message itself
        for name in (
            "ENABLE_ROSPEC",
            "START_ROSPEC",
            "STOP_ROSPEC",
            "DISABLE_ROSPEC",
            "DELETE_ROSPEC",
        ):
            st = _status(await client.request(message(name, 0, ROSpecID=42)))
            field = st.child("FieldError")
            assert st.fields["Status"] == StatusCode.M_FIELD_ERROR, name
            assert field is not None
            assert (field.fields["FieldIndex"], field.fields["ErrorCode"]) == (
                0,
                StatusCode.A_INVALID,
            )
        await client.ok(message("ADD_ROSPEC", 0, rospec()))
        st = _status(await client.request(message("ADD_ROSPEC", 0, rospec())))
        assert _chain(st) == [("ROSpec", StatusCode.A_INVALID, 0)]  # the id is taken
        st = _status(await client.request(message("START_ROSPEC", 0, ROSpecID=1)))
        assert st.fields["Status"] == StatusCode.M_FIELD_ERROR  # still disabled
        assert "disabled" in st.fields["ErrorDescription"]
        st = _status(await client.request(message("ADD_ROSPEC", 0)))
        assert st.fields["Status"] == StatusCode.M_MISSING_PARAMETER


async def test_unsupported_message_version_and_config() -> None:
    async with reader() as sim, connected(sim, events=False) as client:
        reply = await client.request(
            message("CUSTOM_MESSAGE", 0, VendorID=25882, Subtype=21, Data=b"")
        )
        assert (reply.name, _status(reply).fields["Status"]) == (
            "ERROR_MESSAGE",
            StatusCode.M_UNSUPPORTED_MESSAGE,
        )
        v2 = message("GET_ROSPECS")
        v2.version = 2
        reply = await client.request(v2)
        assert (reply.name, _status(reply).fields["Status"]) == (
            "ERROR_MESSAGE",
            StatusCode.M_UNSUPPORTED_VERSION,
        )
        bad_event = param(
            "ReaderEventNotificationSpec",
            param("EventNotificationState", ReaderEventType=2, NotificationEnabled=True),
            param("EventNotificationState", ReaderEventType=9, NotificationEnabled=True),  # 1.1
        )
        st = _status(await client.request(message("SET_READER_CONFIG", 0, bad_event)))
        assert _chain(st) == [
            ("ReaderEventNotificationSpec", StatusCode.P_PARAMETER_ERROR, -1),
            ("EventNotificationState", StatusCode.A_OUT_OF_RANGE, 0),
        ]
        assert sim.events == set()  # a refused config changes nothing, not even type 2


# ---------------------------------------------------------------------- connections


async def test_second_client_is_refused_and_the_first_is_told() -> None:
    async with reader() as sim, connected(sim) as first:
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", sim.port)
        second = Client(reader2, writer2)
        greeting = await second.next()
        assert greeting is not None
        data = greeting.child("ReaderEventNotificationData")
        assert data is not None
        attempt = data.child("ConnectionAttemptEvent")
        assert attempt is not None
        assert (
            attempt.fields["Status"]
            == ConnectionAttemptStatus.FAILED_CLIENT_INITIATED_CONNECTION_EXISTS
        )
        assert await second.next() is None  # and closed
        await second.out.close()
        await first.collect(0.1)
        told = first.events("ConnectionAttemptEvent")
        assert [e.fields["Status"] for e in told] == [
            ConnectionAttemptStatus.ANOTHER_CONNECTION_ATTEMPTED
        ]
        await first.ok(message("GET_ROSPECS"))  # the first client carries on


async def test_rospecs_outlive_a_connection_but_not_a_reboot() -> None:
    async with reader() as sim:
        async with connected(sim) as client:
            await client.ok(message("ADD_ROSPEC", 0, rospec()))
            await client.ok(message("ENABLE_ROSPEC", 0, ROSpecID=1))
            await client.ok(message("CLOSE_CONNECTION"))
            assert await client.next() is None
        assert sim.goodbyes == 1
        async with connected(sim, events=False) as client:
            assert await state_of(client) is ROSpecState.INACTIVE  # still there
            await sim.reboot()
            assert await client.next() is None  # dropped without a goodbye
        async with connected(sim, events=False) as client:
            reply = await client.request(message("GET_ROSPECS"))
            assert list(reply.children_named("ROSpec")) == []
            config = await client.request(message("GET_READER_CONFIG", 0, RequestedData=0))
            states = config.child("ReaderEventNotificationSpec")
            assert states is not None
            assert not any(
                s.fields["NotificationEnabled"]
                for s in states.children_named("EventNotificationState")
            )


async def test_events_only_when_enabled() -> None:
    async with reader() as sim:
        async with connected(sim, events=False) as client:
            await sim.fail_antenna(1)
            await sim.raise_exception("over temperature")
            await client.collect(0.1)
            assert client.received == []
        async with connected(sim) as client:  # enables ROSpec, antenna and GPI events
            await sim.restore_antenna(1)
            await sim.raise_exception("over temperature")  # not enabled
            await client.collect(0.1)
            assert [
                (e.fields["AntennaID"], e.fields["Trigger"]) for e in client.events("AntennaEvent")
            ] == [(1, 1)]
            assert client.events("ReaderExceptionEvent") == []
            await client.ok(
                message(
                    "SET_READER_CONFIG",
                    0,
                    param(
                        "ReaderEventNotificationSpec",
                        param(
                            "EventNotificationState", ReaderEventType=4, NotificationEnabled=True
                        ),
                    ),
                )
            )
            await sim.raise_exception("over temperature")
            await client.collect(0.1)
            assert [e.fields["Message"] for e in client.events("ReaderExceptionEvent")] == [
                "over temperature"
            ]
