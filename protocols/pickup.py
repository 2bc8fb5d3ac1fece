"""Pickup codes: the one derivation the cloud and the edge share (stdlib only).

A code is HMAC-SHA256 under a per-bank secret key over the bank, the compartment, the
order sequence and the expiry. The cloud derives it to hand to the shopper; the edge
derives it again from the same key to check what is typed or scanned. Nothing that
crosses the broker lets anyone recover a code: the cloud sends the edge only the grant
(`order_seq`, expiry), which is public without the key. See docs/lockers.md.

- keypad code: 8 decimal digits (the first 64 bits of the HMAC, mod 10^8);
- QR payload: `SGP1:<bank>:<compartment>:<seq>:<expiry>:<tag>` with a 128-bit tag, which
  names its compartment and cannot be guessed.

Keys never appear in logs or reprs (`PickupKey.__repr__` hides them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

MIN_KEY_BYTES = 16  # 128 bits
_DOMAIN = b"storegate-pickup-v1"
_QR = re.compile(
    r"^SGP1:(?P<bank>[A-Za-z0-9_.-]{1,64}):(?P<compartment>[A-Za-z0-9_.-]{1,64})"
    r":(?P<seq>[0-9]{1,12}):(?P<expiry>[0-9]{1,12}):(?P<tag>[A-Z2-7]{26})$"
)


class PickupKey:
    """A per-bank secret (≥ 128 bits). Its bytes never reach a log line."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a pickup key needs at least {MIN_KEY_BYTES * 8} bits")
        self._key = key

    @classmethod
    def from_env(cls, name: str) -> PickupKey:
        """The key as hex in the environment variable `name` (the variable, never the key,
        is what configs name)."""
        value = os.environ.get(name)
        if not value:
            raise ValueError(f"environment variable {name} (the locker code key) is not set")
        try:
            key = bytes.fromhex(value.strip())
        except ValueError:
            raise ValueError(f"environment variable {name} is not hex") from None
        return cls(key)

    @classmethod
    def generate(cls) -> PickupKey:
        return cls(secrets.token_bytes(32))

    def hex(self) -> str:
        """For provisioning only (writing the env file); never log it."""
        return self._key.hex()

    def mac(self, message: bytes) -> bytes:
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "PickupKey(<hidden>)"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a code opens: one compartment for one order until `expiry` (whole seconds: the
    code covers the Unix time, so build grants with `Grant.make`)."""

    bank: str
    compartment: str
    order_seq: int
    expiry: datetime

    @classmethod
    def make(cls, bank: str, compartment: str, order_seq: int, expiry: datetime) -> Grant:
        return cls(bank, compartment, order_seq, expiry.astimezone(UTC).replace(microsecond=0))

    def message(self) -> bytes:
        expiry = int(self.expiry.timestamp())
        return b"|".join(
            [
                _DOMAIN,
                self.bank.encode(),
                self.compartment.encode(),
                b"%d" % self.order_seq,
                b"%d" % expiry,
            ]
        )

    def valid_at(self, now: datetime) -> bool:
        """A grant opens nothing from its expiry on (the same instant the hold ends)."""
        return now < self.expiry


def keypad_code(key: PickupKey, grant: Grant, digits: int = 8) -> str:
    value = int.from_bytes(key.mac(grant.message())[:8], "big") % 10**digits
    return f"{value:0{digits}d}"


def dropoff_code(key: PickupKey, grant: Grant, digits: int = 8) -> str:
    """The code that opens an empty compartment for a return (a drop-off). Its own domain
    (`dropoff|`), so a pickup grant and a drop-off grant with the same numbers never share
    a code."""
    value = int.from_bytes(key.mac(b"dropoff|" + grant.message())[:8], "big") % 10**digits
    return f"{value:0{digits}d}"


def _tag(key: PickupKey, grant: Grant) -> str:
    return base64.b32encode(key.mac(b"qr|" + grant.message())[:16]).decode().rstrip("=")


def qr_payload(key: PickupKey, grant: Grant) -> str:
    expiry = int(grant.expiry.timestamp())
    return f"SGP1:{grant.bank}:{grant.compartment}:{grant.order_seq}:{expiry}:{_tag(key, grant)}"


@dataclass(frozen=True, slots=True)
class QrEntry:
    grant: Grant
    tag: str


def parse_qr(text: str) -> QrEntry | None:
    match = _QR.match(text)
    if match is None:
        return None
    grant = Grant(
        bank=match["bank"],
        compartment=match["compartment"],
        order_seq=int(match["seq"]),
        expiry=datetime.fromtimestamp(int(match["expiry"]), UTC),
    )
    return QrEntry(grant, match["tag"])


def verify_qr(key: PickupKey, entry: QrEntry) -> bool:
    return hmac.compare_digest(_tag(key, entry.grant), entry.tag)


def key_check(key: PickupKey, grant: Grant) -> str:
    """What the cloud keeps per order to notice a bank key that changed since the code was
    derived. Keyed, so without the key it says nothing about the code (an unkeyed hash of
    an 8-digit code falls to 10^8 guesses however slow the hash)."""
    return key.mac(b"key-check|" + grant.message()).hex()
