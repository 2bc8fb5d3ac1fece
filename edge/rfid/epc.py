"""EPC → GTIN: SGTIN-96 decoding with epcpy, behind an LRU cache.

Retail item tags are SGTIN-96 (header 0x30). Every other scheme, and anything epcpy cannot
decode, stays a raw EPC (upper-case hex) with no GTIN: decoding never raises into the
presence pipeline. A shelf sees the same few thousand EPCs all day, so the cache makes
decoding a dict lookup.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import epcpy

log = logging.getLogger(__name__)

SGTIN96_HEADER = "30"
_HEX = re.compile(r"^[0-9A-F]{4,124}$")


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


@lru_cache(maxsize=65_536)
def decode_epc(epc_hex: str) -> DecodedEpc:
    """Decode one EPC (hex). Never raises; non-SGTIN and broken EPCs keep only the hex."""
    epc = epc_hex.upper()
    if len(epc) != 24 or not epc.startswith(SGTIN96_HEADER):
        return DecodedEpc(epc)
    try:
        tag: Any = epcpy.hex_to_tag_encodable(epc)  # type: ignore[attr-defined]
        gtin = tag.gtin()
        uri = str(tag.epc_uri)
    except Exception as exc:  # epcpy raises several types; none may stop the pipeline
        log.debug("EPC %s is not a valid SGTIN-96: %s", epc, exc)
        return DecodedEpc(epc)
    if not (isinstance(gtin, str) and len(gtin) == 14 and gtin.isdigit()):
        return DecodedEpc(epc)
    return DecodedEpc(epc, gtin, uri)


def epc_uri(epc_hex: str) -> str:
    """A URI for EPCIS: the pure identity for SGTINs, the raw tag URI otherwise."""
    decoded = decode_epc(epc_hex)
    if decoded.uri:
        return decoded.uri
    bits = len(decoded.epc) * 4
    return f"urn:epc:raw:{bits}.x{decoded.epc}"
