"""The cloud config's `history` section: stock levels written to history."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HistorySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stock_snapshot_interval_s: float = Field(
        default=900.0,
        ge=0,
        description="every stock level (store, shelf, GTIN) is written to history this often,"
        " besides at every change; 0 = only at changes",
    )
    stock_snapshot_page_rows: int = Field(
        default=5_000,
        ge=1,
        description="inventory rows read (and spooled) per step of a snapshot",
    )
    stock_queue_points: int = Field(
        default=100_000,
        ge=1,
        description="stock-level changes waiting for the spool at most; beyond that a change"
        " replaces the queued one of its store, shelf and GTIN, or, for another series, is"
        " dropped (counted, logged): the next snapshot writes the level again",
    )
