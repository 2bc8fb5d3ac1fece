"""The LLRP 1.0.1 message and parameter definitions the codec knows.

Each definition lists the fixed fields of a parameter (in wire order) and the child
parameters it may contain. Field and child names follow the Go LLRP library of EdgeX
(`device-rfid-llrp-go`), so a decoded message reads like the JSON of the fixtures.

Field kinds:
  u8 u16 u32 u64 s8 s16 s32  big-endian integers
  bN                         N-bit unsigned bit field (bool when N == 1); bit fields are
                             packed MSB first and always add up to whole bytes
  rN                         N reserved bits (written as zero)
  u8v u16v u32v              u16 element count, then the elements
  utf8v                      u16 byte count, then UTF-8 text
  bitcount / bitdata         a bit count (u16), then ceil(count / 8) bytes of data
  bytes12                    12 raw bytes (EPC-96)
  rest                       every byte left in the parameter (custom data)

A child slot is (name, parameter type numbers, repeated). Repeated slots decode to lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Field = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Slot:
    name: str
    types: tuple[int, ...]
    repeated: bool = False


@dataclass(frozen=True, slots=True)
class ParamDef:
    type: int
    name: str
    fields: tuple[Field, ...] = ()
    slots: tuple[Slot, ...] = ()
    tv: bool = False
    # The Go library shows a parameter with a single field as that field's value.
    flatten: bool = False
    slot_of: dict[int, Slot] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class MessageDef:
    type: int
    name: str
    fields: tuple[Field, ...] = ()
    slots: tuple[Slot, ...] = ()
    slot_of: dict[int, Slot] = field(default_factory=dict, compare=False)


CUSTOM = 1023


def _s(name: str, *types: int, many: bool = False) -> Slot:
    return Slot(name, types, many)


def _custom() -> Slot:
    return _s("Custom", CUSTOM, many=True)


PARAMS: dict[int, ParamDef] = {}
MESSAGES: dict[int, MessageDef] = {}
PARAM_NAMES: dict[str, int] = {}
MESSAGE_NAMES: dict[str, int] = {}


def _p(
    type_: int,
    name: str,
    fields: tuple[Field, ...] = (),
    slots: tuple[Slot, ...] = (),
    *,
    tv: bool = False,
    flatten: bool = False,
) -> None:
    definition = ParamDef(type_, name, fields, slots, tv, flatten)
    for slot in slots:
        for t in slot.types:
            definition.slot_of[t] = slot
    PARAMS[type_] = definition
    PARAM_NAMES[name] = type_


def _m(type_: int, name: str, fields: tuple[Field, ...] = (), slots: tuple[Slot, ...] = ()) -> None:
    definition = MessageDef(type_, name, fields, slots)
    for slot in slots:
        for t in slot.types:
            definition.slot_of[t] = slot
    MESSAGES[type_] = definition
    MESSAGE_NAMES[name] = type_


# --------------------------------------------------------------------------- TV parameters
_tv = (
    (1, "AntennaID", "u16"),
    (2, "FirstSeenUTC", "u64"),
    (3, "FirstSeenUptime", "u64"),
    (4, "LastSeenUTC", "u64"),
    (5, "LastSeenUptime", "u64"),
    (6, "PeakRSSI", "s8"),
    (7, "ChannelIndex", "u16"),
    (8, "TagSeenCount", "u16"),
    (9, "ROSpecID", "u32"),
    (10, "InventoryParameterSpecID", "u16"),
    (11, "C1G2CRC", "u16"),
    (12, "C1G2PC", "u16"),
    (14, "SpecIndex", "u16"),
    (15, "ClientRequestOpSpecResult", "u16"),
    (16, "AccessSpecID", "u32"),
    (17, "OpSpecID", "u16"),
    (19, "C1G2XPCW1", "u16"),
    (20, "C1G2XPCW2", "u16"),
)
for _type, _name, _kind in _tv:
    _p(_type, _name, (("Value", _kind),), tv=True, flatten=True)
_p(13, "EPC96", (("EPC", "bytes12"),), tv=True)
_p(18, "C1G2SingulationDetails", (("NumCollisionSlots", "u16"), ("NumEmptySlots", "u16")), tv=True)

TV_SIZES: dict[int, int] = {
    1: 2, 2: 8, 3: 8, 4: 8, 5: 8, 6: 1, 7: 2, 8: 2, 9: 4, 10: 2, 11: 2, 12: 2, 13: 12,
    14: 2, 15: 2, 16: 4, 17: 2, 18: 4, 19: 2, 20: 2,
}  # fmt: skip

# --------------------------------------------------------------------------- TLV parameters
_p(128, "UTCTimestamp", (("Microseconds", "u64"),), flatten=True)
_p(129, "Uptime", (("Microseconds", "u64"),), flatten=True)
_p(
    137,
    "GeneralDeviceCapabilities",
    (
        ("MaxSupportedAntennas", "u16"),
        ("CanSetAntennaProperties", "b1"),
        ("HasUTCClock", "b1"),
        ("_", "r14"),
        ("DeviceManufacturer", "u32"),
        ("Model", "u32"),
        ("FirmwareVersion", "utf8v"),
    ),
    (
        _s("ReceiveSensitivities", 139, many=True),
        _s("PerAntennaReceiveSensitivityRanges", 149, many=True),
        _s("GPIOCapabilities", 141),
        _s("PerAntennaAirProtocols", 140, many=True),
        _s("MaximumReceiveSensitivity", 363),
    ),
)
_p(139, "ReceiveSensitivityTableEntry", (("Index", "u16"), ("ReceiveSensitivity", "s16")))
_p(140, "PerAntennaAirProtocol", (("AntennaID", "u16"), ("AirProtocolIDs", "u8v")))
_p(141, "GPIOCapabilities", (("NumGPIs", "u16"), ("NumGPOs", "u16")))
_p(
    142,
    "LLRPCapabilities",
    (
        ("CanDoRFSurvey", "b1"),
        ("CanReportBufferFillWarning", "b1"),
        ("SupportsClientRequestOpSpec", "b1"),
        ("CanDoTagInventoryStateAwareSingulation", "b1"),
        ("SupportsEventsAndReportHolding", "b1"),
        ("_", "r3"),
        ("MaxPriorityLevelSupported", "u8"),
        ("ClientRequestedOpSpecTimeout", "u16"),
        ("MaxROSpecs", "u32"),
        ("MaxSpecsPerROSpec", "u32"),
        ("MaxInventoryParameterSpecsPerAISpec", "u32"),
        ("MaxAccessSpecs", "u32"),
        ("MaxOpSpecsPerAccessSpec", "u32"),
    ),
)
_p(
    143,
    "RegulatoryCapabilities",
    (("CountryCode", "u16"), ("CommunicationsStandard", "u16")),
    (_s("UHFBandCapabilities", 144), _custom()),
)
_p(
    144,
    "UHFBandCapabilities",
    (),
    (
        _s("TransmitPowerLevels", 145, many=True),
        _s("FrequencyInformation", 146),
        _s("C1G2RFModes", 328),
        _s("RFSurveyFrequencyCapabilities", 365),
    ),
)
_p(145, "TransmitPowerLevelTableEntry", (("Index", "u16"), ("TransmitPowerValue", "s16")))
_p(
    146,
    "FrequencyInformation",
    (("Hopping", "b1"), ("_", "r7")),
    (_s("FrequencyHopTables", 147, many=True), _s("FixedFrequencyTable", 148)),
)
_p(147, "FrequencyHopTable", (("HopTableID", "u8"), ("_", "r8"), ("Frequencies", "u32v")))
_p(148, "FixedFrequencyTable", (("Frequencies", "u32v"),))
_p(
    149,
    "PerAntennaReceiveSensitivityRange",
    (
        ("AntennaID", "u16"),
        ("ReceiveSensitivityIndexMin", "u16"),
        ("ReceiveSensitivityIndexMax", "u16"),
    ),
)
_p(
    177,
    "ROSpec",
    (("ROSpecID", "u32"), ("Priority", "u8"), ("ROSpecCurrentState", "u8")),
    (
        _s("ROBoundarySpec", 178),
        _s("AISpecs", 183, many=True),
        _s("RFSurveySpecs", 187, many=True),
        _s("LoopSpec", 355),
        _s("ROReportSpec", 237),
        _custom(),
    ),
)
_p(178, "ROBoundarySpec", (), (_s("ROSpecStartTrigger", 179), _s("ROSpecStopTrigger", 182)))
_p(
    179,
    "ROSpecStartTrigger",
    (("Trigger", "u8"),),
    (_s("PeriodicTriggerValue", 180), _s("GPITriggerValue", 181)),
)
_p(180, "PeriodicTriggerValue", (("Offset", "u32"), ("Period", "u32")), (_s("UTCTimestamp", 128),))
_p(
    181,
    "GPITriggerValue",
    (("GPIPortNum", "u16"), ("GPIEvent", "b1"), ("_", "r7"), ("Timeout", "u32")),
)
_p(
    182,
    "ROSpecStopTrigger",
    (("Trigger", "u8"), ("DurationTriggerValue", "u32")),
    (_s("GPITriggerValue", 181),),
)
_p(
    183,
    "AISpec",
    (("AntennaIDs", "u16v"),),
    (
        _s("StopTrigger", 184),
        _s("InventoryParameterSpecs", 186, many=True),
        _custom(),
    ),
)
_p(
    184,
    "AISpecStopTrigger",
    (("Trigger", "u8"), ("DurationTriggerValue", "u32")),
    (_s("GPITriggerValue", 181), _s("TagObservationTrigger", 185)),
)
_p(
    185,
    "TagObservationTrigger",
    (
        ("Trigger", "u8"),
        ("_", "r8"),
        ("NumberOfTags", "u16"),
        ("NumberOfAttempts", "u16"),
        ("T", "u16"),
        ("Timeout", "u32"),
    ),
)
_p(
    186,
    "InventoryParameterSpec",
    (("InventoryParameterSpecID", "u16"), ("AirProtocolID", "u8")),
    (_s("AntennaConfigurations", 222, many=True), _custom()),
)
_p(217, "LLRPConfigurationStateValue", (("Value", "u32"),), flatten=True)
_p(218, "Identification", (("IDType", "u8"), ("ReaderID", "u8v")))
_p(219, "GPOWriteData", (("Port", "u16"), ("Data", "b1"), ("_", "r7")))
_p(220, "KeepAliveSpec", (("Trigger", "u8"), ("Interval", "u32")))
_p(
    221,
    "AntennaProperties",
    (("AntennaConnected", "b1"), ("_", "r7"), ("AntennaID", "u16"), ("AntennaGain", "s16")),
)
_p(
    222,
    "AntennaConfiguration",
    (("AntennaID", "u16"),),
    (
        _s("RFReceiver", 223),
        _s("RFTransmitter", 224),
        _s("C1G2InventoryCommand", 330),
        _custom(),
    ),
)
_p(223, "RFReceiver", (("ReceiverSensitivity", "u16"),), flatten=True)
_p(
    224,
    "RFTransmitter",
    (("HopTableID", "u16"), ("ChannelIndex", "u16"), ("TransmitPowerIndex", "u16")),
)
_p(225, "GPIPortCurrentState", (("Port", "u16"), ("Enabled", "b1"), ("_", "r7"), ("State", "u8")))
_p(
    226,
    "EventsAndReports",
    (("HoldEventsAndReportsUponReconnect", "b1"), ("_", "r7")),
    flatten=True,
)
_p(
    237,
    "ROReportSpec",
    (("Trigger", "u8"), ("N", "u16")),
    (_s("TagReportContentSelector", 238), _custom()),
)
_p(
    238,
    "TagReportContentSelector",
    (
        ("EnableROSpecID", "b1"),
        ("EnableSpecIndex", "b1"),
        ("EnableInventoryParamSpecID", "b1"),
        ("EnableAntennaID", "b1"),
        ("EnableChannelIndex", "b1"),
        ("EnablePeakRSSI", "b1"),
        ("EnableFirstSeenTimestamp", "b1"),
        ("EnableLastSeenTimestamp", "b1"),
        ("EnableTagSeenCount", "b1"),
        ("EnableAccessSpecID", "b1"),
        ("_", "r6"),
    ),
    (_s("C1G2EPCMemorySelector", 348), _custom()),
)
_p(239, "AccessReportSpec", (("Trigger", "u8"),), flatten=True)
_p(
    240,
    "TagReportData",
    (),
    (
        _s("EPCData", 241),
        _s("EPC96", 13),
        _s("ROSpecID", 9),
        _s("SpecIndex", 14),
        _s("InventoryParameterSpecID", 10),
        _s("AntennaID", 1),
        _s("PeakRSSI", 6),
        _s("ChannelIndex", 7),
        _s("FirstSeenUTC", 2),
        _s("FirstSeenUptime", 3),
        _s("LastSeenUTC", 4),
        _s("LastSeenUptime", 5),
        _s("TagSeenCount", 8),
        _s("C1G2PC", 12),
        _s("C1G2XPCW1", 19),
        _s("C1G2XPCW2", 20),
        _s("C1G2CRC", 11),
        _s("AccessSpecID", 16),
        _s("ClientRequestOpSpecResult", 15),
        _custom(),
    ),
)
_p(241, "EPCData", (("EPCNumBits", "bitcount"), ("EPC", "bitdata")))
_p(244, "ReaderEventNotificationSpec", (), (_s("EventNotificationStates", 245, many=True),))
_p(
    245,
    "EventNotificationState",
    (("ReaderEventType", "u16"), ("NotificationEnabled", "b1"), ("_", "r7")),
)
_p(
    246,
    "ReaderEventNotificationData",
    (),
    (
        _s("UTCTimestamp", 128),
        _s("Uptime", 129),
        _s("HoppingEvent", 247),
        _s("GPIEvent", 248),
        _s("ROSpecEvent", 249),
        _s("ReportBufferLevelWarningEvent", 250),
        _s("ReportBufferOverflowErrorEvent", 251),
        _s("ReaderExceptionEvent", 252),
        _s("RFSurveyEvent", 253),
        _s("AISpecEvent", 254),
        _s("AntennaEvent", 255),
        _s("ConnectionAttemptEvent", 256),
        _s("ConnectionCloseEvent", 257),
        _s("SpecLoopEvent", 356),
        _custom(),
    ),
)
_p(247, "HoppingEvent", (("HopTableID", "u16"), ("NextChannelIndex", "u16")))
_p(248, "GPIEvent", (("Port", "u16"), ("Event", "b1"), ("_", "r7")))
_p(249, "ROSpecEvent", (("Trigger", "u8"), ("ROSpecID", "u32"), ("PreemptingROSpecID", "u32")))
_p(250, "ReportBufferLevelWarningEvent", (("PercentFull", "u8"),))
_p(251, "ReportBufferOverflowErrorEvent")
_p(
    252,
    "ReaderExceptionEvent",
    (("Message", "utf8v"),),
    (
        _s("ROSpecID", 9),
        _s("SpecIndex", 14),
        _s("InventoryParameterSpecID", 10),
        _s("AntennaID", 1),
        _s("AccessSpecID", 16),
        _s("OpSpecID", 17),
        _custom(),
    ),
)
_p(253, "RFSurveyEvent", (("Trigger", "u8"), ("ROSpecID", "u32"), ("SpecIndex", "u16")))
_p(
    254,
    "AISpecEvent",
    (("Trigger", "u8"), ("ROSpecID", "u32"), ("SpecIndex", "u16")),
    (_s("C1G2SingulationDetails", 18),),
)
_p(255, "AntennaEvent", (("Trigger", "u8"), ("AntennaID", "u16")))
_p(256, "ConnectionAttemptEvent", (("Status", "u16"),))
_p(257, "ConnectionCloseEvent")
_p(
    287,
    "LLRPStatus",
    (("Status", "u16"), ("ErrorDescription", "utf8v")),
    (_s("FieldError", 288), _s("ParameterError", 289)),
)
_p(288, "FieldError", (("FieldIndex", "u16"), ("ErrorCode", "u16")))
_p(
    289,
    "ParameterError",
    (("ParameterType", "u16"), ("ErrorCode", "u16")),
    (_s("FieldError", 288), _s("ParameterError", 289)),
)
_p(
    327,
    "C1G2LLRPCapabilities",
    (
        ("SupportsBlockErase", "b1"),
        ("SupportsBlockWrite", "b1"),
        ("SupportsBlockPermalock", "b1"),
        ("SupportsTagRecommissioning", "b1"),
        ("SupportsUMIMethod2", "b1"),
        ("SupportsXPC", "b1"),
        ("_", "r2"),
        ("MaxSelectFiltersPerQuery", "u16"),
    ),
)
_p(328, "C1G2UHFRFModeTable", (), (_s("UHFC1G2RFModeTableEntries", 329, many=True),))
_p(
    329,
    "C1G2UHFRFModeTableEntry",
    (
        ("ModeID", "u32"),
        ("DivideRatio", "b1"),
        ("IsEPCHagConformant", "b1"),
        ("_", "r6"),
        ("Modulation", "u8"),
        ("ForwardLinkModulation", "u8"),
        ("SpectralMask", "u8"),
        ("BackscatterDataRate", "u32"),
        ("PIERatio", "u32"),
        ("MinTariTime", "u32"),
        ("MaxTariTime", "u32"),
        ("StepTariTime", "u32"),
    ),
)
_p(
    330,
    "C1G2InventoryCommand",
    (("TagInventoryStateAware", "b1"), ("_", "r7")),
    (
        _s("Filters", 331, many=True),
        _s("RFControl", 335),
        _s("SingulationControl", 336),
        _custom(),
    ),
)
_p(335, "C1G2RFControl", (("RFModeID", "u16"), ("Tari", "u16")))
_p(
    336,
    "C1G2SingulationControl",
    (("Session", "b2"), ("_", "r6"), ("TagPopulation", "u16"), ("TagTransitTime", "u32")),
    (_s("InvAwareAction", 337),),
)
_p(
    348,
    "C1G2EPCMemorySelector",
    (("CRCEnabled", "b1"), ("PCBitsEnabled", "b1"), ("XPCBitsEnabled", "b1"), ("_", "r5")),
)
_p(1023, "Custom", (("VendorID", "u32"), ("Subtype", "u32"), ("Data", "rest")))

# --------------------------------------------------------------------------- messages
_STATUS = _s("LLRPStatus", 287)
_m(1, "GET_READER_CAPABILITIES", (("ReqCapabilities", "u8"),), (_custom(),))
_m(
    11,
    "GET_READER_CAPABILITIES_RESPONSE",
    (),
    (
        _STATUS,
        _s("GeneralDeviceCapabilities", 137),
        _s("LLRPCapabilities", 142),
        _s("RegulatoryCapabilities", 143),
        _s("C1G2LLRPCapabilities", 327),
        _custom(),
    ),
)
_m(
    2,
    "GET_READER_CONFIG",
    (("AntennaID", "u16"), ("RequestedData", "u8"), ("GPIPortNum", "u16"), ("GPOPortNum", "u16")),
    (_custom(),),
)
_READER_CONFIG_SLOTS = (
    _s("Identification", 218),
    _s("AntennaProperties", 221, many=True),
    _s("AntennaConfigurations", 222, many=True),
    _s("ReaderEventNotificationSpec", 244),
    _s("ROReportSpec", 237),
    _s("AccessReportSpec", 239),
    _s("LLRPConfigurationStateValue", 217),
    _s("KeepAliveSpec", 220),
    _s("GPIPortCurrentStates", 225, many=True),
    _s("GPOWriteData", 219, many=True),
    _s("EventsAndReports", 226),
    _custom(),
)
_m(12, "GET_READER_CONFIG_RESPONSE", (), (_STATUS, *_READER_CONFIG_SLOTS))
_m(3, "SET_READER_CONFIG", (("ResetToFactoryDefaults", "b1"), ("_", "r7")), _READER_CONFIG_SLOTS)
_m(13, "SET_READER_CONFIG_RESPONSE", (), (_STATUS,))
_m(14, "CLOSE_CONNECTION")
_m(4, "CLOSE_CONNECTION_RESPONSE", (), (_STATUS,))
_m(20, "ADD_ROSPEC", (), (_s("ROSpec", 177),))
_m(30, "ADD_ROSPEC_RESPONSE", (), (_STATUS,))
for _type, _name in (
    (21, "DELETE_ROSPEC"),
    (22, "START_ROSPEC"),
    (23, "STOP_ROSPEC"),
    (24, "ENABLE_ROSPEC"),
    (25, "DISABLE_ROSPEC"),
):
    _m(_type, _name, (("ROSpecID", "u32"),))
    _m(_type + 10, f"{_name}_RESPONSE", (), (_STATUS,))
_m(26, "GET_ROSPECS")
_m(36, "GET_ROSPECS_RESPONSE", (), (_STATUS, _s("ROSpecs", 177, many=True)))
_m(40, "ADD_ACCESSSPEC", (), (_s("AccessSpec", 207),))
_m(50, "ADD_ACCESSSPEC_RESPONSE", (), (_STATUS,))
for _type, _name in (
    (41, "DELETE_ACCESSSPEC"),
    (42, "ENABLE_ACCESSSPEC"),
    (43, "DISABLE_ACCESSSPEC"),
):
    _m(_type, _name, (("AccessSpecID", "u32"),))
    _m(_type + 10, f"{_name}_RESPONSE", (), (_STATUS,))
_m(44, "GET_ACCESSSPECS")
_m(54, "GET_ACCESSSPECS_RESPONSE", (), (_STATUS, _s("AccessSpecs", 207, many=True)))
_m(60, "GET_REPORT")
_m(
    61,
    "RO_ACCESS_REPORT",
    (),
    (_s("TagReportData", 240, many=True), _s("RFSurveyReportData", 242, many=True), _custom()),
)
_m(62, "KEEPALIVE")
_m(72, "KEEPALIVE_ACK")
_m(63, "READER_EVENT_NOTIFICATION", (), (_s("ReaderEventNotificationData", 246),))
_m(64, "ENABLE_EVENTS_AND_REPORTS")
_m(100, "ERROR_MESSAGE", (), (_STATUS,))
_m(1023, "CUSTOM_MESSAGE", (("VendorID", "u32"), ("Subtype", "u8"), ("Data", "rest")))
