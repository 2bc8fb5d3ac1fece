"""docker-compose.yml and everything it mounts, checked as far as this machine can.

There is no Docker engine here, so the compose file is validated against the Compose spec
by the `compose_spec` parser, and every storegate config it mounts is parsed by storegate's
own config classes (the edge configs down to each driver's options).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
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
CERTS_SOURCE = "./deploy/certs/"  # made by `storegate certs`, never in the repository
PREFLIGHT = REPO_ROOT / "deploy" / "preflight.sh"


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
            if source.startswith(CERTS_SOURCE):
                assert source[len(CERTS_SOURCE) :] in certs_made_for_compose(), source
            elif source.startswith("./"):
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


def certs_made_for_compose() -> set[str]:
    """The files `storegate certs` writes for the stores of the compose file."""
    stores = [name for name in compose()["services"] if name.startswith("store-")]
    names = ["ca", "broker", "storegate-cloud", *stores]
    return {f"{name}.{ext}" for name in names for ext in ("crt", "key")}


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cloud.certs import make_certs

    stores = [name for name in compose()["services"] if name.startswith("store-")]
    out = tmp_path_factory.mktemp("deploy") / "certs"
    make_certs(out, broker_names=["mosquitto"], stores=stores)
    assert {p.name for p in out.iterdir()} == certs_made_for_compose()
    return out


def with_mounted_certs(service: str, config_path: Path, certs: Path, tmp_path: Path) -> Path:
    """The config with each TLS file path moved to the file compose mounts there."""
    mounts = {}
    for mount in compose()["services"][service]["volumes"]:
        source, target = mount.split(":")[:2]
        if source.startswith(CERTS_SOURCE):
            mounts[target] = certs / source[len(CERTS_SOURCE) :]
    text = config_path.read_text()
    tls_paths = re.findall(r"_file: (\S+)", text)
    assert len(tls_paths) == 3, tls_paths  # the CA, the certificate, the key
    for path in tls_paths:
        assert path in mounts, f"{config_path.name}: {path} is not mounted into {service}"
        text = text.replace(path, str(mounts[path]))
    moved = tmp_path / config_path.name
    moved.write_text(text)
    return moved


def test_cloud_config_parses(
    monkeypatch: pytest.MonkeyPatch, certs_dir: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("STOREGATE_CLOUD_MQTT__PASSWORD", "secret")
    path = with_mounted_certs("cloud", REPO_ROOT / "deploy" / "cloud.yaml", certs_dir, tmp_path)
    config = load_settings(CloudSettings, path)
    assert {store.id for store in config.stores} == {"store-001", "store-002", "store-003"}
    assert config.influxdb is not None
    assert config.mqtt.port == 8883
    assert config.mqtt.tls is not None
    assert config.mqtt.tls.cert_file is not None
    # the certificate `storegate certs` makes for the cloud (its login is a separate secret)
    assert config.mqtt.tls.cert_file.name == "storegate-cloud.crt"


def test_the_cloud_gets_its_api_keys_and_metrics_key_from_env(
    monkeypatch: pytest.MonkeyPatch, certs_dir: Path, tmp_path: Path
) -> None:
    # What compose hands the cloud, with the ${...} filled in the way compose does it.
    environment = compose()["services"]["cloud"]["environment"]
    values = {"OPS_API_KEY_SHA256": "a" * 64, "WEBSHOP_API_KEY_SHA256": "b" * 64}
    for name, value in environment.items():
        if name.startswith("STOREGATE_CLOUD_API__"):
            filled = re.sub(
                r"\$\{([A-Z0-9_]+):\?[^}]*\}", lambda m: values.get(m[1], "k" * 40), value
            )
            monkeypatch.setenv(name, filled)
    path = with_mounted_certs("cloud", REPO_ROOT / "deploy" / "cloud.yaml", certs_dir, tmp_path)
    config = load_settings(CloudSettings, path)
    assert {(key.name, key.role.value, key.sha256) for key in config.api.keys} == {
        ("ops", "ops", "a" * 64),
        ("webshop", "shopper_app", "b" * 64),
    }
    assert config.api.metrics_key is not None


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "deploy" / "stores").glob("*.yaml")))
def test_store_configs_parse_down_to_driver_options(
    path: Path, monkeypatch: pytest.MonkeyPatch, certs_dir: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("STOREGATE_LOCKER_KEY", "ab" * 32)
    config = load_settings(EdgeSettings, with_mounted_certs(path.stem, path, certs_dir, tmp_path))
    assert config.mqtt.port == 8883
    assert config.mqtt.tls is not None
    assert config.mqtt.tls.key_file is not None
    assert config.mqtt.tls.key_file.name == f"{config.store}.key"
    for device in config.devices:
        driver = create_driver(device)
        assert driver.device == device.id
    # one login per node, named like its client id: the broker pins each login to its id
    assert config.mqtt.username == config.client_id()
    logins = load_logins(REPO_ROOT / "deploy" / "mosquitto" / "logins.yaml")
    assert config.mqtt.username in {node.username for node in logins.nodes}


def test_broker_logins_cover_the_deployment_and_get_their_passwords(
    certs_dir: Path, tmp_path: Path
) -> None:
    logins = load_logins(REPO_ROOT / "deploy" / "mosquitto" / "logins.yaml")
    path = with_mounted_certs("cloud", REPO_ROOT / "deploy" / "cloud.yaml", certs_dir, tmp_path)
    cloud = load_settings(CloudSettings, path)
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
    # (tests/timeseries/test_grafana.py checks every dashboard and runs its queries)
    for path in sorted((REPO_ROOT / "deploy/grafana/dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                influxql = target.get("query", "")  # SQL panels have `rawSql` instead
                for measurement in re.findall(r'FROM "([a-z_]+)"', influxql):
                    assert measurement in known, f"{path.name}: {panel['title']!r}: {measurement}"


def published(service: str) -> list[str]:
    return [str(port) for port in compose()["services"][service].get("ports", [])]


def test_no_database_influxdb_or_grafana_port_is_published_to_every_interface() -> None:
    for service in ("postgres", "influxdb", "grafana", "cloud"):
        for port in published(service):
            # "HOST:CONTAINER" without an address binds 0.0.0.0; only loopback is allowed
            assert port.startswith("127.0.0.1:"), f"{service} publishes {port} to every host"
    assert published("postgres") == []
    assert published("influxdb") == []
    # The broker: TLS on 8883 only, and its config has no plain listener.
    assert published("mosquitto") == ["8883:8883"]
    conf = (REPO_ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert re.findall(r"^listener .*$", conf, re.MULTILINE) == ["listener 8883"]


def test_every_secret_goes_through_the_preflight_check() -> None:
    services = compose()["services"]
    needed = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    checked = {
        re.fullmatch(r"\$\{([A-Z0-9_]+):\?[^}]*\}", value)[1]  # type: ignore[index]
        for name, value in services["preflight"]["environment"].items()
        if name.startswith("SECRET_")
    }
    assert needed == checked
    for name, service in services.items():
        if name != "preflight":
            condition = service["depends_on"]["preflight"]["condition"]
            assert condition == "service_completed_successfully", name


def run_preflight(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell is not None
    secrets = {f"SECRET_{name}": value for name, value in env.items()}
    return subprocess.run(
        [shell, str(PREFLIGHT)],
        env={"PATH": os.environ["PATH"], **secrets},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def env_example() -> dict[str, str]:
    text = (REPO_ROOT / "deploy" / "env.example").read_text()
    return dict(re.findall(r"^([A-Z0-9_]+)=(\S+)", text, re.MULTILINE))


def test_preflight_refuses_the_env_example_naming_each_variable_and_no_value() -> None:
    example = env_example()
    result = run_preflight(example)
    assert result.returncode == 1
    for name, value in example.items():
        assert f"  {name}: still the change-me placeholder" in result.stderr
        assert value not in result.stderr + result.stdout


def test_preflight_refuses_a_short_secret_and_passes_strong_ones() -> None:
    strong = {name: f"{index:02d}" + "5f0c" * 10 for index, name in enumerate(env_example())}
    passed = run_preflight(strong)
    assert passed.returncode == 0, passed.stderr
    short = {**strong, "GRAFANA_PASSWORD": "x" * 31}
    result = run_preflight(short)
    assert result.returncode == 1
    assert result.stderr.splitlines()[1:] == ["  GRAFANA_PASSWORD: shorter than 32 characters"
                                              " (under 128 bits as hex)"]  # fmt: skip


def test_prometheus_scrapes_the_cloud_with_the_metrics_key() -> None:
    config = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"]
    cloud_port = int(published("cloud")[0].rsplit(":", 1)[1])
    assert job["static_configs"][0]["targets"] == [f"cloud:{cloud_port}"]
