"""History queries: InfluxQL over HTTP `/query`, and the same questions over the SQL table.

InfluxQL is the one query language InfluxDB 1.x, 2.7+ (through DBRP mappings) and 3 all
answer, so one reader serves them all. The reader is read-only: it sends only SELECT (without
INTO) and SHOW statements, checked on the query text outside quotes (InfluxDB 1.x still
executes a DROP sent with GET, with a mere deprecation warning). Every value we put into a
query is validated (identifiers against the contract's pattern) and quoted (`quote_ident`,
`quote_literal`): no caller input is ever spliced in raw.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.timeseries.schema import SHELF_COUNT, STOCK_LEVEL, time_ns
from cloud.timeseries.sinks import InfluxConfig
from cloud.timeseries.sql import history_table
from protocols.ids import is_identifier

JsonScalar = str | int | float | bool | None

# How far before a chart's window the level it starts with is looked for (the cloud passes
# twice its snapshot interval).
DEFAULT_LEVEL_LOOKBACK = timedelta(days=1)

_GTIN = re.compile(r"^[0-9]{14}$")


class HistoryUnavailable(Exception):  # noqa: N818 -- reads as a state
    """The history store could not be reached."""


class QueryError(Exception):
    """The history store refused or failed the query (the message says why)."""


def quote_ident(name: str) -> str:
    """An InfluxQL double-quoted identifier."""
    if not name or "\x00" in name or "\n" in name:
        raise ValueError(f"invalid InfluxQL identifier {name!r}")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(value: str) -> str:
    """An InfluxQL single-quoted string literal."""
    if "\x00" in value or "\n" in value:
        raise ValueError(f"invalid InfluxQL string literal {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def duration_literal(every: timedelta) -> str:
    """An InfluxQL duration, exact to the microsecond."""
    micros = (every.days * 86_400 + every.seconds) * 1_000_000 + every.microseconds
    if micros <= 0:
        raise ValueError(f"interval must be positive, got {every}")
    if micros % 1_000_000 == 0:
        return f"{micros // 1_000_000}s"
    if micros % 1_000 == 0:
        return f"{micros // 1_000}ms"
    return f"{micros}u"


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|--[^\n]*")
_READ_ONLY_START = ("SELECT", "SHOW", "EXPLAIN")


def check_read_only(q: str) -> None:
    """Refuse InfluxQL that could change data: every statement must be SELECT (no INTO),
    SHOW or EXPLAIN. Quoted identifiers, string literals and comments are ignored."""
    bare = _QUOTED.sub(" x ", q)
    if "'" in bare or '"' in bare:
        raise QueryError("unterminated quote in query")
    for statement in filter(None, (part.strip() for part in bare.split(";"))):
        words = statement.upper().split()
        if words[0] not in _READ_ONLY_START or "INTO" in words:
            raise QueryError(f"read-only reader: refusing {words[0]} statement")


def _check_identifier(kind: str, value: str) -> str:
    if not is_identifier(value):
        raise ValueError(f"invalid {kind} {value!r}")
    return value


def _check_range(start: datetime, end: datetime) -> tuple[int, int]:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    if end <= start:
        raise ValueError("end must be after start")
    return time_ns(start), time_ns(end)


def from_ns(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value // 1_000)


def _step_ns(every: timedelta) -> int:
    step = (every.days * 86_400 + every.seconds) * 1_000_000_000 + every.microseconds * 1_000
    if step <= 0:
        raise ValueError(f"interval must be positive, got {every}")
    return step


def _buckets(start_ns: int, end_ns: int, every: timedelta) -> range:
    """The starts of InfluxQL's `GROUP BY time(every)` intervals (aligned to the epoch)."""
    step = _step_ns(every)
    return range(start_ns - start_ns % step, end_ns, step)


def _conditions(store: str, gtin: str, shelf: str | None) -> list[str]:
    conditions = [
        f"{quote_ident('store')} = {quote_literal(store)}",
        f"{quote_ident('gtin')} = {quote_literal(gtin)}",
    ]
    if shelf is not None:
        conditions.append(f"{quote_ident('shelf')} = {quote_literal(shelf)}")
    return conditions


def _last_count_query(
    measurement: str,
    store: str,
    gtin: str,
    shelf: str | None,
    start_ns: int,
    end_ns: int,
    every: timedelta,
) -> str:
    """Every value below is validated and quoted; nothing is spliced in raw."""
    return " ".join(
        [
            f"SELECT last({quote_ident('count')}) AS {quote_ident('count')}",
            f"FROM {quote_ident(measurement)} WHERE",
            " AND ".join(
                [*_conditions(store, gtin, shelf), f"time >= {start_ns}", f"time < {end_ns}"]
            ),
            f"GROUP BY time({duration_literal(every)}), {quote_ident('shelf')} fill(previous)",
        ]
    )


@dataclass(frozen=True, slots=True)
class Series:
    """One result series of an InfluxQL statement."""

    name: str
    columns: list[str]
    values: list[list[JsonScalar]]
    tags: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[dict[str, JsonScalar]]:
        return [dict(zip(self.columns, row, strict=False)) for row in self.values]


@dataclass(frozen=True, slots=True)
class ShelfCountSample:
    """The count of one GTIN on one shelf at the end of an interval (None: nothing known)."""

    time: datetime
    shelf: str
    count: int | None


def _samples(series: Series) -> list[ShelfCountSample]:
    shelf_name = series.tags.get("shelf", "")
    samples = []
    for row in series.values:
        stamp, count = row[0], row[1]
        if not isinstance(stamp, int):
            raise QueryError(f"unexpected time value {stamp!r}")
        samples.append(
            ShelfCountSample(from_ns(stamp), shelf_name, None if count is None else int(str(count)))
        )
    return samples


class HistoryReader(Protocol):
    async def shelf_count_history(
        self,
        store: str,
        gtin: str,
        start: datetime,
        end: datetime,
        every: timedelta,
        shelf: str | None = None,
    ) -> list[ShelfCountSample]: ...

    async def stock_level_history(
        self,
        store: str,
        gtin: str,
        start: datetime,
        end: datetime,
        every: timedelta,
        shelf: str | None = None,
    ) -> list[ShelfCountSample]: ...

    async def close(self) -> None: ...


def _validate_shelf_query(store: str, gtin: str, shelf: str | None) -> None:
    _check_identifier("store", store)
    _check_identifier("shelf", shelf) if shelf is not None else None
    if not _GTIN.fullmatch(gtin):
        raise ValueError(f"invalid GTIN {gtin!r}: 14 digits expected")


class InfluxQLReader:
    """Reads history from InfluxDB 1.x / 2.7+ / 3 with InfluxQL over `GET /query`."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        retention_policy: str | None = None,
        timeout_s: float = 10.0,
        level_lookback: timedelta = DEFAULT_LEVEL_LOOKBACK,
    ) -> None:
        self.level_lookback = level_lookback
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Token {token}"
        auth = httpx.BasicAuth(username, password or "") if username else None
        self.database = database
        self.retention_policy = retention_policy
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"), headers=headers, auth=auth, timeout=timeout_s
        )

    @classmethod
    def for_config(
        cls, config: InfluxConfig, *, level_lookback: timedelta = DEFAULT_LEVEL_LOOKBACK
    ) -> InfluxQLReader:
        """The reader of what an `InfluxSink`/`InfluxV1Sink` with `config` writes: the
        database and retention policy of a `db/rp` bucket; `api="v1"` logs in with basic
        auth (`user:password`), else with `Authorization: Token` (2.x/3 tokens, and
        `user:password` on 1.8+)."""
        credentials = config.credentials if config.api == "v1" else None
        return cls(
            config.url,
            config.database,
            token=None if config.api == "v1" else config.token or None,
            username=credentials[0] if credentials else None,
            password=credentials[1] if credentials else None,
            retention_policy=config.retention_policy,
            timeout_s=config.timeout_s,
            level_lookback=level_lookback,
        )

    async def query(self, q: str, *, epoch: str = "ns") -> list[Series]:
        """Run read-only InfluxQL (build it with `quote_ident`/`quote_literal`)."""
        check_read_only(q)
        params = {"db": self.database, "q": q, "epoch": epoch}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        try:
            response = await self._client.get("/query", params=params)
        except httpx.HTTPError as exc:
            raise HistoryUnavailable(
                f"{self._client.base_url}: {type(exc).__name__}: {exc}"
            ) from None
        if response.status_code >= 500:
            raise HistoryUnavailable(f"HTTP {response.status_code}: {response.text[:300]}")
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise QueryError(
                f"HTTP {response.status_code}: not JSON: {response.text[:300]}"
            ) from None
        if response.status_code >= 400 or "error" in body:
            raise QueryError(f"HTTP {response.status_code}: {body.get('error', body)}")
        series: list[Series] = []
        for result in body.get("results", []):
            if "error" in result:
                raise QueryError(str(result["error"]))
            for raw in result.get("series", []):
                series.append(
                    Series(
                        name=str(raw.get("name", "")),
                        columns=list(raw.get("columns", [])),
                        values=[list(v) for v in raw.get("values", [])],
                        tags=dict(raw.get("tags") or {}),
                    )
                )
        return series

    async def shelf_count_history(
        self,
        store: str,
        gtin: str,
        start: datetime,
        end: datetime,
        every: timedelta,
        shelf: str | None = None,
    ) -> list[ShelfCountSample]:
        """Last known count per shelf and interval (`shelf_count`: what the edge reported),
        carried forward through quiet ones."""
        _validate_shelf_query(store, gtin, shelf)
        start_ns, end_ns = _check_range(start, end)
        series = await self.query(
            _last_count_query(SHELF_COUNT, store, gtin, shelf, start_ns, end_ns, every)
        )
        return [sample for one in series for sample in _samples(one)]

    async def stock_level_history(
        self,
        store: str,
        gtin: str,
        start: datetime,
        end: datetime,
        every: timedelta,
        shelf: str | None = None,
    ) -> list[ShelfCountSample]:
        """The committed stock level per shelf and interval (`stock_level`), carried
        forward; a shelf whose last change is before `start` starts with its level then
        (looked for `level_lookback` back: periodic snapshots keep that short)."""
        _validate_shelf_query(store, gtin, shelf)
        start_ns, end_ns = _check_range(start, end)
        seed_from = start_ns - _step_ns(self.level_lookback)
        seed_query = " ".join(
            [
                f"SELECT last({quote_ident('count')}) AS {quote_ident('count')}",
                f"FROM {quote_ident(STOCK_LEVEL)} WHERE",
                " AND ".join(
                    [*_conditions(store, gtin, shelf), f"time >= {seed_from}", f"time < {start_ns}"]
                ),
                f"GROUP BY {quote_ident('shelf')}",
            ]
        )
        # The window, then the levels it starts with (two requests: one result list would
        # not say which statement a series came from).
        window = _last_count_query(STOCK_LEVEL, store, gtin, shelf, start_ns, end_ns, every)
        in_window: dict[str, list[ShelfCountSample]] = {}
        for one in await self.query(window):
            in_window[one.tags.get("shelf", "")] = _samples(one)
        seeds: dict[str, int] = {}
        for one in await self.query(seed_query):
            for row in one.rows():
                if row.get("count") is not None:
                    seeds[one.tags.get("shelf", "")] = int(str(row["count"]))
        buckets = _buckets(start_ns, end_ns, every)
        samples: list[ShelfCountSample] = []
        for name in sorted(set(in_window) | set(seeds)):
            by_time = {s.time: s.count for s in in_window.get(name, [])}
            last = seeds.get(name)
            for bucket in buckets:
                stamp = from_ns(bucket)
                value = by_time.get(stamp)
                last = value if value is not None else last
                samples.append(ShelfCountSample(stamp, name, last))
        return samples

    async def close(self) -> None:
        await self._client.aclose()


class SqlHistoryReader:
    """The same questions answered from the SQL `history` table (no InfluxDB configured).

    Intervals are aligned to the epoch like InfluxQL's `GROUP BY time()`, so both readers
    return the same samples for the same points.
    """

    def __init__(
        self, engine: AsyncEngine, *, level_lookback: timedelta = DEFAULT_LEVEL_LOOKBACK
    ) -> None:
        self._engine = engine
        self.level_lookback = level_lookback

    async def shelf_count_history(
        self,
        store: str,
        gtin: str,
        start: datetime,
        end: datetime,
        every: timedelta,
        shelf: str | None = None,
    ) -> list[ShelfCountSample]:
        return await self._history(SHELF_COUNT, store, gtin, start, end, every, shelf, None)

    async def stock_level_history(
        self,
        store: str,
        gtin: str,
        start: datetime,
        end: datetime,
        every: timedelta,
        shelf: str | None = None,
    ) -> list[ShelfCountSample]:
        return await self._history(
            STOCK_LEVEL, store, gtin, start, end, every, shelf, self.level_lookback
        )

    async def _history(
        self,
        measurement: str,
        store: str,
        gtin: str,
        start: datetime,
        end: datetime,
        every: timedelta,
        shelf: str | None,
        lookback: timedelta | None,
    ) -> list[ShelfCountSample]:
        """Per shelf, the last count per interval carried forward; with a `lookback`, a
        shelf starts with its last count in the `lookback` before `start`."""
        _validate_shelf_query(store, gtin, shelf)
        start_ns, end_ns = _check_range(start, end)
        buckets = _buckets(start_ns, end_ns, every)
        step = buckets.step
        read_from = start_ns if lookback is None else start_ns - _step_ns(lookback)
        statement = (
            select(history_table.c.time_ns, history_table.c.tags, history_table.c.fields)
            .where(
                history_table.c.measurement == measurement,
                history_table.c.store == store,
                history_table.c.time_ns >= read_from,
                history_table.c.time_ns < end_ns,
            )
            .order_by(history_table.c.time_ns)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        per_shelf: dict[str, dict[int, int]] = {}
        seeds: dict[str, int] = {}
        for stamp, tags, fields in rows:
            if tags.get("gtin") != gtin or (shelf is not None and tags.get("shelf") != shelf):
                continue
            if "count" not in fields:
                continue
            name = tags.get("shelf", "")
            if stamp < start_ns:
                seeds[name] = int(fields["count"])  # rows come in time order: the last wins
                continue
            per_shelf.setdefault(name, {})[stamp - stamp % step] = int(fields["count"])
        return [
            sample
            for name in sorted(set(per_shelf) | set(seeds))
            for sample in _fill_previous(name, per_shelf.get(name, {}), buckets, seeds.get(name))
        ]

    async def close(self) -> None:
        """The engine belongs to the caller."""


def _fill_previous(
    shelf: str, values: dict[int, int], buckets: Sequence[int], start: int | None = None
) -> list[ShelfCountSample]:
    samples, last = [], start
    for bucket in buckets:
        last = values.get(bucket, last)
        samples.append(ShelfCountSample(from_ns(bucket), shelf, last))
    return samples
