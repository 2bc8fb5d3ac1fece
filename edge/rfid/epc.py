"""EPC → GTIN: SGTIN-96 decoding, straight from the bits.

Retail item tags are SGTIN-96 (header 0x30). Every other scheme, and any SGTIN-96 whose
fields are out of range, stays a raw EPC (upper-case hex) with no GTIN: decoding never
raises into the presence pipeline.

SGTIN-96 is a fixed layout (GS1 EPC Tag Data Standard §14.5.1): header 8 bits, filter 3,
partition 3, company prefix and item reference 44 bits split by the partition table, serial
38. Decoding it here with integer arithmetic takes about a microsecond, so the edge needs
no EPC library (epcpy weighs 1 MB of RSS once imported; the cloud still uses it for the
other schemes) and no cache as large as a store: a cache that holds every tag of a 50,000-
item store cost 6-15 MB. The small LRU cache only spares the repeats of one report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

SGTIN96_HEADER = "30"
_HEX = re.compile(r"^[0-9A-F]{4,124}$")
# partition -> (company prefix bits, company prefix digits, item reference bits); the item
# reference (with the indicator digit first) has 13 - company digits digits
_PARTITIONS = (
    (40, 12, 4),
    (37, 11, 7),
    (34, 10, 10),
    (30, 9, 14),
    (27, 8, 17),
    (24, 7, 20),
    (20, 6, 24),
)


@dataclass(frozen=True, slots=True)
class DecodedEpc:
    epc: str  # upper-case hex, as read
    gtin: str | None = None  # GTIN-14 for SGTIN-96
    uri: str | None = None  # pure-identity URI, e.g. urn:epc:id:sgtin:0614141.812345.6789

    @property
    def is_sgtin(self) -> bool:
        return self.gtin is not None


def normalise_epc(raw: str | bytes) -> str | None:
    """Upper-case hex of an EPC, or None when it is not a usable EPC at all."""
    text = raw.hex() if isinstance(raw, bytes) else raw.strip()
    text = text.upper()
    return text if _HEX.fullmatch(text) else None


def gtin_check_digit(body13: str) -> str:
    """The GS1 mod-10 check digit of the first 13 digits of a GTIN-14."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(body13))
    return str(-total % 10)


def gtin_of(epc_hex: str) -> str | None:
    """The GTIN-14 of an SGTIN-96 EPC (hex), None for anything else; uncached (the presence
    engine asks once per new tag and keeps the answer)."""
    return _decode(epc_hex.upper()).gtin


@lru_cache(maxsize=4_096)
def decode_epc(epc_hex: str) -> DecodedEpc:
    """Decode one EPC (hex). Never raises; non-SGTIN and broken EPCs keep only the hex."""
    return _decode(epc_hex.upper())


def _decode(epc: str) -> DecodedEpc:
    if len(epc) != 24 or not epc.startswith(SGTIN96_HEADER):
        return DecodedEpc(epc)
    try:
        value = int(epc, 16)
    except ValueError:
        return DecodedEpc(epc)
    partition = (value >> 82) & 0x7
    if partition >= len(_PARTITIONS):
        return DecodedEpc(epc)
    company_bits, company_digits, item_bits = _PARTITIONS[partition]
    company = (value >> (38 + item_bits)) & ((1 << company_bits) - 1)
    item = (value >> 38) & ((1 << item_bits) - 1)
    serial = value & ((1 << 38) - 1)
    item_digits = 13 - company_digits
    if company >= 10**company_digits or item >= 10**item_digits:
        return DecodedEpc(epc)  # a field past its digits: not a valid SGTIN-96
    company_text = f"{company:0{company_digits}d}"
    item_text = f"{item:0{item_digits}d}"
    body = item_text[0] + company_text + item_text[1:]
    gtin = body + gtin_check_digit(body)
    return DecodedEpc(epc, gtin, f"urn:epc:id:sgtin:{company_text}.{item_text}.{serial}")
