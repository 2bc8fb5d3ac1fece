from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import BrokerProcess, EmbeddedBroker, MosquittoBroker, mosquitto

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture
def mosquitto_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A real Mosquitto on a free port; the test may stop, kill and restart it."""
    broker = mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.kill()


@pytest.fixture
def embedded_broker() -> Iterator[EmbeddedBroker]:
    """The embedded iotcore broker on a free port; the test may stop and restart it."""
    broker = EmbeddedBroker()
    broker.start()
    yield broker
    broker.kill()


@pytest.fixture(params=["mosquitto", "iotcore"])
def any_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerProcess]:
    """Each test runs once against Mosquitto and once against the embedded broker."""
    broker: BrokerProcess = (
        mosquitto(tmp_path) if request.param == "mosquitto" else EmbeddedBroker()
    )
    broker.start()
    yield broker
    broker.kill()
