"""The ingestor's side of time-series history (`cloud.timeseries`).

Per batch the ingestor turns every applied message into line-protocol lines and appends
them to the durable spool BEFORE the state commit. If the spool is full (`SpoolFull`) the
batch rolls back and is retried un-acked: backpressure instead of loss. Re-spooling after
a failed commit writes the same points again, which InfluxDB treats as the same points
(same measurement, tags and timestamp), so history stays exactly-once in effect.
The pump drains the spool to InfluxDB (or to the SQL `history` table when none is set).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from cloud.timeseries import Spool, SpoolFull, message_lines
from protocols.messages import Message


class HistoryFullError(Exception):
    """The spool cannot take more lines right now; retry later without acking."""


class History(Protocol):
    def lines(self, message: Message) -> list[str]: ...
    async def append(self, lines: Sequence[str]) -> None: ...


class SpoolHistory:
    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def lines(self, message: Message) -> list[str]:
        return message_lines(message)

    async def append(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        try:
            await self.spool.append_async(list(lines))
        except SpoolFull as exc:
            raise HistoryFullError(str(exc)) from exc
