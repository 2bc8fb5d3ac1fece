"""What a reader accepts: LLRP 1.0.1 checks of a ROSpec (and of reader settings), with the
LLRPStatus a real reader answers a bad one with, and the ROSpec turned into a plan to run.

An error is a `RequestRefusedError` carrying the LLRPStatus parameter: `field_error` for a
bad field of the message itself, `parameter_error` for one inside a parameter (nested
ParameterErrors from the message's child down to the culprit, as the spec lays them out).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.llrp import Param, RawParam, param
from protocols.llrp.constants import (
    AIR_PROTOCOL_EPC_C1G2,
    AISpecStopTrigger,
    ReportTrigger,
    ROSpecState,
    ROSpecStopTrigger,
    StartTrigger,
    StatusCode,
    TagObservationTrigger,
)
from protocols.llrp.spec import CUSTOM, PARAM_NAMES, PARAMS

S = StatusCode
MAX_PRIORITY = 7
MAX_ROSPECS = 8
MAX_SPECS_PER_ROSPEC = 8
NUM_GPIS = 4
NUM_GPOS = 4

DEFAULT_SELECTOR = {
    "EnableROSpecID": False,
    "EnableSpecIndex": False,
    "EnableInventoryParamSpecID": False,
    "EnableAntennaID": True,
    "EnableChannelIndex": False,
    "EnablePeakRSSI": True,
    "EnableFirstSeenTimestamp": False,
    "EnableLastSeenTimestamp": False,
    "EnableTagSeenCount": False,
    "EnableAccessSpecID": False,
}

_T = PARAM_NAMES  # parameter name -> type number


# ---------------------------------------------------------------------- errors


class RequestRefusedError(Exception):
    """A request the reader refuses; `status` is the LLRPStatus parameter it answers with."""

    def __init__(self, st: Param) -> None:
        super().__init__(st.fields.get("ErrorDescription", ""))
        self.status = st


def field_error(index: int, code: StatusCode, text: str) -> RequestRefusedError:
    """A bad field of the message itself (e.g. an unknown ROSpecID)."""
    return RequestRefusedError(
        param(
            "LLRPStatus",
            param("FieldError", FieldIndex=index, ErrorCode=code),
            Status=S.M_FIELD_ERROR,
            ErrorDescription=text,
        )
    )


def parameter_error(
    path: list[int],
    code: StatusCode,
    text: str,
    *,
    field: int | None = None,
    message_status: StatusCode = S.M_PARAMETER_ERROR,
) -> RequestRefusedError:
    """A bad parameter at `path` (parameter types from the message's child down to it):
    nested ParameterErrors, the outer ones P_ParameterError, the last one `code` with a
    FieldError when `field` (its index) is given (then `code` is the field's A_* code)."""
    if field is not None:
        inner = param(
            "ParameterError",
            param("FieldError", FieldIndex=field, ErrorCode=code),
            ParameterType=path[-1],
            ErrorCode=S.P_FIELD_ERROR,
        )
    else:
        inner = param("ParameterError", ParameterType=path[-1], ErrorCode=code)
    for type_ in reversed(path[:-1]):
        inner = param("ParameterError", inner, ParameterType=type_, ErrorCode=S.P_PARAMETER_ERROR)
    return RequestRefusedError(
        param("LLRPStatus", inner, Status=message_status, ErrorDescription=text)
    )


def only(container: Param, name: str, path: list[int], *, required: bool) -> Param | None:
    found = list(container.children_named(name))
    if len(found) > 1:
        raise parameter_error([*path, _T[name]], S.P_DUPLICATE_PARAMETER, f"two {name}")
    if not found and required:
        raise parameter_error(
            [*path, _T[name]], S.P_MISSING_PARAMETER, f"{_type_name(path[-1])} needs a {name}"
        )
    return found[0] if found else None


def _type_name(type_: int) -> str:
    definition = PARAMS.get(type_)
    return definition.name if definition else f"parameter {type_}"


def reject_unknown(container: Param, allowed: set[str], path: list[int]) -> None:
    """Custom (vendor) parameters and ones the codec does not know are not supported."""
    allowed_types = {_T[n] for n in allowed}
    for child in container.children:
        if isinstance(child, RawParam) or child.type == CUSTOM:
            code = S.P_UNSUPPORTED_PARAMETER if child.type == CUSTOM else S.P_UNKNOWN_PARAMETER
            raise parameter_error(
                [*path, child.type], code, f"parameter {child.type} is not supported here"
            )
        if child.type not in allowed_types:
            raise parameter_error(
                [*path, child.type],
                S.P_UNEXPECTED_PARAMETER,
                f"{child.name} is not allowed in {_type_name(path[-1])}",
            )


def in_range(p: Param, name: str, index: int, low: int, high: int, path: list[int]) -> int:
    value = int(p.fields.get(name, 0))
    if not low <= value <= high:
        raise parameter_error(
            path, S.A_OUT_OF_RANGE, f"{p.name}.{name} {value} not in {low}..{high}", field=index
        )
    return value


# ---------------------------------------------------------------------- ROSpec plans


@dataclass(frozen=True, slots=True)
class GpiWait:
    port: int
    event: bool
    timeout_s: float  # 0: none


@dataclass(frozen=True, slots=True)
class AIPlan:
    antennas: frozenset[int] | None  # None: all
    stop: AISpecStopTrigger
    duration_s: float = 0.0
    gpi: GpiWait | None = None
    observation: TagObservationTrigger | None = None
    number: int = 0  # NumberOfTags / NumberOfAttempts
    t_s: float = 0.0
    timeout_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ROPlan:
    start: StartTrigger
    offset_s: float = 0.0
    period_s: float = 0.0
    utc_start: float | None = None
    start_gpi: GpiWait | None = None
    stop: ROSpecStopTrigger = ROSpecStopTrigger.NULL
    duration_s: float = 0.0
    stop_gpi: GpiWait | None = None
    aispecs: tuple[AIPlan, ...] = ()
    report: ReportTrigger = ReportTrigger.N_TAGS_OR_END_OF_AISPEC
    n: int = 0
    selector: dict[str, bool] = field(default_factory=dict)


def _gpi(value: Param, path: list[int]) -> GpiWait:
    path = [*path, _T["GPITriggerValue"]]
    port = in_range(value, "GPIPortNum", 0, 1, NUM_GPIS, path)
    return GpiWait(port, bool(value.fields.get("GPIEvent")), value.fields.get("Timeout", 0) / 1000)


def plan_rospec(spec: Param, antennas: int, default_report: Param | None) -> ROPlan:
    """Check a ROSpec as a reader does and turn it into what to run; raises RequestRefusedError."""
    path = [_T["ROSpec"]]
    if int(spec.fields.get("ROSpecID", 0)) == 0:
        raise parameter_error(path, S.A_INVALID, "ROSpecID 0 is reserved", field=0)
    in_range(spec, "Priority", 1, 0, MAX_PRIORITY, path)
    if int(spec.fields.get("ROSpecCurrentState", 0)) != ROSpecState.DISABLED:
        raise parameter_error(path, S.A_INVALID, "a new ROSpec must be Disabled", field=2)
    reject_unknown(spec, {"ROBoundarySpec", "AISpec", "ROReportSpec"}, path)
    boundary = only(spec, "ROBoundarySpec", path, required=True)
    assert boundary is not None
    bpath = [*path, _T["ROBoundarySpec"]]
    reject_unknown(boundary, {"ROSpecStartTrigger", "ROSpecStopTrigger"}, bpath)
    start = only(boundary, "ROSpecStartTrigger", bpath, required=True)
    stop = only(boundary, "ROSpecStopTrigger", bpath, required=True)
    assert start is not None
    assert stop is not None
    spath = [*bpath, _T["ROSpecStartTrigger"]]
    reject_unknown(start, {"PeriodicTriggerValue", "GPITriggerValue"}, spath)
    start_kind = StartTrigger(in_range(start, "Trigger", 0, 0, 3, spath))
    offset_s = period_s = 0.0
    utc_start: float | None = None
    start_gpi: GpiWait | None = None
    if start_kind is StartTrigger.PERIODIC:
        periodic = only(start, "PeriodicTriggerValue", spath, required=True)
        assert periodic is not None
        offset_s = periodic.fields.get("Offset", 0) / 1000
        period_s = periodic.fields.get("Period", 0) / 1000
        utc = periodic.child("UTCTimestamp")
        if utc is not None:
            utc_start = utc.fields.get("Microseconds", 0) / 1e6
    elif start_kind is StartTrigger.GPI:
        value = only(start, "GPITriggerValue", spath, required=True)
        assert value is not None
        start_gpi = _gpi(value, spath)
    tpath = [*bpath, _T["ROSpecStopTrigger"]]
    reject_unknown(stop, {"GPITriggerValue"}, tpath)
    stop_kind = ROSpecStopTrigger(in_range(stop, "Trigger", 0, 0, 2, tpath))
    duration_s = 0.0
    stop_gpi: GpiWait | None = None
    if stop_kind is ROSpecStopTrigger.DURATION:
        duration_s = in_range(stop, "DurationTriggerValue", 1, 1, 2**32 - 1, tpath) / 1000
    elif stop_kind is ROSpecStopTrigger.GPI:
        value = only(stop, "GPITriggerValue", tpath, required=True)
        assert value is not None
        stop_gpi = _gpi(value, tpath)
    ais = list(spec.children_named("AISpec"))
    if not ais:
        raise parameter_error([*path, _T["AISpec"]], S.P_MISSING_PARAMETER, "no AISpec")
    if len(ais) > MAX_SPECS_PER_ROSPEC:
        raise parameter_error(
            [*path, _T["AISpec"]],
            S.P_OVERFLOW_PARAMETER,
            f"{len(ais)} AISpecs, at most {MAX_SPECS_PER_ROSPEC}",
        )
    plans = tuple(_plan_aispec(ai, [*path, _T["AISpec"]], antennas) for ai in ais)
    report = only(spec, "ROReportSpec", path, required=False) or default_report
    trigger, n, selector = ReportTrigger.N_TAGS_OR_END_OF_AISPEC, 0, dict(DEFAULT_SELECTOR)
    if report is not None:
        rpath = [*path, _T["ROReportSpec"]]
        reject_unknown(report, {"TagReportContentSelector"}, rpath)
        trigger = ReportTrigger(in_range(report, "Trigger", 0, 0, 2, rpath))
        n = int(report.fields.get("N", 0))
        chosen = report.child("TagReportContentSelector")
        if chosen is not None:
            selector = {k: bool(v) for k, v in chosen.fields.items() if not k.startswith("_")}
    return ROPlan(
        start=start_kind,
        offset_s=offset_s,
        period_s=period_s,
        utc_start=utc_start,
        start_gpi=start_gpi,
        stop=stop_kind,
        duration_s=duration_s,
        stop_gpi=stop_gpi,
        aispecs=plans,
        report=trigger,
        n=n,
        selector=selector,
    )


def _plan_aispec(ai: Param, path: list[int], antennas: int) -> AIPlan:
    reject_unknown(ai, {"AISpecStopTrigger", "InventoryParameterSpec"}, path)
    ids = list(ai.fields.get("AntennaIDs", []))
    if not ids:
        raise parameter_error(path, S.A_INVALID, "AISpec lists no antenna", field=0)
    if 0 in ids and len(ids) > 1:
        raise parameter_error(path, S.A_INVALID, "antenna 0 (all) must stand alone", field=0)
    bad = [a for a in ids if a > antennas]
    if bad:
        raise parameter_error(
            path, S.A_OUT_OF_RANGE, f"antenna {bad[0]} (this reader has {antennas})", field=0
        )
    ips = list(ai.children_named("InventoryParameterSpec"))
    ipath = [*path, _T["InventoryParameterSpec"]]
    if not ips:
        raise parameter_error(
            ipath, S.P_MISSING_PARAMETER, "AISpec needs an InventoryParameterSpec"
        )
    if len(ips) > 1:
        raise parameter_error(
            ipath, S.P_OVERFLOW_PARAMETER, "one InventoryParameterSpec per AISpec at most"
        )
    if int(ips[0].fields.get("InventoryParameterSpecID", 0)) == 0:
        raise parameter_error(ipath, S.A_INVALID, "InventoryParameterSpecID 0", field=0)
    in_range(ips[0], "AirProtocolID", 1, AIR_PROTOCOL_EPC_C1G2, AIR_PROTOCOL_EPC_C1G2, ipath)
    for config in ips[0].children_named("AntennaConfiguration"):
        in_range(config, "AntennaID", 0, 0, antennas, [*ipath, _T["AntennaConfiguration"]])
    trigger = only(ai, "AISpecStopTrigger", path, required=True)
    assert trigger is not None
    tpath = [*path, _T["AISpecStopTrigger"]]
    reject_unknown(trigger, {"GPITriggerValue", "TagObservationTrigger"}, tpath)
    kind = AISpecStopTrigger(in_range(trigger, "Trigger", 0, 0, 3, tpath))
    chosen = None if 0 in ids else frozenset(ids)
    if kind is AISpecStopTrigger.DURATION:
        ms = in_range(trigger, "DurationTriggerValue", 1, 1, 2**32 - 1, tpath)
        return AIPlan(chosen, kind, duration_s=ms / 1000)
    if kind is AISpecStopTrigger.GPI:
        value = only(trigger, "GPITriggerValue", tpath, required=True)
        assert value is not None
        return AIPlan(chosen, kind, gpi=_gpi(value, tpath))
    if kind is AISpecStopTrigger.TAG_OBSERVATION:
        obs = only(trigger, "TagObservationTrigger", tpath, required=True)
        assert obs is not None
        opath = [*tpath, _T["TagObservationTrigger"]]
        which = TagObservationTrigger(in_range(obs, "Trigger", 0, 0, 2, opath))
        number, t_ms = 0, 0
        if which is TagObservationTrigger.N_TAG_OBSERVATIONS:
            number = in_range(obs, "NumberOfTags", 2, 1, 0xFFFF, opath)
        elif which is TagObservationTrigger.N_ATTEMPTS:
            number = in_range(obs, "NumberOfAttempts", 3, 1, 0xFFFF, opath)
        else:
            t_ms = in_range(obs, "T", 4, 1, 0xFFFF, opath)
        return AIPlan(
            chosen,
            kind,
            observation=which,
            number=number,
            t_s=t_ms / 1000,
            timeout_s=obs.fields.get("Timeout", 0) / 1000,
        )
    return AIPlan(chosen, kind)
