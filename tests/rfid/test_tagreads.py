"""The tag-report fast path agrees with the generic LLRP decoder, byte for byte, and refuses
what the generic decoder refuses."""

from __future__ import annotations

import pytest

from protocols.llrp import LLRPError, Param, decode_body, encode_body, message, param
from protocols.llrp.tagreads import NO_RSSI, tag_reads
from simulators.llrp.reader import tag_report, tag_report_body
from simulators.llrp.world import World, WorldConfig

ALL = dict.fromkeys(
    (
        "EnableROSpecID",
        "EnableSpecIndex",
        "EnableInventoryParamSpecID",
        "EnableAntennaID",
        "EnablePeakRSSI",
        "EnableChannelIndex",
        "EnableFirstSeenTimestamp",
        "EnableLastSeenTimestamp",
        "EnableTagSeenCount",
    ),
    True,
)


def generic(body: bytes) -> list[tuple[bytes, int, int]]:
    out = []
    for tag in decode_body(61, body).children:
        assert isinstance(tag, Param)
        epc = tag.child("EPC96") or tag.child("EPCData")
        antenna = tag.child("AntennaID")
        rssi = tag.child("PeakRSSI")
        assert epc is not None
        out.append(
            (
                bytes(epc.fields["EPC"]),
                antenna.fields["Value"] if antenna else 0,
                rssi.fields["Value"] if rssi else NO_RSSI,
            )
        )
    return out


@pytest.mark.parametrize("selector", [ALL, {}, {"EnablePeakRSSI": True}, {"EnableAntennaID": True}])
def test_fast_path_and_generic_decoder_agree(selector: dict[str, bool]) -> None:
    world = World(WorldConfig(antennas=4, items_per_shelf=50, seed=2))
    reads = world.cycle(1.0)
    body = encode_body(tag_report(reads, selector, 7, 2))
    assert tag_report_body(reads, selector, 7, 2) == body  # the simulator's fast writer too
    got = tag_reads(body)
    assert got == generic(body)
    assert len(got) == len(reads) > 100
    if selector.get("EnablePeakRSSI"):
        assert [rssi for _, _, rssi in got] == [r.rssi for r in reads]  # negative dBm kept


def test_epc_data_of_other_lengths_and_unknown_parameters() -> None:
    report = message(
        "RO_ACCESS_REPORT",
        0,
        param(
            "TagReportData",
            param("EPCData", EPCNumBits=128, EPC=bytes(range(16))),
            param("AntennaID", Value=3),
        ),
        param("TagReportData", param("AntennaID", Value=1)),  # no EPC: skipped
    )
    assert tag_reads(encode_body(report)) == [(bytes(range(16)), 3, NO_RSSI)]


@pytest.mark.parametrize("cut", [1, 3, 5, 11])
def test_a_truncated_report_is_refused(cut: int) -> None:
    world = World(WorldConfig(antennas=1, items_per_shelf=3, seed=2))
    body = tag_report_body(world.cycle(1.0) or world.cycle(2.0), ALL, 1)
    with pytest.raises(LLRPError):
        tag_reads(body[:-cut])


def test_an_unknown_tv_type_is_refused() -> None:
    body = bytearray(tag_report_body([], ALL, 1))
    inner = b"\x8d" + bytes(12) + b"\xff\x00"  # TV type 127: size unknown
    body += (240).to_bytes(2, "big") + (4 + len(inner)).to_bytes(2, "big") + inner
    with pytest.raises(LLRPError, match="unknown TV type 127"):
        tag_reads(bytes(body))
