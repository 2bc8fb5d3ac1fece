from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import MosquittoBroker, mosquitto


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """Mosquitto keeping sessions across a restart: the cloud's persistent session queues
    what the edge replays while the cloud is still reconnecting."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    broker = mosquitto(workdir, persistence=True)
    broker.start()
    yield broker
    broker.kill()
