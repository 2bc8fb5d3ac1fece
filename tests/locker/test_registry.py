"""The registry finds both locker drivers (cu16 built in, sim-cu16 through its entry
point); bad options fail with the option's name."""

from __future__ import annotations

import pytest

from edge.drivers.base import DeviceConfig
from edge.drivers.registry import create_driver, driver_names
from protocols.messages import DeviceKind
from tests.locker.conftest import KEY_ENV, TEST_KEY_HEX


def config(driver: str, **options: object) -> DeviceConfig:
    return DeviceConfig(id="bank-1", kind=DeviceKind.LOCKER_BANK, driver=driver, options=options)


def test_both_drivers_are_registered_as_locker_banks() -> None:
    names = driver_names()
    assert names["cu16"] is DeviceKind.LOCKER_BANK
    assert names["sim-cu16"] is DeviceKind.LOCKER_BANK


def test_cu16_options_are_validated_by_name() -> None:
    with pytest.raises(ValueError, match="poll_interval_s"):
        create_driver(config("cu16", transport="tcp://127.0.0.1:1", poll_interval_s=1.0))
    with pytest.raises(ValueError, match="polarity"):
        create_driver(config("cu16", transport="tcp://127.0.0.1:1", polarity="sideways"))
    with pytest.raises(ValueError, match="unknown transport"):
        create_driver(config("cu16", transport="udp://127.0.0.1:1"))
    with pytest.raises(ValueError, match="transport"):
        create_driver(config("cu16"))


def test_a_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ValueError, match=KEY_ENV):
        create_driver(config("cu16", transport="serial:///dev/ttyUSB0", codes_key_env=KEY_ENV))
    monkeypatch.setenv(KEY_ENV, TEST_KEY_HEX)
    driver = create_driver(
        config("cu16", transport="serial:///dev/ttyUSB0", codes_key_env=KEY_ENV, boards=[0, 3])
    )
    assert driver.info().driver == "cu16"
    assert len(driver.snapshot().compartments) == 32
    assert TEST_KEY_HEX not in repr(vars(driver))
