"""LLRP 1.0.1 enumerations shared by the reader client and the simulated reader.

Values from the LLRP 1.0.1 specification (EPCglobal), as the Go LLRP library of EdgeX
(`device-rfid-llrp-go`, messages.yaml) also lists them.
"""

from __future__ import annotations

from enum import IntEnum

from protocols.llrp.codec import Param
from protocols.llrp.spec import PARAMS


class StatusCode(IntEnum):
    """LLRPStatus / FieldError / ParameterError codes (section 14.2.1).

    M_* describe a message, P_* a parameter, A_* a field (as FieldError.ErrorCode)."""

    SUCCESS = 0
    M_PARAMETER_ERROR = 100
    M_FIELD_ERROR = 101
    M_UNEXPECTED_PARAMETER = 102
    M_MISSING_PARAMETER = 103
    M_DUPLICATE_PARAMETER = 104
    M_OVERFLOW_PARAMETER = 105
    M_OVERFLOW_FIELD = 106
    M_UNKNOWN_PARAMETER = 107
    M_UNKNOWN_FIELD = 108
    M_UNSUPPORTED_MESSAGE = 109
    M_UNSUPPORTED_VERSION = 110
    M_UNSUPPORTED_PARAMETER = 111
    P_PARAMETER_ERROR = 200
    P_FIELD_ERROR = 201
    P_UNEXPECTED_PARAMETER = 202
    P_MISSING_PARAMETER = 203
    P_DUPLICATE_PARAMETER = 204
    P_OVERFLOW_PARAMETER = 205
    P_OVERFLOW_FIELD = 206
    P_UNKNOWN_PARAMETER = 207
    P_UNKNOWN_FIELD = 208
    P_UNSUPPORTED_PARAMETER = 209
    A_INVALID = 300
    A_OUT_OF_RANGE = 301
    R_DEVICE_ERROR = 401


class ROSpecState(IntEnum):
    DISABLED = 0
    INACTIVE = 1
    ACTIVE = 2


class StartTrigger(IntEnum):
    """ROSpecStartTrigger.Trigger"""

    NULL = 0  # only START_ROSPEC starts it
    IMMEDIATE = 1  # starts when enabled (once)
    PERIODIC = 2  # PeriodicTriggerValue: Offset, then every Period ms
    GPI = 3  # GPITriggerValue: on a GPI transition


class ROSpecStopTrigger(IntEnum):
    NULL = 0  # ends when its specs are done, or on STOP_ROSPEC
    DURATION = 1
    GPI = 2


class AISpecStopTrigger(IntEnum):
    NULL = 0  # runs until the ROSpec stops
    DURATION = 1
    GPI = 2
    TAG_OBSERVATION = 3


class TagObservationTrigger(IntEnum):
    N_TAG_OBSERVATIONS = 0
    NO_NEW_TAGS_FOR_T = 1
    N_ATTEMPTS = 2
    # 3 and 4 (unique tags) are LLRP 1.1 only


class ReportTrigger(IntEnum):
    """ROReportSpec.Trigger (1.0.1 has 0..2; 1.1 adds time-based ones)."""

    NONE = 0  # reports only on GET_REPORT
    N_TAGS_OR_END_OF_AISPEC = 1
    N_TAGS_OR_END_OF_ROSPEC = 2


class ROSpecEventType(IntEnum):
    START_OF_ROSPEC = 0
    END_OF_ROSPEC = 1
    PREEMPTION_OF_ROSPEC = 2


class ReaderEventType(IntEnum):
    """EventNotificationState.ReaderEventType"""

    HOPPING = 0
    GPI = 1
    ROSPEC = 2
    REPORT_BUFFER_FILL_WARNING = 3
    READER_EXCEPTION = 4
    RF_SURVEY = 5
    AISPEC = 6
    AISPEC_WITH_SINGULATION = 7
    ANTENNA = 8


class ConnectionAttemptStatus(IntEnum):
    SUCCESS = 0
    FAILED_READER_INITIATED_CONNECTION_EXISTS = 1
    FAILED_CLIENT_INITIATED_CONNECTION_EXISTS = 2
    FAILED_OTHER_REASON = 3
    ANOTHER_CONNECTION_ATTEMPTED = 4


class KeepaliveTrigger(IntEnum):
    NULL = 0
    PERIODIC = 1


AIR_PROTOCOL_EPC_C1G2 = 1
IANA_PEN_IMPINJ = 25882  # the DeviceManufacturerName Impinj readers report


def describe_status(status: object) -> str:
    """An LLRPStatus parameter in words, with where the reader found the error:
    "M_ParameterError: antenna 9 (ROSpec > AISpec field 0: A_OutOfRange)"."""
    if not isinstance(status, Param):
        return "no LLRPStatus"

    def code(value: object) -> str:
        try:
            return StatusCode(int(value)).name  # type: ignore[call-overload]
        except (ValueError, TypeError):
            return f"status {value}"

    text = code(status.fields.get("Status", 0))
    if description := status.fields.get("ErrorDescription"):
        text += f": {description}"
    path: list[str] = []
    where: Param | None = status
    detail = ""
    while where is not None:
        field_error = where.child("FieldError")
        parameter_error = where.child("ParameterError")
        if field_error is not None:
            detail = (
                f"field {field_error.fields.get('FieldIndex')}: "
                f"{code(field_error.fields.get('ErrorCode'))}"
            )
        if parameter_error is not None:
            type_ = parameter_error.fields.get("ParameterType", 0)
            definition = PARAMS.get(int(type_))
            path.append(definition.name if definition else f"parameter {type_}")
            if parameter_error.child("ParameterError") is None and field_error is None:
                detail = code(parameter_error.fields.get("ErrorCode"))
        where = parameter_error
    if path or detail:
        text += f" ({' > '.join(path)}{' ' if path and detail else ''}{detail})"
    return text
