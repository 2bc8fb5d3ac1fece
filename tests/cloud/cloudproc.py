"""Run `storegate cloud` as a real child process, and look at its SQLite state from outside."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from cloud.config import hash_key
from tests.conftest import REPO_ROOT
from tests.servers import free_port, wait_for_port

OPS_KEY, STAFF_KEY, SHOPPER_KEY = "ops-test-key", "staff-test-key", "shopper-test-key"


def cloud_config(
    broker_port: int, workdir: Path, *, stores: dict[str, list[str]], **ingest: Any
) -> dict[str, Any]:
    return {
        "mqtt": {"host": "127.0.0.1", "port": broker_port},
        "ingest": {
            "client_id": f"cloud-{workdir.name}"[:60],
            "spool_dir": str(workdir / "spool"),
            **ingest,
        },
        "database_url": f"sqlite+aiosqlite:///{workdir}/state.db",
        "api": {
            "host": "127.0.0.1",
            "port": 0,
            "keys": [
                {"name": "ops", "role": "ops", "sha256": hash_key(OPS_KEY)},
                {
                    "name": "staff",
                    "role": "staff",
                    "stores": ["store-042"],
                    "sha256": hash_key(STAFF_KEY),
                },
                {"name": "shop", "role": "shopper_app", "sha256": hash_key(SHOPPER_KEY)},
            ],
        },
        "stores": [{"id": store, "nodes": nodes} for store, nodes in stores.items()],
    }


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise TimeoutError(f"{what} within {timeout}s")


class CloudProcess:
    """`python -m storegate cloud -c cloud.yaml` with a fixed API port."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        self.api_port = free_port()
        config = {**config, "api": {**config["api"], "port": self.api_port}}
        self.config_path = workdir / "cloud.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.db_path = workdir / "state.db"
        self.log_path = workdir / "cloud.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "storegate",
                "cloud",
                "-c",
                str(self.config_path),
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=log,
            env=env,
            cwd=self.workdir,
        )
        log.close()
        try:
            wait_for_port(self.api_port, timeout=30)
        except TimeoutError:
            self.kill()
            raise RuntimeError(
                f"cloud did not start: {self.log_path.read_text()[-3000:]}"
            ) from None
        wait_until(self.ready, 20, "cloud ready (broker connected)")

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def metric(self, name: str, labels: str = "") -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        connection = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return list(connection.execute(sql, args))
        finally:
            connection.close()

    def hw(self, store: str, node: str, stream: str) -> int:
        rows = self.query(
            "SELECT hw FROM stream_positions WHERE store_id=? AND node_id=? AND stream=?",
            store,
            node,
            stream,
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else -1
