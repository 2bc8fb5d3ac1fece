"""The hot path of a fixed reader: the tag reads in an RO_ACCESS_REPORT body, straight from
the bytes.

A store-sized reader reports thousands of tags a second; building a `Param` tree for each
(what `decode_body` does for every other message) costs more than everything the edge does
with the read afterwards. `tag_reads` walks the TagReportData parameters once and returns
(EPC, antenna, peak RSSI) per tag, the EPC as the bytes it came in (a store's edge keeps
tens of thousands of them: 12 bytes weigh less than 24 hex characters), with the same
checks as the generic decoder: a parameter that runs past its container, an unknown TV
type or a truncated header is an `LLRPError` naming where. Parameters other than
TagReportData (RFSurveyReportData, custom ones) are skipped by their length, as the generic
decoder keeps them and the driver ignores them.
"""

from __future__ import annotations

from protocols.llrp.codec import LLRPError
from protocols.llrp.spec import MESSAGE_NAMES, PARAM_NAMES, TV_SIZES

RO_ACCESS_REPORT = MESSAGE_NAMES["RO_ACCESS_REPORT"]
_TAG_REPORT_DATA = PARAM_NAMES["TagReportData"]
_EPC_DATA = PARAM_NAMES["EPCData"]
_EPC96 = 13
_ANTENNA_ID = 1
_PEAK_RSSI = 6

NO_RSSI = -80  # readers asked for PeakRSSI always send it; a weak default otherwise

TagRead = tuple[bytes, int, int]  # EPC, antenna id (0: not sent), RSSI dBm


def tag_reads(body: bytes | bytearray | memoryview) -> list[TagRead]:
    """(EPC, antenna, RSSI) of every TagReportData with an EPC in an RO_ACCESS_REPORT body."""
    buf = bytes(body)
    end = len(buf)
    out: list[TagRead] = []
    append = out.append
    tv_sizes = TV_SIZES
    pos = 0
    while pos < end:
        if buf[pos] & 0x80:
            raise LLRPError("RO_ACCESS_REPORT: a TV parameter outside TagReportData")
        if pos + 4 > end:
            raise LLRPError(f"RO_ACCESS_REPORT: truncated parameter header at byte {pos}")
        type_ = ((buf[pos] << 8) | buf[pos + 1]) & 0x3FF
        stop = pos + ((buf[pos + 2] << 8) | buf[pos + 3])
        if stop < pos + 4 or stop > end:
            raise LLRPError(f"RO_ACCESS_REPORT: parameter {type_} has bad length")
        if type_ != _TAG_REPORT_DATA:
            pos = stop
            continue
        epc: bytes | None = None
        antenna = 0
        rssi = NO_RSSI
        p = pos + 4
        while p < stop:
            first = buf[p]
            if first & 0x80:
                tv = first & 0x7F
                size = tv_sizes.get(tv)
                if size is None:
                    raise LLRPError(f"RO_ACCESS_REPORT/TagReportData: unknown TV type {tv}")
                nxt = p + 1 + size
                if nxt > stop:
                    raise LLRPError(f"RO_ACCESS_REPORT/TagReportData: TV {tv} runs past it")
                if tv == _EPC96:
                    epc = buf[p + 1 : nxt]
                elif tv == _ANTENNA_ID:
                    antenna = (buf[p + 1] << 8) | buf[p + 2]
                elif tv == _PEAK_RSSI:
                    rssi = buf[p + 1] - 256 if buf[p + 1] & 0x80 else buf[p + 1]
                p = nxt
                continue
            if p + 4 > stop:
                raise LLRPError("RO_ACCESS_REPORT/TagReportData: truncated parameter header")
            inner = ((buf[p] << 8) | buf[p + 1]) & 0x3FF
            nxt = p + ((buf[p + 2] << 8) | buf[p + 3])
            if nxt < p + 4 or nxt > stop:
                raise LLRPError(f"RO_ACCESS_REPORT/TagReportData: parameter {inner} bad length")
            if inner == _EPC_DATA:
                if p + 6 > nxt:
                    raise LLRPError("RO_ACCESS_REPORT/TagReportData/EPCData: truncated")
                bits = (buf[p + 4] << 8) | buf[p + 5]
                if p + 6 + (bits + 7) // 8 > nxt:
                    raise LLRPError("RO_ACCESS_REPORT/TagReportData/EPCData: EPC runs past it")
                epc = buf[p + 6 : p + 6 + (bits + 7) // 8]
            p = nxt
        if epc:
            append((epc, antenna, rssi))
        pos = stop
    return out
