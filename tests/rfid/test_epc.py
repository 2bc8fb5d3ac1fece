"""EPC decoding: the SGTIN-96 vector, other schemes and garbage."""

from __future__ import annotations

import pytest

from edge.rfid.epc import decode_epc, normalise_epc
from simulators.llrp.world import sgtin96


def test_brief_vector() -> None:
    decoded = decode_epc("3074257BF7194E4000001A85")
    assert decoded.uri == "urn:epc:id:sgtin:0614141.812345.6789"
    assert decoded.gtin == "80614141123458"
    assert decoded.is_sgtin
    assert decode_epc("3074257bf7194e4000001a85").gtin == "80614141123458"


def test_simulator_epcs_are_the_same_encoding() -> None:
    assert sgtin96(812345, 6789) == "3074257BF7194E4000001A85"


def test_decoding_is_cached() -> None:
    decode_epc.cache_clear()
    decode_epc("3074257BF7194E4000001A85")
    decode_epc("3074257BF7194E4000001A85")
    assert decode_epc.cache_info().hits == 1


@pytest.mark.parametrize(
    "epc",
    [
        "E2801160600002084A6B1C35",  # TID-style, unknown header
        "350000000000000000000000",  # GID-96: another scheme, kept raw
        "3074257BF7194E40000",  # truncated SGTIN
        "30FFFFFFFFFFFFFFFFFFFFFF",  # SGTIN header, invalid partition
        "3000ABCDEF00000000000003",  # fixture EPC
        "ZZ",
        "",
    ],
)
def test_non_sgtin_and_garbage_stay_raw_and_never_raise(epc: str) -> None:
    decoded = decode_epc(epc)
    assert decoded.gtin is None or len(decoded.gtin) == 14
    assert decoded.epc == epc.upper()


def test_non_sgtin_keeps_raw_hex() -> None:
    decoded = decode_epc("E2801160600002084A6B1C35")
    assert decoded.gtin is None
    assert decoded.uri is None


def test_normalise() -> None:
    assert normalise_epc(bytes.fromhex("3074257bf7194e4000001a85")) == "3074257BF7194E4000001A85"
    assert normalise_epc("not hex") is None
