"""The driver registry: real drivers built in, simulated ones found through entry points,
each module imported only when a config names one of its drivers."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from edge.config import create_drivers, load_edge_settings
from edge.drivers.base import DeviceConfig
from edge.drivers.registry import (
    BUILTIN_DRIVERS,
    ENTRY_POINT_GROUP,
    DriverLookupError,
    create_driver,
    driver_spec,
    installed_driver_names,
)
from protocols.messages import DeviceKind
from protocols.settings import ConfigError
from tests.conftest import REPO_ROOT
from tests.edge.helpers import edge_config

SIMULATED = {"sim-counter", "sim-llrp", "sim-impinj-iot", "sim-zebra-iot", "sim-cu16", "sim-ble"}
REAL = {"llrp", "impinj-iot", "zebra-iot", "cu16", "bleak"}


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_sim_drivers_come_from_entry_points_and_real_ones_are_built_in() -> None:
    declared = {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}
    assert set(declared) >= SIMULATED, "reinstall (scripts/bootstrap) after editing pyproject"
    assert all(declared[name].startswith("simulators.") for name in SIMULATED)
    assert set(BUILTIN_DRIVERS) == REAL
    assert not SIMULATED & set(BUILTIN_DRIVERS)
    assert set(installed_driver_names()) >= SIMULATED | REAL

    from simulators.drivers.llrp import SIM_LLRP_DRIVER

    assert driver_spec("sim-llrp") is SIM_LLRP_DRIVER
    kinds = {name: driver_spec(name).kind for name in SIMULATED}
    assert kinds["sim-cu16"] is DeviceKind.LOCKER_BANK
    assert kinds["sim-ble"] is DeviceKind.BLE_SCANNER
    assert kinds["sim-zebra-iot"] is DeviceKind.RFID_READER


def test_a_lookup_imports_only_the_named_drivers_module() -> None:
    result = run_python(
        """
        import sys
        from edge.drivers.registry import driver_spec, installed_driver_names
        driver_modules = ("edge.rfid.", "edge.locker.", "edge.ble.", "simulators")
        names = installed_driver_names()
        assert not [m for m in sys.modules if m.startswith(driver_modules)], "listing imported"
        driver_spec("sim-counter")
        loaded = sorted(m for m in sys.modules if m.startswith(driver_modules))
        print(loaded)
        assert loaded == ["simulators", "simulators.drivers", "simulators.drivers.counter"]
        driver_spec("cu16")
        assert "edge.locker.driver" in sys.modules
        assert "edge.rfid.driver" not in sys.modules
        assert "simulators.drivers.cu16" not in sys.modules
        print("ok")
        """
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.endswith("ok\n")


def test_an_unknown_driver_names_the_installed_ones() -> None:
    with pytest.raises(DriverLookupError) as caught:
        driver_spec("warp-drive")
    message = str(caught.value)
    assert "'warp-drive'" in message
    assert "llrp, sim-ble" in message  # the sorted installed names, real and simulated
    assert "storegate[sim]" not in message  # not a sim-* name: no simulators hint
    with pytest.raises(DriverLookupError, match=r"storegate\[sim\]"):
        driver_spec("sim-warp")
    config = DeviceConfig(id="x", kind=DeviceKind.LOCKER_BANK, driver="sim-counter")
    with pytest.raises(ValueError, match="is for rfid_reader, not locker_bank"):
        create_driver(config)


def test_without_simulators_the_edge_runs_real_drivers_and_says_what_sim_needs(
    tmp_path: Path,
) -> None:
    """What a Pi without the simulators sees: llrp works, sim-llrp is a config error that
    says where sim-* drivers come from."""
    config = edge_config(
        tmp_path,
        1883,
        [
            {
                "id": "r1",
                "kind": "rfid_reader",
                "driver": "llrp",
                "options": {"host": "10.0.0.9", "antennas": {1: "s1"}},
            },
            {"id": "r2", "kind": "rfid_reader", "driver": "sim-llrp"},
        ],
    )
    result = run_python(
        f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "simulators":
                    raise ImportError(f"no module named {{name}} on this node")
        sys.meta_path.insert(0, Block())
        from edge.config import create_drivers, load_edge_settings
        from protocols.settings import ConfigError
        settings = load_edge_settings({str(config)!r})
        real = settings.model_copy(update={{"devices": settings.devices[:1]}})
        assert list(create_drivers(real)) == ["r1"]
        try:
            create_drivers(settings)
        except ConfigError as exc:
            print(exc)
        else:
            raise SystemExit("sim-llrp was created without simulators")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "devices.1.driver: driver 'sim-llrp'" in result.stdout
    assert "cannot be loaded" in result.stdout
    assert "storegate[sim]" in result.stdout


def _install_plugin(tmp_path: Path, entry_points_txt: str) -> None:
    """A real (if tiny) installed distribution declaring drivers: a dist-info on sys.path."""
    (tmp_path / "third_party_drivers.py").write_text(
        textwrap.dedent(
            """
            from edge.drivers.base import DriverSpec
            from protocols.messages import DeviceKind
            from simulators.drivers.counter import SIM_COUNTER_DRIVER
            TWIN = DriverSpec(DeviceKind.RFID_READER, SIM_COUNTER_DRIVER.factory)
            NOT_A_SPEC = "llrp"
            """
        )
    )
    info = tmp_path / "third_party_drivers-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: third-party-drivers\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_points_txt}")


def test_third_party_entry_points_are_found_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _install_plugin(
        tmp_path,
        "tp-twin = third_party_drivers:TWIN\n"
        "tp-broken = third_party_drivers:NOT_A_SPEC\n"
        "llrp = third_party_drivers:TWIN\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="edge.drivers.registry"):
        assert {"tp-twin", "tp-broken"} <= set(installed_driver_names())
    assert "'llrp' is a built-in driver" in caplog.text

    monkeypatch.delitem(sys.modules, "third_party_drivers", raising=False)
    import third_party_drivers  # type: ignore[import-not-found]

    assert driver_spec("tp-twin") is third_party_drivers.TWIN
    from edge.rfid.driver import LLRP_DRIVER

    assert driver_spec("llrp") is LLRP_DRIVER  # a plugin cannot replace a built-in driver
    with pytest.raises(DriverLookupError, match="is not a DriverSpec"):
        driver_spec("tp-broken")

    path = edge_config(tmp_path, 1883, [{"id": "x", "kind": "rfid_reader", "driver": "tp-twin"}])
    assert create_drivers(load_edge_settings(path))["x"].driver_name == "sim-counter"


def test_one_name_declared_twice_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_plugin(tmp_path, "sim-counter = third_party_drivers:TWIN\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    device = {"id": "x", "kind": "rfid_reader", "driver": "sim-counter"}
    path = edge_config(tmp_path, 1883, [device])
    with pytest.raises(ConfigError, match="'sim-counter' is declared twice"):
        create_drivers(load_edge_settings(path))
    assert driver_spec("sim-llrp").kind is DeviceKind.RFID_READER  # other names still work
