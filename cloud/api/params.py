"""Parameter types shared by the routes, bounded to what the database can hold: an integer
past 64 bits would otherwise reach the driver and fail there (500) instead of here (422)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

MAX_ROW_ID = 2**63 - 1  # BIGINT / SQLite INTEGER

RowIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
