from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.helpers import EdgeProcess
from tests.servers import MosquittoBroker, mosquitto


@pytest.fixture
def edge_processes() -> Iterator[list[EdgeProcess]]:
    """Every daemon a test starts is killed at the end, whatever happened."""
    started: list[EdgeProcess] = []
    yield started
    for process in started:
        process.kill()


@pytest.fixture
def persistent_mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """Mosquitto that keeps sessions across a stop/start (persistence on), so the test's
    watcher misses nothing while the broker is away."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    broker = mosquitto(workdir, persistence=True)
    broker.start()
    yield broker
    broker.kill()
