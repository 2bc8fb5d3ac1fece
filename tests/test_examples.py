"""The example files fit together, and the docs' piece-by-piece recipe works as written."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from cloud.config import load_cloud_settings
from edge.config import load_edge_settings
from simulators.scenario.model import default_scenario, load_scenario
from tests.conftest import REPO_ROOT
from tests.servers import free_port, require_binary, wait_for_port

EXAMPLES = REPO_ROOT / "examples"
RECIPE_DOC = REPO_ROOT / "docs" / "demo.md"
OPS_KEY = "ops-demo-key"
RUN_S = 20


def test_the_cloud_example_registers_every_node_the_scenario_and_edge_examples_run() -> None:
    cloud = load_cloud_settings(EXAMPLES / "cloud.yaml")
    scenario = load_scenario(EXAMPLES / "scenario.yaml")
    edge = load_edge_settings(EXAMPLES / "edge.yaml")
    registered = {(store.id, node) for store in cloud.stores for node in store.nodes}
    simulated = {(store.id, store.node) for store in scenario.stores}
    assert simulated <= registered
    assert (edge.store, edge.node) in registered
    assert scenario.broker.protocol == cloud.mqtt.protocol == edge.mqtt.protocol
    assert (scenario.broker.host, scenario.broker.port) == (cloud.mqtt.host, cloud.mqtt.port)
    # The demo runs its own stores: the example must not take their sessions over.
    demo_ids = {store.id for store in default_scenario().stores}
    assert demo_ids.isdisjoint(store.id for store in scenario.stores)


def recipe() -> list[list[str]]:
    """The commands of the fenced block after the `<!-- recipe` marker in docs/demo.md."""
    text = RECIPE_DOC.read_text()
    match = re.search(r"<!-- recipe[^>]*-->\s*```bash\n(.*?)```", text, re.S)
    assert match, "docs/demo.md lost its recipe block"
    return [shlex.split(line) for line in match.group(1).splitlines() if line.strip()]


def test_the_recipe_is_broker_cloud_sim() -> None:
    assert [command[:2] for command in recipe()] == [
        ["mosquitto", "-p"],
        ["storegate", "cloud"],
        ["storegate", "sim"],
    ]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in reversed(started):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def test_the_recipe_ends_with_every_store_in_the_inventory_and_no_dead_letter(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """Runs the recipe's own lines, each only moved to free ports and a scratch folder."""
    broker_cmd, cloud_cmd, sim_cmd = recipe()
    mqtt_port, api_port = free_port(), free_port()
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "STOREGATE_CLOUD_MQTT__PORT": str(mqtt_port),
        "STOREGATE_CLOUD_API__PORT": str(api_port),
    }
    env.pop("XDG_STATE_HOME", None)  # the documented default: ./.storegate in the working folder

    def start(command: list[str], log: str) -> subprocess.Popen[bytes]:
        command = [str(REPO_ROOT / c) if c.startswith("examples/") else c for c in command]
        if command[0] == "mosquitto":
            command = [require_binary("mosquitto", hint="Debian package mosquitto"), *command[1:]]
            command[command.index("-p") + 1] = str(mqtt_port)
        with (tmp_path / log).open("wb") as out:
            process = subprocess.Popen(
                command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        processes.append(process)
        return process

    start(broker_cmd, "broker.log")
    wait_for_port(mqtt_port)
    start(cloud_cmd, "cloud.log")
    wait_for_port(api_port, timeout=30)
    sim = start([*sim_cmd, "--port", str(mqtt_port), "--duration", str(RUN_S)], "sim.log")
    assert sim.wait(RUN_S + 60) == 0, (tmp_path / "sim.log").read_text()

    scenario = load_scenario(EXAMPLES / "scenario.yaml")
    headers = {"X-API-Key": OPS_KEY}
    base = f"http://127.0.0.1:{api_port}/api/v1"
    with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
        deadline = time.monotonic() + 20
        while True:
            stocked = {
                store.id: len(http.get(f"/stores/{store.id}/inventory").json())
                for store in scenario.stores
            }
            if all(stocked.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert all(stocked.values()), stocked
        nodes = {
            store.id: http.get(f"/stores/{store.id}/nodes").json() for store in scenario.stores
        }
        dead = http.get("/dead-letters", params={"limit": 500}).json()["items"]
    assert dead == [], dead[:5]
    assert all(rows and rows[0]["node"] for rows in nodes.values()), nodes
    cloud_log = (tmp_path / "cloud.log").read_text()
    assert "dead-lettered" not in cloud_log
    # The cloud kept its files in its data dir, none loose in the working folder.
    assert sorted(p.name for p in workdir.iterdir()) == [".storegate"]
    assert (workdir / ".storegate" / "cloud.db").is_file()
    assert (workdir / ".storegate" / "spool").is_dir()
    assert yaml.safe_load((EXAMPLES / "cloud.yaml").read_text())["api"]["port"] == 8080
