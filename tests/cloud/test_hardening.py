"""`storegate cloud` refuses secrets anyone can know or guess (cloud/hardening.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud.config import CloudSettings, hash_key, load_cloud_settings
from cloud.hardening import KNOWN_DEMO_SECRETS, estimated_bits, insecure_secrets, secret_problem
from tests.cloud.cloudproc import OPS_KEY, cloud_config
from tests.conftest import REPO_ROOT

STRONG = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c"  # 48 hex characters, 192 bits
STRONG_TOKEN = "Zq3x_T8mKp2VwYb7Rn4sLc9Hd6Jf1Ge"  # 32 url-safe characters, 192 bits


def settings(tmp_path: Path, **overrides: Any) -> CloudSettings:
    config = cloud_config(1883, tmp_path, stores={"store-042": ["pi-1"]})
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return CloudSettings(**config)


def test_a_config_of_strong_secrets_passes(tmp_path: Path) -> None:
    config = settings(
        tmp_path,
        **{
            "mqtt.password": STRONG,
            "influxdb": {"url": "http://influx:8086", "token": STRONG_TOKEN},
            "database_url": f"postgresql+asyncpg://storegate:{STRONG}@db:5432/storegate",
            "api.metrics_key": STRONG_TOKEN,
            "domains": {"dashboard": {"session_secret": STRONG}},
        },
    )
    assert insecure_secrets(config) == []


@pytest.mark.parametrize("demo_key", sorted(KNOWN_DEMO_SECRETS))
def test_a_demo_api_key_is_refused_by_its_hash(tmp_path: Path, demo_key: str) -> None:
    config = settings(tmp_path)
    config.api.keys[1].sha256 = hash_key(demo_key)
    problems = insecure_secrets(config)
    assert problems == [
        "api.keys[staff].sha256: is the hash of a demo key published in this repository"
    ]


@pytest.mark.parametrize(
    ("where", "value", "named"),
    [
        ("mqtt.password", "change-me-cloud", "mqtt.password: is a change-me placeholder"),
        ("mqtt.password", "CHANGE_ME_please_0123456789abcdef", "mqtt.password: is a change-me"),
        ("mqtt.password", "shopper-demo-key", "mqtt.password: is a demo value"),
        ("api.metrics_key", "0123456789abcdef0123456789abcde", "api.metrics_key: is too short"),
        ("api.metrics_key", "Zq3x_T8mKp2VwYb7Rn4sL", "api.metrics_key: is too short"),
        (
            "database_url",
            "postgresql+asyncpg://storegate:change-me-postgres@db/storegate",
            "database_url (its password): is a change-me placeholder",
        ),
        (
            "domains",
            {"offers": {"webhook": {"url": "https://x.test/", "secret": "s3cret"}}},
            "domains.offers.webhook.secret: is too short",
        ),
    ],
)
def test_a_weak_plaintext_secret_is_named_and_never_shown(
    tmp_path: Path, where: str, value: Any, named: str
) -> None:
    problems = insecure_secrets(settings(tmp_path, **{where: value}))
    assert len(problems) == 1
    assert problems[0].startswith(named), problems
    secret = value if isinstance(value, str) else "s3cret"
    password = re.sub(r".*://[^:]+:([^@]+)@.*", r"\1", secret)
    assert password not in problems[0]
    assert secret not in problems[0]


def test_the_influxdb_token_is_checked(tmp_path: Path) -> None:
    influx = {"url": "http://influx:8086", "token": "change-me-influx-token"}
    assert insecure_secrets(settings(tmp_path, influxdb=influx)) == [
        "influxdb.token: is a change-me placeholder"
    ]


def test_a_tls_connection_that_does_not_check_the_broker_is_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not read by the check")
    tls = {"ca_file": str(ca), "insecure_skip_verify": True}
    assert insecure_secrets(settings(tmp_path, **{"mqtt.tls": tls})) == [
        "mqtt.tls.insecure_skip_verify: the broker's certificate name is not checked, so anyone"
        " with a certificate from its CA can pose as the broker"
    ]
    checked = {"ca_file": str(ca)}
    assert insecure_secrets(settings(tmp_path, **{"mqtt.tls": checked})) == []


def test_strength_is_length_times_the_bits_of_the_smallest_alphabet() -> None:
    assert estimated_bits("0" * 32) == pytest.approx(32 * 3.3219, rel=1e-3)  # digits only
    assert estimated_bits("ab" * 16) == 128  # 32 lowercase hex: exactly enough
    assert secret_problem("ab" * 16) is None
    assert secret_problem("ab" * 15 + "a") is not None  # 31 hex characters: 124 bits
    assert secret_problem("Zq3x_T8mKp2VwYb7Rn4sLc") is None  # token_urlsafe(16): 22 chars
    assert secret_problem("hunter2-hunter2") is not None


def _values_in_repo() -> dict[str, list[str]]:
    """Every secret-looking value the repository publishes as an example or a default."""
    from simulators.demo import DEMO_KEYS

    found: dict[str, list[str]] = {"plaintext": [], "keys": list(DEMO_KEYS.values())}
    secret_line = re.compile(r"^\s*#?\s*(?:password|token|secret|session_secret):\s*(\S+)", re.M)
    env_reference = re.compile(r"^\$\{[A-Z0-9_]+\}$")  # filled from the environment
    for path in [*(REPO_ROOT / "examples").glob("*.yaml"), *(REPO_ROOT / "deploy").rglob("*.y*ml")]:
        values = secret_line.findall(path.read_text())
        found["plaintext"] += [v for v in values if not env_reference.match(v)]
    env_example = (REPO_ROOT / "deploy" / "env.example").read_text()
    found["plaintext"] += re.findall(r"^[A-Z0-9_]+=(\S+)", env_example, re.M)
    for doc in [REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md")]:
        found["keys"] += re.findall(r"X-API-Key: ([A-Za-z0-9_.-]+)", doc.read_text())
    return found


def test_every_secret_the_repository_publishes_is_refused() -> None:
    found = _values_in_repo()
    assert len(found["plaintext"]) >= 10, found
    assert len(found["keys"]) >= 3, found
    accepted = [value for value in found["plaintext"] if secret_problem(value) is None]
    assert accepted == []
    hashes = {hash_key(key) for key in found["keys"]}
    example = load_cloud_settings(REPO_ROOT / "examples" / "cloud.yaml")
    example.api.keys += [example.api.keys[0].model_copy(update={"sha256": h}) for h in hashes]
    flagged = insecure_secrets(example)
    assert len(flagged) == len(example.api.keys) >= 6, flagged


def run_cloud_command(
    config: Path, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "storegate", "cloud", "-c", str(config), *flags],
        capture_output=True,
        text=True,
        timeout=20,  # a refusal takes well under a second; a cloud that starts would run on
        env=env,
        cwd=config.parent,
    )


def test_storegate_cloud_refuses_to_start_and_names_the_keys(tmp_path: Path) -> None:
    config = cloud_config(1, tmp_path, stores={"store-042": ["pi-1"]})
    config["api"]["keys"][0]["sha256"] = hash_key("ops-demo-key")
    config["mqtt"]["password"] = "change-me-cloud"
    path = tmp_path / "cloud.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cloud_command(path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "api.keys[ops].sha256" in output
    assert "mqtt.password" in output
    assert "--insecure-allow-demo-secrets" in output
    assert "change-me-cloud" not in output
    assert "ops-demo-key" not in output
    assert not (tmp_path / "state.db").exists()  # refused before it opened anything


def test_the_deploy_config_with_the_env_example_values_is_refused(tmp_path: Path) -> None:
    # deploy/cloud.yaml as docker-compose.yml runs it, with .env copied from env.example
    env_example = (REPO_ROOT / "deploy" / "env.example").read_text()
    env = dict(re.findall(r"^([A-Z0-9_]+)=(\S+)", env_example, re.M))
    overrides = {
        "STOREGATE_CLOUD_MQTT__PASSWORD": env["MQTT_CLOUD_PASSWORD"],
        "STOREGATE_CLOUD_INFLUXDB__TOKEN": env["INFLUXDB_TOKEN"],
        "STOREGATE_CLOUD_API__METRICS_KEY": env["METRICS_KEY"],
        "STOREGATE_CLOUD_DATABASE_URL": (
            f"postgresql+asyncpg://storegate:{env['POSTGRES_PASSWORD']}@postgres:5432/storegate"
        ),
    }
    config = yaml.safe_load((REPO_ROOT / "deploy" / "cloud.yaml").read_text())
    config.pop("mqtt")  # its TLS files exist only in a real deployment
    config["data_dir"] = str(tmp_path)
    path = tmp_path / "cloud.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cloud_command(path, env=overrides)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    for key in ("mqtt.password", "influxdb.token", "api.metrics_key", "database_url"):
        assert key in output, output
    assert OPS_KEY not in output
