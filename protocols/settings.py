"""Loading YAML config files with environment overrides, with errors that name the field.

Edge and cloud each define a `pydantic_settings.BaseSettings` subclass; this module gives
them the same file format and the same error messages. Environment variables win over
the file (`STOREGATE_EDGE_MQTT__HOST=...` with the class's prefix and `__` for nesting),
so a container or a systemd drop-in can override one value without editing the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

S = TypeVar("S", bound=BaseSettings)


class ConfigError(ValueError):
    """An unusable config file; the message names the file and every bad field."""


class FileSettings(BaseSettings):
    """Base for config classes: environment first, then the YAML file, then defaults."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings, file_secret_settings


def load_settings(cls: type[S], path: str | Path | None) -> S:
    """Read `path` (YAML) into `cls`; `None` means defaults plus environment."""
    data: Any = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a mapping at the top level")
    try:
        return cls(**data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            location = ".".join(str(part) for part in error["loc"]) or "(top level)"
            problems.append(f"  {location}: {error['msg']}")
        raise ConfigError(f"invalid config ({source}):\n" + "\n".join(problems)) from None
