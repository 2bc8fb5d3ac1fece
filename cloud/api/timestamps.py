"""Timestamps as the REST API shows them: timezone-aware UTC, ISO 8601 ending in `Z`.

The state store keeps UTC; SQLite hands it back naive, PostgreSQL aware. Every response
model and every hand-built JSON body goes through these two helpers, so a client sees one
format on REST, SSE and MQTT alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer, WithJsonSchema

UTC_DESCRIPTION = "UTC, ISO 8601 with a `Z` suffix (e.g. 2026-12-05T09:30:00.125Z)"


def as_utc(value: datetime) -> datetime:
    """A stored timestamp as aware UTC (naive ones are UTC already)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso_utc(value: datetime | None) -> str | None:
    if value is None:
        return None
    return as_utc(value).isoformat().replace("+00:00", "Z")


ApiTimestamp = Annotated[
    datetime,
    AfterValidator(as_utc),
    PlainSerializer(lambda value: iso_utc(value), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": r"Z$",
            "description": UTC_DESCRIPTION,
        },
        mode="serialization",
    ),
]
"""A datetime field of a response model: aware UTC, serialised with `Z`."""
