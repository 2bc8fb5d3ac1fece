"""One long-lived BLE scanner per adapter, and the watchdog that revives a silent one.

BlueZ does not like scanners that start and stop in a loop (it answers `InProgress` or
`NotReady`), so each adapter gets ONE `BleakScanner`, started once. Only the watchdog
restarts it, and only after a long silence:

1. no advert for `silence_s` (90 s) -> stop and start the scanner (state DEGRADED);
2. still nothing `silence_s` later -> reset the adapter (power cycle), then restart the
   scanner; repeated every `silence_s` while the silence lasts;
3. the first advert afterwards -> back to RUNNING.

Any advert counts as a sign of life, allowlisted or not. A store should keep one fixed
reference beacon in range of every scanner, so an empty store at night is not "silent".

The scanner class is injectable: tests and the simulator pass a class with the same
constructor and start()/stop() surface as `BleakScanner` that delivers real bleak
`BLEDevice` / `AdvertisementData` objects to the detection callback.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bleak.args.bluez import BlueZScannerArgs, OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

log = logging.getLogger(__name__)

ScanMode = Literal["active", "passive"]
DetectionCallback = Callable[[BLEDevice, AdvertisementData], None]

# Passive scanning on BlueZ goes through an advertisement monitor, which needs patterns.
# These match the three frame families we decode (start positions are within the AD field).
BEACON_OR_PATTERNS: list[OrPattern] = [
    # iBeacon: Apple company id (little-endian 4C 00), then 02 15
    OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\x4c\x00\x02\x15"),
    # AltBeacon: any company id, then BE AC
    OrPattern(2, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\xbe\xac"),
    # Eddystone: 16-bit service data of UUID 0xFEAA (little-endian AA FE)
    OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xaa\xfe"),
]


class ScannerBackend(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ScannerClass(Protocol):
    """`BleakScanner` itself, or a stand-in with the same constructor."""

    def __call__(
        self,
        detection_callback: DetectionCallback | None = ...,
        service_uuids: list[str] | None = ...,
        scanning_mode: ScanMode = ...,
        *,
        bluez: BlueZScannerArgs = ...,
    ) -> ScannerBackend: ...


def bleak_scanner_class() -> ScannerClass:
    from bleak import BleakScanner

    cls: Any = BleakScanner
    return cls  # type: ignore[no-any-return]


def bluez_args(adapter: str, mode: ScanMode) -> BlueZScannerArgs:
    if mode == "passive":
        return {"adapter": adapter, "or_patterns": list(BEACON_OR_PATTERNS)}
    # Active: report every advert, not only the first per device, or RSSI stops updating.
    return {"adapter": adapter, "filters": {"DuplicateData": True}}


class AdapterResetter(Protocol):
    async def reset(self, adapter: str) -> None:
        """Power-cycle the adapter. Raises with a clear message when it cannot."""


class BtmgmtResetter:
    """Power-cycles an adapter with BlueZ's `btmgmt` (needs CAP_NET_ADMIN)."""

    def __init__(self, timeout_s: float = 15.0) -> None:
        self.timeout_s = timeout_s

    async def reset(self, adapter: str) -> None:
        btmgmt = shutil.which("btmgmt")
        if btmgmt is None:
            raise RuntimeError("cannot reset the adapter: btmgmt not found (apt install bluez)")
        index = adapter.removeprefix("hci")
        for step in ("off", "on"):
            await self._run(btmgmt, "--index", index, "power", step)

    async def _run(self, *argv: str) -> None:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                output, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            raise RuntimeError(f"{' '.join(argv)} timed out after {self.timeout_s} s") from None
        if process.returncode != 0:
            text = output.decode(errors="replace").strip()[:200]
            raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}): {text}")


@dataclass(frozen=True, slots=True)
class WatchdogTimings:
    silence_s: float = 90.0
    check_s: float = 5.0
    start_timeout_s: float = 20.0


class WatchdogLevel:
    OK = 0
    RESTARTED = 1  # scanner restarted, waiting for a sign of life
    RESET = 2  # adapter reset, waiting for a sign of life


class ManagedScanner:
    """One adapter's long-lived scanner plus its watchdog state."""

    def __init__(
        self,
        scanner_id: str,
        adapter: str,
        mode: ScanMode,
        on_advert: Callable[[str, BLEDevice, AdvertisementData], None],
        scanner_class: ScannerClass,
        resetter: AdapterResetter,
        timings: WatchdogTimings,
        on_state: Callable[[ManagedScanner], None] | None = None,
    ) -> None:
        self.scanner_id = scanner_id
        self.adapter = adapter
        self.mode = mode
        self.timings = timings
        self._on_advert = on_advert
        self._scanner_class = scanner_class
        self._resetter = resetter
        self._on_state = on_state
        self._scanner: ScannerBackend | None = None
        self.level = WatchdogLevel.OK
        self.last_advert: float = 0.0
        self._since: float = 0.0  # when the current watchdog level began
        self.restarts = 0
        self.adapter_resets = 0
        self.last_error: str | None = None

    def _callback(self, device: BLEDevice, adv: AdvertisementData) -> None:
        self._on_advert(self.scanner_id, device, adv)

    def saw_advert(self, t: float) -> None:
        self.last_advert = t
        if self.level != WatchdogLevel.OK:
            self.level = WatchdogLevel.OK
            log.info(
                "scanner %s on %s: adverts again, watchdog clear", self.scanner_id, self.adapter
            )
            self._report()

    async def start(self, t: float) -> None:
        self._scanner = self._scanner_class(
            self._callback, None, self.mode, bluez=bluez_args(self.adapter, self.mode)
        )
        async with asyncio.timeout(self.timings.start_timeout_s):
            await self._scanner.start()
        self.last_advert = self._since = t

    async def stop(self) -> None:
        scanner, self._scanner = self._scanner, None
        if scanner is not None:
            try:
                async with asyncio.timeout(self.timings.start_timeout_s):
                    await scanner.stop()
            except Exception as error:  # stopping a broken scanner is best effort
                log.warning("scanner %s: stop failed: %s", self.scanner_id, error)

    async def check(self, t: float) -> None:
        """Run the watchdog once: escalate if the silence has lasted a whole period."""
        silent_since = max(self.last_advert, self._since)
        if t - silent_since < self.timings.silence_s:
            return
        self._since = t
        if self.level == WatchdogLevel.OK:
            self.level = WatchdogLevel.RESTARTED
            log.warning(
                "scanner %s on %s: no advert for %.1f s, restarting the scanner",
                self.scanner_id,
                self.adapter,
                t - self.last_advert,
            )
            self.restarts += 1
            self._report()  # DEGRADED before the first await: adverts may resume during it
            await self._restart(reset_adapter=False)
        else:
            self.level = WatchdogLevel.RESET
            log.warning(
                "scanner %s on %s: still silent after a restart, resetting the adapter",
                self.scanner_id,
                self.adapter,
            )
            self.adapter_resets += 1
            self._report()
            await self._restart(reset_adapter=True)
        if self.last_error is not None:
            self._report()  # add why the restart failed

    def _report(self) -> None:
        if self._on_state:
            self._on_state(self)

    async def _restart(self, *, reset_adapter: bool) -> None:
        await self.stop()
        self.last_error = None
        try:
            if reset_adapter:
                await self._resetter.reset(self.adapter)
            scanner = self._scanner_class(
                self._callback, None, self.mode, bluez=bluez_args(self.adapter, self.mode)
            )
            async with asyncio.timeout(self.timings.start_timeout_s):
                await scanner.start()
            self._scanner = scanner
        except Exception as error:
            # Keep the daemon up: the next period escalates again. Say why in health.
            self.last_error = f"{type(error).__name__}: {error}"[:300]
            log.error("scanner %s on %s: %s", self.scanner_id, self.adapter, self.last_error)
