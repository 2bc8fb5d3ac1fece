"""docker-compose.yml and everything it mounts, checked as far as this machine can.

There is no Docker engine here, so the compose file is validated against the Compose spec
by the `compose_spec` parser, and every storegate config it mounts is parsed by storegate's
own config classes (the edge configs down to each driver's options).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud.broker.dynsec_file import load_logins
from cloud.config import CloudSettings
from edge.config import EdgeSettings
from edge.drivers.registry import create_driver
from protocols.settings import load_settings
from tests.conftest import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"


def compose() -> dict[str, Any]:
    # PyYAML applies `<<:` merge keys like Docker Compose does; the spec parser does not.
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return {key: value for key, value in data.items() if not key.startswith("x-")}


def test_compose_file_is_valid_against_the_spec() -> None:
    from compose_spec import PyCompose

    parsed = PyCompose.from_yaml(yaml.safe_dump(compose()))
    assert set(parsed.service_names()) >= {
        "mosquitto",
        "influxdb",
        "grafana",
        "postgres",
        "cloud",
        "store-001",
    }


def test_spec_parser_rejects_a_broken_file() -> None:
    from compose_spec import PyCompose

    with pytest.raises(ValueError, match="bogus"):
        PyCompose.from_yaml("services:\n  a:\n    image: x\n    bogus: 1\n")


def test_dependencies_volumes_and_mounted_files_exist() -> None:
    data = compose()
    services = data["services"]
    for name, service in services.items():
        depends = service.get("depends_on", [])
        for dependency in depends if isinstance(depends, list) else depends.keys():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in data["volumes"], f"{name} uses undeclared volume {source}"
        build = service.get("build")
        if build:
            assert (REPO_ROOT / build["dockerfile"]).is_file()


def test_every_secret_comes_from_env_example() -> None:
    text = COMPOSE_FILE.read_text()
    needed = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = (REPO_ROOT / "deploy" / "env.example").read_text()
    provided = set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert needed <= provided, f"missing in deploy/env.example: {needed - provided}"


def test_cloud_config_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOREGATE_CLOUD_MQTT__PASSWORD", "secret")
    config = load_settings(CloudSettings, REPO_ROOT / "deploy" / "cloud.yaml")
    assert {store.id for store in config.stores} == {"store-001", "store-002", "store-003"}
    assert config.influxdb is not None


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "deploy" / "stores").glob("*.yaml")))
def test_store_configs_parse_down_to_driver_options(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOREGATE_LOCKER_KEY", "ab" * 32)
    config = load_settings(EdgeSettings, path)
    for device in config.devices:
        driver = create_driver(device)
        assert driver.device == device.id
    # one login per node, named like its client id: the broker pins each login to its id
    assert config.mqtt.username == config.client_id()
    logins = load_logins(REPO_ROOT / "deploy" / "mosquitto" / "logins.yaml")
    assert config.mqtt.username in {node.username for node in logins.nodes}


def test_broker_logins_cover_the_deployment_and_get_their_passwords() -> None:
    logins = load_logins(REPO_ROOT / "deploy" / "mosquitto" / "logins.yaml")
    cloud = load_settings(CloudSettings, REPO_ROOT / "deploy" / "cloud.yaml")
    # the ingestor's login is its client id, and its admin login exists
    assert cloud.mqtt.username == cloud.ingest.client_id
    assert cloud.mqtt.username in {login.username for login in logins.cloud}
    assert cloud.broker_admin is not None
    assert cloud.broker_admin.username in {admin.username for admin in logins.admins}
    configured_nodes = {(s.id, n) for s in cloud.stores for n in s.nodes}
    assert configured_nodes == {(node.store, node.node) for node in logins.nodes}
    # every password the logins file names reaches the service that writes the broker file
    service = compose()["services"]["mosquitto-logins"]
    needed = {login.password_env for login in [*logins.admins, *logins.cloud, *logins.nodes]}
    assert needed <= set(service["environment"]), needed - set(service["environment"])


def test_grafana_dashboard_queries_known_measurements() -> None:
    from cloud.timeseries.schema import MEASUREMENTS

    known = set(MEASUREMENTS)
    dashboard = json.loads((REPO_ROOT / "deploy/grafana/dashboards/shelves.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for measurement in re.findall(r'FROM "([a-z_]+)"', target["query"]):
                assert measurement in known, f"panel {panel['title']!r}: {measurement}"
