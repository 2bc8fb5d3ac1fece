"""The config file: the example parses; a bad one stops the daemon, naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import EdgeSettings, create_drivers, load_edge_settings
from protocols.settings import ConfigError
from tests.conftest import REPO_ROOT
from tests.edge.helpers import edge_config, sim_device

EXAMPLE = REPO_ROOT / "examples" / "edge.yaml"


def test_example_config_parses_and_its_drivers_build() -> None:
    settings = load_edge_settings(EXAMPLE)
    assert (settings.store, settings.node) == ("store-201", "pi-front")
    assert settings.outbox.synchronous == "normal"
    drivers = create_drivers(settings)
    assert list(drivers) == ["reader-1"]
    assert drivers["reader-1"].driver_name == "sim-counter"


def test_environment_overrides_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOREGATE_EDGE_MQTT__PORT", "8883")
    monkeypatch.setenv("STOREGATE_EDGE_OUTBOX__SYNCHRONOUS", "full")
    settings = load_edge_settings(EXAMPLE)
    assert (settings.mqtt.port, settings.outbox.synchronous) == (8883, "full")


@pytest.mark.parametrize(
    ("devices", "overrides", "field"),
    [
        ([sim_device(rate_hz=0)], {}, "devices.0.options.rate_hz"),
        ([sim_device(), sim_device("r2", colour="red")], {}, "devices.1.options.colour"),
        ([{"id": "x", "kind": "rfid_reader", "driver": "warp-drive"}], {}, "devices.0.driver"),
        ([{"id": "x", "kind": "locker_bank", "driver": "sim-counter"}], {}, "devices.0.kind"),
        ([], {"mqtt": {"port": 70000}}, "mqtt.port"),
        ([], {"store": "shopper"}, "store"),
        ([], {"outbox": {"synchronous": "sometimes"}}, "outbox.synchronous"),
    ],
)
def test_invalid_config_names_the_field(
    tmp_path: Path, devices: list[dict[str, object]], overrides: dict[str, object], field: str
) -> None:
    path = edge_config(tmp_path, 1883, devices, **overrides)
    with pytest.raises(ConfigError) as caught:
        create_drivers(load_edge_settings(path))
    assert field in str(caught.value)


def test_daemon_refuses_to_start_on_a_bad_driver_option(tmp_path: Path) -> None:
    path = edge_config(tmp_path, 1883, [sim_device(rate_hz=-5)])
    result = subprocess.run(
        [sys.executable, "-m", "storegate", "edge", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 2
    assert "devices.0.options.rate_hz" in result.stderr
    assert not (tmp_path / "outbox.db").exists()  # refused before touching anything


def test_duplicate_device_ids_are_refused(tmp_path: Path) -> None:
    path = edge_config(tmp_path, 1883, [sim_device("r1"), sim_device("r1")])
    with pytest.raises(ConfigError, match="used twice"):
        load_edge_settings(path)
    assert EdgeSettings.model_config["env_prefix"] == "STOREGATE_EDGE_"
