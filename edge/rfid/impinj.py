"""The Impinj IoT device interface driver ("impinj-iot"; its twin is in simulators/drivers).

An Impinj R700 (firmware with the "IoT device interface" REST API) streams tag events as
newline-delimited JSON on `GET /api/v1/data/stream`. The driver checks the reader with
`GET /api/v1/status` (HTTP basic auth; a 401 is reported as such), optionally (re)starts an
inventory preset (`POST /api/v1/profiles/stop`, then
`POST /api/v1/profiles/inventory/presets/{preset}/start`), then reads the stream and feeds
every `tagInventory` event into the presence engine. Lines that are not JSON, or events
that lack an EPC or antenna, are counted (`bad_events`) and skipped. A broken or silent
stream (no line for `idle_timeout_s`: the reader's keepalive events keep a quiet stream
alive) is reconnected with exponential backoff while the driver reports DEGRADED and the
presence engine freezes departures.

Credentials come from environment variables whose *names* are in the options, so neither
the config file nor the logs ever hold the password.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.drivers.base import DeviceConfig, Driver, DriverContext, DriverSpec
from edge.rfid.shelf_reader import (
    NO_RSSI_DBM,
    Backoff,
    ShelfReaderDriver,
    epc_hex,
)
from protocols.ids import Identifier
from protocols.messages import DeviceKind

log = logging.getLogger(__name__)

STATUS_PATH = "/api/v1/status"
STREAM_PATH = "/api/v1/data/stream"
STOP_PATH = "/api/v1/profiles/stop"
START_PATH = "/api/v1/profiles/inventory/presets/{preset}/start"
MAX_LINE = 64 * 1024  # a tag event is a few hundred bytes; a longer line is garbage


class ReaderRefusedError(ConnectionError):
    """The reader answered, but not with what we asked for (auth, preset, ...)."""


class ImpinjIotOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="e.g. https://10.0.0.21 (the reader's REST API)")
    antennas: dict[int, Identifier] = Field(description="antenna port -> shelf id", min_length=1)
    username_env: str | None = Field(
        default="STOREGATE_IMPINJ_USERNAME", description="env var holding the user; None: no auth"
    )
    password_env: str = Field(default="STOREGATE_IMPINJ_PASSWORD")
    verify_tls: bool = Field(default=True, description="check the reader's certificate")
    ca_file: Path | None = Field(default=None, description="CA bundle for the reader's cert")
    preset: str | None = Field(
        default="storegate",
        description="inventory preset to (re)start on connect; None: use what the reader runs",
    )
    report_interval_s: float = Field(default=2.0, ge=1.0, le=5.0)
    snapshot_interval_s: float = Field(default=300.0, ge=10.0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    idle_timeout_s: float = Field(default=30.0, gt=0, description="silent stream = lost")
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    presence: dict[str, Any] = Field(default_factory=dict, description="PresenceConfig fields")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        if "@" in value.split("://", 1)[1].split("/", 1)[0]:
            # it would end up in logs and health; credentials go in username_env/password_env
            raise ValueError("base_url must not contain credentials (use username_env)")
        return value.rstrip("/")

    @field_validator("ca_file")
    @classmethod
    def _ca_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"ca_file {value} does not exist")
        return value


def parse_event(line: str | bytes) -> tuple[str, int, float] | str | None:
    """One stream line -> (EPC hex, antenna port, peak RSSI dBm) for a tag read, None for
    an event that is not a tag read (keepalive, ...), or a string saying what is wrong."""
    try:
        event = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return "not JSON"
    if not isinstance(event, dict):
        return "not a JSON object"
    if event.get("eventType") != "tagInventory":
        return None
    tag = event.get("tagInventoryEvent")
    if not isinstance(tag, dict):
        return "tagInventory without tagInventoryEvent"
    epc = epc_hex(tag.get("epcHex"))
    if epc is None and isinstance(tag.get("epc"), str):  # the base64 form, when enabled
        with contextlib.suppress(ValueError):
            epc = base64.b64decode(tag["epc"], validate=True).hex().upper() or None
    if epc is None:
        return "tag event without a valid epcHex/epc"
    antenna = tag.get("antennaPort")
    if not isinstance(antenna, int) or isinstance(antenna, bool):
        return "tag event without an integer antennaPort"
    rssi = tag.get("peakRssiCdbm")
    if rssi is None:
        return epc, antenna, NO_RSSI_DBM
    if not isinstance(rssi, int | float) or isinstance(rssi, bool):
        return "peakRssiCdbm is not a number"
    return epc, antenna, rssi / 100.0


class ImpinjIotDriver(ShelfReaderDriver):
    driver_name = "impinj-iot"

    def __init__(self, device: str, options: ImpinjIotOptions) -> None:
        super().__init__(
            device,
            options.antennas,
            options.presence,
            report_interval_s=options.report_interval_s,
            snapshot_interval_s=options.snapshot_interval_s,
        )
        self.options = options
        self.base_url = options.base_url
        self.other_events = 0  # valid events that are not tag reads (keepalives, ...)
        self._bad_logged_at = 0.0

    def _extra_metrics(self) -> dict[str, float]:
        return {"bad_events": float(self.bad_events), "other_events": float(self.other_events)}

    # ------------------------------------------------------------------ connection

    async def _connection_loop(self, ctx: DriverContext) -> None:
        backoff = Backoff(self.options.backoff_initial_s, self.options.backoff_max_s)
        while True:
            try:
                await self._session(ctx)
                reason = "reader ended the event stream"
            except (httpx.HTTPError, OSError, ReaderRefusedError) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self._reader_down(ctx, f"{self.base_url}: {reason}"):
                backoff.reset()
            log.warning(
                "Impinj reader %s: %s; reconnecting in %.1f s",
                self.device,
                reason,
                backoff.current_s,
            )
            await backoff.sleep()

    def _auth(self) -> httpx.BasicAuth | None:
        if self.options.username_env is None:
            return None
        username = os.environ.get(self.options.username_env)
        password = os.environ.get(self.options.password_env)
        missing = [
            name
            for name, value in (
                (self.options.username_env, username),
                (self.options.password_env, password),
            )
            if value is None
        ]
        if missing:
            raise ReaderRefusedError(f"environment variable {', '.join(missing)} not set")
        assert username is not None
        assert password is not None
        return httpx.BasicAuth(username, password)

    def _client(self) -> httpx.AsyncClient:
        options = self.options
        verify: bool | str = options.verify_tls
        if options.verify_tls and options.ca_file is not None:
            verify = str(options.ca_file)
        timeout = httpx.Timeout(options.connect_timeout_s, read=options.idle_timeout_s)
        return httpx.AsyncClient(
            base_url=self.base_url, auth=self._auth(), verify=verify, timeout=timeout
        )

    @staticmethod
    def _check(response: httpx.Response, what: str) -> None:
        if response.status_code in (401, 403):
            raise ReaderRefusedError(
                f"{what}: reader refused the credentials (HTTP {response.status_code})"
            )
        if response.is_error:
            # the reader's error body says why (e.g. unknown preset); never echo headers
            raise ReaderRefusedError(f"{what}: HTTP {response.status_code} {response.text[:200]}")

    async def _session(self, ctx: DriverContext) -> None:
        async with self._client() as client:
            status = await client.get(STATUS_PATH)
            self._check(status, "GET /api/v1/status")
            self._read_identity(status)
            if self.options.preset is not None:
                # stop whatever runs (ours from before a reconnect, or a leftover), then ours
                stopped = await client.post(STOP_PATH)
                if stopped.status_code in (401, 403):  # "nothing running" is fine, auth is not
                    self._check(stopped, "stop profile")
                start = START_PATH.format(preset=self.options.preset)
                self._check(await client.post(start), f"start preset {self.options.preset!r}")
            async with client.stream("GET", STREAM_PATH) as stream:
                if stream.is_error:
                    await stream.aread()
                self._check(stream, "GET /api/v1/data/stream")
                self._reader_up(ctx)
                log.info("Impinj reader %s streaming from %s", self.device, self.base_url)
                async for line in stream.aiter_lines():
                    self._feed_line(line)

    def _read_identity(self, status: httpx.Response) -> None:
        with contextlib.suppress(ValueError):
            body = status.json()
            if isinstance(body, dict):
                serial = body.get("serialNumber")
                self.model = "Impinj IoT device interface" + (f" #{serial}" if serial else "")
                firmware = body.get("firmwareVersion") or body.get("softwareVersion")
                self.firmware = str(firmware)[:64] if firmware else self.firmware

    def _feed_line(self, line: str) -> None:
        if not line.strip():
            return  # blank lines separate nothing; some proxies add them
        parsed = parse_event(line) if len(line) <= MAX_LINE else "line too long"
        if isinstance(parsed, tuple):
            epc, antenna, rssi = parsed
            self.engine.observe(epc, antenna, rssi, time.time())
        elif parsed is None:
            self.other_events += 1
        else:
            self.bad_events += 1
            now = time.monotonic()
            if now - self._bad_logged_at >= 10.0:  # a stream of garbage is one log line / 10 s
                self._bad_logged_at = now
                log.warning(
                    "Impinj reader %s: skipped a bad event (%s); %d so far",
                    self.device,
                    parsed,
                    self.bad_events,
                )


def _factory(config: DeviceConfig) -> Driver:
    return ImpinjIotDriver(config.id, ImpinjIotOptions.model_validate(config.options))


IMPINJ_IOT_DRIVER = DriverSpec(DeviceKind.RFID_READER, _factory)
