"""Secrets a production cloud must not run with: `storegate cloud` checks them at start.

The repository ships demo keys (`storegate demo`, examples/cloud.yaml) and `change-me`
placeholders (deploy/env.example). Anyone can read them, so a cloud started with one is
open to anyone. `insecure_secrets` names every config key that holds such a value, or a
secret too short to resist guessing, and never the value itself: the message goes to a
terminal and into logs.

API keys are stored as sha256 hashes, so their length cannot be measured: they are compared
with the hashes of the known demo keys. Plaintext secrets (broker password, InfluxDB token,
the database URL's password, the metrics key, webhook and session secrets) are checked for
known values, `change-me` and an estimated strength below 128 bits. A TLS connection to the
broker that skips the check of the broker's name is refused too.
"""

from __future__ import annotations

import hashlib
import math
import string
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from cloud.config import CloudSettings

MIN_SECRET_BITS = 128

# Every key or secret that appears as a default or example in this repository. A test
# (tests/cloud/test_hardening.py) scans examples/, deploy/ and the demo for secret-looking
# values and fails if one is missing here.
KNOWN_DEMO_SECRETS = frozenset(
    {
        "ops-demo-key",
        "staff-demo-key",
        "shopper-demo-key",
        "change-me",
    }
)
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me")

_KNOWN_DEMO_HASHES = {hashlib.sha256(s.encode()).hexdigest() for s in KNOWN_DEMO_SECRETS}

# Alphabets from the smallest up: a secret is credited log2(size) bits per character of the
# smallest alphabet that holds all its characters. `openssl rand -hex 16` (32 characters)
# and `secrets.token_urlsafe(16)` (22 characters) are the shortest that pass.
_ALPHABETS = (
    frozenset(string.digits),
    frozenset(string.hexdigits.lower()),
    frozenset(string.hexdigits.upper() + string.digits),
    frozenset(string.ascii_lowercase + string.digits + "-_."),
    frozenset(string.ascii_letters + string.digits),
    frozenset(string.ascii_letters + string.digits + "-_+/="),
    frozenset(string.printable.strip()),
)


def estimated_bits(secret: str) -> float:
    """An upper bound of the strength of a random secret of this length and alphabet."""
    chars = set(secret)
    for alphabet in _ALPHABETS:
        if chars <= alphabet:
            return len(secret) * math.log2(len(alphabet))
    return len(secret) * 8.0  # other characters (non-ASCII): at most a byte each


def secret_problem(secret: str) -> str | None:
    """Why this plaintext secret must not be used in production, or None."""
    lowered = secret.lower()
    if lowered in KNOWN_DEMO_SECRETS:
        return "is a demo value published in this repository"
    if any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        return "is a change-me placeholder"
    bits = estimated_bits(secret)
    if bits < MIN_SECRET_BITS:
        return (
            f"is too short: about {int(bits)} bits, at least {MIN_SECRET_BITS} needed"
            " (e.g. openssl rand -hex 24)"
        )
    return None


def _plain(value: Any) -> str | None:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, str) and value:
        return value
    return None


def _plaintext_secrets(settings: CloudSettings) -> Iterator[tuple[str, str]]:
    if settings.mqtt.password is not None:
        yield "mqtt.password", settings.mqtt.password.get_secret_value()
    if settings.ingest.shard_password is not None:
        yield "ingest.shard_password", settings.ingest.shard_password.get_secret_value()
    if settings.influxdb is not None and settings.influxdb.token is not None:
        yield "influxdb.token", settings.influxdb.token.get_secret_value()
    if not settings.database_url.startswith("sqlite"):
        password = urlsplit(settings.database_url).password
        if password:
            yield "database_url (its password)", password
    if settings.api.metrics_key is not None:
        yield "api.metrics_key", settings.api.metrics_key.get_secret_value()
    webhook = settings.domains.get("offers", {}).get("webhook") or {}
    if isinstance(webhook, dict) and (secret := _plain(webhook.get("secret"))):
        yield "domains.offers.webhook.secret", secret
    if session := _plain(settings.domains.get("dashboard", {}).get("session_secret")):
        yield "domains.dashboard.session_secret", session


def insecure_secrets(settings: CloudSettings) -> list[str]:
    """One line per offending config key: where it is and what is wrong, never the value."""
    problems = [
        f"api.keys[{key.name}].sha256: is the hash of a demo key published in this repository"
        for key in settings.api.keys
        if key.sha256 in _KNOWN_DEMO_HASHES
    ]
    if settings.mqtt.tls is not None and settings.mqtt.tls.insecure_skip_verify:
        problems.append(
            "mqtt.tls.insecure_skip_verify: the broker's certificate name is not checked,"
            " so anyone with a certificate from its CA can pose as the broker"
        )
    for location, secret in _plaintext_secrets(settings):
        problem = secret_problem(secret)
        if problem is not None:
            problems.append(f"{location}: {problem}")
    return problems
