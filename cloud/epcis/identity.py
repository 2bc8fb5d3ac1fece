"""EPC (hex, as read) → the URI an EPCIS event names it by.

The pure-identity URI (`urn:epc:id:sgtin:0614141.812345.6789`) for every EPC binary scheme
epcpy decodes (SGTIN, SSCC, SGLN, GRAI, GIAI, GSRN, GDTI, GID, ... in their 96-bit and
longer forms): EPCIS events name objects by pure identity, never by tag URI (which carries
the filter value and partition of one particular tag). An EPC that is no GS1 scheme
(unprogrammed tags, a TID-like E2 header) or does not decode keeps the Tag Data Standard's
raw form, `urn:epc:raw:{bits}.x{HEX}`: still a URI, still the same string for the same tag.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import epcpy

log = logging.getLogger(__name__)


@lru_cache(maxsize=65_536)
def epc_uri(epc_hex: str) -> str:
    epc = epc_hex.upper()
    try:
        tag: Any = epcpy.hex_to_tag_encodable(epc)  # type: ignore[attr-defined]
        uri = str(tag.epc_uri)
    except Exception as exc:  # epcpy raises several types; an odd tag must not stop ingest
        log.debug("EPC %s has no pure identity: %s", epc, exc)
        return raw_uri(epc)
    return uri if uri.startswith("urn:epc:id:") else raw_uri(epc)


def raw_uri(epc_hex: str) -> str:
    return f"urn:epc:raw:{len(epc_hex) * 4}.x{epc_hex.upper()}"
