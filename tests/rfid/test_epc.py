"""EPC decoding: the SGTIN-96 vector, other schemes and garbage."""

from __future__ import annotations

import random

import pytest

from edge.rfid.epc import decode_epc, gtin_check_digit, gtin_of, normalise_epc
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


def test_sgtin96_decoding_matches_epcpy() -> None:
    """The edge decodes SGTIN-96 itself; epcpy (which the cloud uses) is the oracle: every
    partition, fields in and out of their digit ranges, GTIN and pure-identity URI alike."""
    epcpy = pytest.importorskip("epcpy")
    rng = random.Random(14)
    valid = 0
    for _ in range(3_000):
        partition = rng.randrange(8)
        company_bits = (40, 37, 34, 30, 27, 24, 20, 20)[partition]
        item_bits = 44 - company_bits
        value = (0x30 << 88) | (rng.randrange(8) << 85) | (partition << 82)
        digits = (12, 11, 10, 9, 8, 7, 6, 6)[partition]
        company = rng.randrange(10**digits) if rng.random() < 0.9 else rng.getrandbits(company_bits)
        company &= (1 << company_bits) - 1
        item = rng.randrange(min(10 ** (13 - digits), 1 << item_bits))
        if rng.random() < 0.1:
            item = rng.getrandbits(item_bits)
        value |= (company << (38 + item_bits)) | (item << 38) | rng.getrandbits(38)
        epc = f"{value:024X}"
        try:
            tag = epcpy.hex_to_tag_encodable(epc)
            expected: tuple[str | None, str | None] = (tag.gtin(), str(tag.epc_uri))
        except Exception:
            expected = (None, None)
        decoded = decode_epc(epc)
        assert (decoded.gtin, decoded.uri) == expected, epc
        assert gtin_of(epc) == expected[0]
        valid += expected[0] is not None
    assert valid > 2_000  # most of the sample is valid, so GTINs and URIs were compared


def test_gtin_check_digit() -> None:
    assert gtin_check_digit("8061414112345") == "8"
    assert gtin_check_digit("0061414112345") == "2"
