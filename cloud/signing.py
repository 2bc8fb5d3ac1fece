"""How every storegate webhook is signed, so receivers verify one way.

`X-Storegate-Signature: sha256=<hex HMAC-SHA256 of the raw body>`; the body carries its own
send time, so a receiver can also refuse old replays.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Storegate-Signature"


def signature(secret: str | bytes, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
