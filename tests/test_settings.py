from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from protocols.settings import ConfigError, FileSettings, load_settings


class _Mqtt(BaseModel):
    host: str = "localhost"
    port: int = Field(default=1883, ge=1, le=65535)


class _Example(FileSettings):
    model_config = SettingsConfigDict(env_prefix="SG_TEST_", env_nested_delimiter="__")
    store: str
    mqtt: _Mqtt = _Mqtt()


def test_yaml_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("store: s1\nmqtt:\n  host: broker\n  port: 8883\n")
    config = load_settings(_Example, path)
    assert (config.store, config.mqtt.host, config.mqtt.port) == ("s1", "broker", 8883)
    monkeypatch.setenv("SG_TEST_MQTT__PORT", "1884")
    assert load_settings(_Example, path).mqtt.port == 1884


def test_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("store: s1\nmqtt:\n  port: 70000\n")
    with pytest.raises(ConfigError, match=r"mqtt\.port: Input should be less than"):
        load_settings(_Example, path)
    path.write_text("mqtt: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(_Example, path)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(_Example, tmp_path / "missing.yaml")
