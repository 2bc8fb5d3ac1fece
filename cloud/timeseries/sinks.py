"""Where spooled lines go: one small protocol, an InfluxDB writer and an SQL fallback.

`write` either stores every line or raises: `SinkUnavailable` for conditions that pass
(server down, timeout, 5xx, auth being fixed) -- the pump retries with backoff; or
`SinkRejected` when the server refuses the data itself (HTTP 400/413/422) -- retrying the
same bytes can never succeed, so the pump dead-letters the batch with the reason.

A sink may also be a `RestartProbe`: it tells when the server process started, so the pump
notices a restart between two writes (which loses what the server had acknowledged but not
yet flushed) and writes the acknowledged window again.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import httpx

log = logging.getLogger(__name__)


class SinkUnavailable(Exception):  # noqa: N818 -- reads as a state, like TimeoutError
    """The sink cannot take writes right now; try again later."""


class SinkRejected(Exception):  # noqa: N818 -- reads as a state
    """The sink refused these lines for good (bad data): retrying will not help."""


class LineSink(Protocol):
    async def write(self, lines: list[str]) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class RestartProbe(Protocol):
    async def started_at(self) -> float | None:
        """When the server process started (Unix seconds); None if the server does not say.
        Raises `SinkUnavailable` when the server does not answer."""
        ...


InfluxApi = Literal["v2", "v1"]


@dataclass(frozen=True, slots=True)
class InfluxConfig:
    """Where history goes and how to speak to it.

    `api="v2"` (`/api/v2/write`): InfluxDB 2.x, 3 (bucket = database), VictoriaMetrics, and
    InfluxDB 1.8+ through its compatibility API (bucket `db/rp`, token `user:password`).
    `api="v1"` (`/write`, `/query` with basic auth): every InfluxDB 1.x, including 1.6/1.7,
    which have no v2 API; the same bucket `db[/rp]` and token `user:password` conventions.
    """

    url: str
    bucket: str
    org: str = ""
    token: str = ""
    timeout_s: float = 10.0
    gzip: bool = True
    api: InfluxApi = "v2"

    def __post_init__(self) -> None:
        if self.api not in ("v2", "v1"):
            raise ValueError(f"InfluxDB api must be 'v2' or 'v1', not {self.api!r}")
        if not self.bucket or self.bucket.count("/") > 1 or self.bucket.startswith("/"):
            raise ValueError(f"bucket {self.bucket!r}: expected 'bucket', 'db' or 'db/rp'")

    @property
    def database(self) -> str:
        """The 1.x database (or 2.x/3 bucket) part of `bucket`."""
        return self.bucket.split("/", 1)[0]

    @property
    def retention_policy(self) -> str | None:
        """The 1.x retention policy of a `db/rp` bucket; None: the database's default."""
        _, _, rp = self.bucket.partition("/")
        return rp or None

    @property
    def credentials(self) -> tuple[str, str] | None:
        """(user, password) of a 1.x token `user:password`; None without a token."""
        if not self.token:
            return None
        user, _, password = self.token.partition(":")
        return user, password

    def __repr__(self) -> str:  # never print the token
        return (
            f"InfluxConfig(url={self.url!r}, api={self.api!r}, org={self.org!r},"
            f" bucket={self.bucket!r})"
        )


_PERMANENT_STATUSES = {400, 413, 422}


class _StartTimeProbe:
    """`started_at` for InfluxDB and VictoriaMetrics: `process_start_time_seconds` from the
    server's Prometheus `/metrics`, which VictoriaMetrics, InfluxDB 1.x (1.6 included) and
    2.x publish (InfluxDB's `/ping` headers carry only the version). None, and no more
    asking, where the server has no such metric."""

    config: InfluxConfig
    _probe: httpx.AsyncClient
    _probe_supported: bool

    async def started_at(self) -> float | None:
        if not self._probe_supported:
            return None
        try:
            response = await self._probe.get("/metrics")
        except httpx.HTTPError as exc:
            raise SinkUnavailable(f"{self.config.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 500:
            raise SinkUnavailable(f"{self.config.url}/metrics: HTTP {response.status_code}")
        found = _START_TIME.search(response.text) if response.is_success else None
        if found is None:
            self._probe_supported = False
            log.info(
                "%s/metrics has no process_start_time_seconds (HTTP %d): sink restarts are "
                "noticed by write errors only",
                self.config.url,
                response.status_code,
            )
            return None
        return float(found.group(1))


class InfluxSink(_StartTimeProbe):
    """Writes through influxdb-client's synchronous WriteApi, in a worker thread.

    Not the library's batching mode: it buffers in memory and loses what it holds on exit;
    our batching and retries live in the spool and the pump. The client's own retries are
    off for the same reason (one place decides about backoff).
    """

    def __init__(self, config: InfluxConfig) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.config = config
        self._client = InfluxDBClient(
            url=config.url,
            token=config.token,  # empty: no Authorization header (VictoriaMetrics, open 1.x)
            org=config.org,
            timeout=int(config.timeout_s * 1000),
            enable_gzip=config.gzip,
            retries=False,
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        headers = {"Authorization": f"Token {config.token}"} if config.token else {}
        self._probe = httpx.AsyncClient(
            base_url=config.url, headers=headers, timeout=config.timeout_s
        )
        self._probe_supported = True

    def _write_blocking(self, lines: list[str]) -> None:
        from influxdb_client.rest import ApiException

        try:
            self._write_api.write(
                bucket=self.config.bucket,
                org=self.config.org or "-",
                record="\n".join(lines),  # the default precision is ns, as we write
            )
        except ApiException as exc:
            detail = f"{self.config.url}: HTTP {exc.status} {_short(exc.body)}"
            if exc.status in _PERMANENT_STATUSES:
                raise SinkRejected(detail) from None
            raise SinkUnavailable(detail) from None
        except Exception as exc:  # urllib3 connection/timeout errors and their kin
            raise SinkUnavailable(f"{self.config.url}: {type(exc).__name__}: {exc}") from None

    async def write(self, lines: list[str]) -> None:
        if lines:
            await asyncio.to_thread(self._write_blocking, lines)

    async def close(self) -> None:
        await self._probe.aclose()
        await asyncio.to_thread(self._client.close)


class InfluxV1Sink(_StartTimeProbe):
    """Writes to InfluxDB 1.x's own `/write` (database, retention policy, basic auth).

    influxdb-client speaks only the v2 write API, which InfluxDB 1.x has from 1.8 on; this
    is the same request for 1.6/1.7, sent with httpx. InfluxDB 1.x answers 400 for a write
    it takes only in part (a line it cannot parse, a point outside the retention policy):
    the lines it took are stored and the pump's bisection finds the refused ones, so the
    rewrite of the good ones is harmless (points are idempotent).
    """

    def __init__(self, config: InfluxConfig) -> None:
        self.config = config
        params = {"db": config.database, "precision": "ns"}
        if config.retention_policy:
            params["rp"] = config.retention_policy
        credentials = config.credentials
        self._client = httpx.AsyncClient(
            base_url=config.url,
            params=params,
            auth=httpx.BasicAuth(*credentials) if credentials else None,
            timeout=config.timeout_s,
        )
        self._probe = self._client
        self._probe_supported = True

    async def write(self, lines: list[str]) -> None:
        if not lines:
            return
        body = "\n".join(lines).encode()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.config.gzip:
            body = await asyncio.to_thread(gzip.compress, body, 5)
            headers["Content-Encoding"] = "gzip"
        try:
            response = await self._client.post("/write", content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SinkUnavailable(f"{self.config.url}: {type(exc).__name__}: {exc}") from None
        if response.is_success:
            return
        detail = f"{self.config.url}/write: HTTP {response.status_code} {_short(response.text)}"
        if response.status_code in _PERMANENT_STATUSES:
            raise SinkRejected(detail)
        # 401/403 (credentials being fixed), 404 (database not created yet), 5xx
        raise SinkUnavailable(detail)

    async def close(self) -> None:
        await self._client.aclose()


_START_TIME = re.compile(r"^process_start_time_seconds(?:\{[^}]*\})? (\S+)$", re.MULTILINE)


def _short(body: Any) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    return text.strip()[:300]
