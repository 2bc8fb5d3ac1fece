"""Identifier rules shared by topics and payloads.

An identifier is one MQTT topic level, so it must never contain the separators or wildcards
(`/`, `+`, `#`) nor start with `$` (reserved for broker topics).
"""

import re
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)

# A store cannot be called "shopper": that level is taken by the shopper offer topics.
RESERVED_STORE_IDS = frozenset({"shopper"})

# A raw MAC address is personal data (phones rotate theirs to stay anonymous); no identifier
# that crosses the broker may carry one. Every form a MAC is written in counts:
#   separated   01:23:45:67:89:ab, 01-23-45-67-89-ab
#   dotted      0123.4567.89ab (Cisco)
#   bare        0123456789ab: 12 hex digits standing alone (no letter or digit either side).
# The one 12-hex-digit group let through is the last group of a UUID (8-4-4-4-12), which an
# iBeacon's proximity UUID is written with: it follows the UUID's other groups.
_MAC = re.compile(
    r"(?i)"
    r"(?<![0-9a-f])(?:[0-9a-f]{2}[:-]){5}[0-9a-f]{2}(?![0-9a-f])"
    r"|(?<![0-9a-z])[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}(?![0-9a-z])"
    r"|(?<![0-9a-z])(?<![0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-)[0-9a-f]{12}(?![0-9a-z])"
)


def is_identifier(value: str) -> bool:
    return _IDENTIFIER.fullmatch(value) is not None


def contains_mac_address(value: str) -> bool:
    return _MAC.search(value) is not None


def _reject_mac(value: str) -> str:
    if contains_mac_address(value):
        raise ValueError("must not contain a MAC address (privacy: publish allowlisted ids only)")
    return value


def _reject_reserved_store(value: str) -> str:
    if value in RESERVED_STORE_IDS:
        raise ValueError(f"{value!r} is reserved and cannot be a store id")
    return value


Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]
StoreId = Annotated[Identifier, AfterValidator(_reject_reserved_store)]
NodeId = Identifier
# A beacon id that may leave the edge: an allowlisted beacon identity or a rotating token.
BeaconId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9:._-]+$"),
    AfterValidator(_reject_mac),
]
Gtin = Annotated[str, StringConstraints(pattern=r"^[0-9]{14}$")]
Epc = Annotated[str, StringConstraints(pattern=r"^[0-9A-F]{4,124}$")]
MessageId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
