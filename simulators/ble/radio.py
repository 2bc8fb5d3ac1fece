"""A simulated radio: stand-ins for `BleakScanner`, one per adapter, fed by the simulator.

`FakeBleakScanner` has BleakScanner's constructor and start()/stop() surface and calls the
detection callback with real bleak objects. The radio can go silent per adapter (a hung
controller) to exercise the watchdog, and recovers either on a scanner restart or only on an
adapter reset, as configured.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from bleak.args.bluez import BlueZScannerArgs
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from edge.ble.scanner import ScannerClass

DetectionCallback = Callable[[BLEDevice, AdvertisementData], None]
Recovery = Literal["restart", "reset", "never"]


@dataclass(slots=True)
class _AdapterState:
    silent: bool = False
    recovers_on: Recovery = "restart"
    started: int = 0
    stopped: int = 0
    resets: int = 0
    scanners: list[FakeBleakScanner] = field(default_factory=list)


class SimulatedRadio:
    def __init__(self) -> None:
        self._adapters: dict[str, _AdapterState] = {}
        self.delivered: Counter[str] = Counter()

    def adapter(self, name: str) -> _AdapterState:
        return self._adapters.setdefault(name, _AdapterState())

    # -- the BleakScanner stand-in, bound to this radio

    def scanner_class(self) -> ScannerClass:
        radio = self

        class BoundFakeScanner(FakeBleakScanner):
            def __init__(
                self,
                detection_callback: DetectionCallback | None = None,
                service_uuids: list[str] | None = None,
                scanning_mode: Literal["active", "passive"] = "active",
                *,
                bluez: BlueZScannerArgs | None = None,
            ) -> None:
                super().__init__(
                    radio, detection_callback, service_uuids, scanning_mode, bluez=bluez
                )

        return BoundFakeScanner

    # -- faults

    def go_silent(self, adapter: str, recovers_on: Recovery = "restart") -> None:
        state = self.adapter(adapter)
        state.silent, state.recovers_on = True, recovers_on

    def reset_adapter(self, adapter: str) -> None:
        """What an AdapterResetter does to a simulated adapter."""
        state = self.adapter(adapter)
        state.resets += 1
        if state.recovers_on in ("reset", "restart"):
            state.silent = False

    # -- delivery

    def transmit(self, adapter: str, device: BLEDevice, adv: AdvertisementData) -> bool:
        """Deliver one advert to the running scanner on `adapter`; False if nobody heard it."""
        state = self.adapter(adapter)
        if state.silent:
            return False
        heard = False
        for scanner in state.scanners:
            if scanner.running and scanner.callback is not None:
                scanner.callback(device, adv)
                heard = True
        if heard:
            self.delivered[adapter] += 1
        return heard


class FakeBleakScanner:
    def __init__(
        self,
        radio: SimulatedRadio,
        detection_callback: DetectionCallback | None = None,
        service_uuids: list[str] | None = None,
        scanning_mode: Literal["active", "passive"] = "active",
        *,
        bluez: BlueZScannerArgs | None = None,
    ) -> None:
        args = bluez or {}
        if scanning_mode == "passive" and not args.get("or_patterns"):
            # what bleak's BlueZ backend does too
            raise ValueError("passive scanning on BlueZ requires or_patterns")
        self.radio = radio
        self.callback = detection_callback
        self.service_uuids = service_uuids
        self.scanning_mode = scanning_mode
        self.adapter_name = args.get("adapter", "hci0")
        self.bluez = args
        self.running = False

    async def start(self) -> None:
        state = self.radio.adapter(self.adapter_name)
        if any(s.running for s in state.scanners):
            raise RuntimeError("org.bluez.Error.InProgress: Operation already in progress")
        self.running = True
        state.started += 1
        state.scanners.append(self)
        if state.silent and state.recovers_on == "restart":
            state.silent = False

    async def stop(self) -> None:
        state = self.radio.adapter(self.adapter_name)
        if self.running:
            self.running = False
            state.stopped += 1
        if self in state.scanners:
            state.scanners.remove(self)


class RadioResetter:
    """An AdapterResetter for simulated adapters."""

    def __init__(self, radio: SimulatedRadio) -> None:
        self.radio = radio

    async def reset(self, adapter: str) -> None:
        self.radio.reset_adapter(adapter)
