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
import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

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


@dataclass(frozen=True, slots=True)
class InfluxConfig:
    """InfluxDB 2.x/3 (or VictoriaMetrics `/api/v2/write`) connection settings."""

    url: str
    bucket: str
    org: str = ""
    token: str = ""
    timeout_s: float = 10.0
    gzip: bool = True

    def __repr__(self) -> str:  # never print the token
        return f"InfluxConfig(url={self.url!r}, org={self.org!r}, bucket={self.bucket!r})"


_PERMANENT_STATUSES = {400, 413, 422}


class InfluxSink:
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

    async def started_at(self) -> float | None:
        """`process_start_time_seconds` from the server's Prometheus `/metrics`, which
        VictoriaMetrics, InfluxDB 1.x and 2.x all publish (InfluxDB's `/ping` headers carry
        only the version). None, and no more asking, where the server has no such metric."""
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

    async def close(self) -> None:
        await self._probe.aclose()
        await asyncio.to_thread(self._client.close)


_START_TIME = re.compile(r"^process_start_time_seconds(?:\{[^}]*\})? (\S+)$", re.MULTILINE)


def _short(body: Any) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    return text.strip()[:300]
