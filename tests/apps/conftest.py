"""The apps against the whole BOPIS path: real Mosquitto, the cloud (every domain) and the
edge runtime with a `sim-cu16` locker bank (tests/lockers_e2e/rig.py), a catalogue
imported over the API, and Debian's chromium (tests/dashboard/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, Page, ViewportSize

from tests.cloud.cloudproc import OPS_KEY
from tests.dashboard.conftest import ARTIFACTS, DESKTOP, browser  # noqa: F401  (fixture)
from tests.dashboard.edge import EdgePublisher
from tests.lockers_e2e.rig import GTIN, Rig, bearer, running_rig
from tests.servers import MosquittoBroker

PHONE: ViewportSize = {"width": 390, "height": 844}
VIEWPORTS = {"desktop": DESKTOP, "phone": PHONE}
# The rig's GTIN and two more, as a store would export them
CATALOGUE = (
    "gtin,name,size,colour,price,currency,category\n"
    f"{GTIN},Linen shirt,M,white,39.90,EUR,Tops\n"
    "00614141012008,Straight jeans,32/32,mid blue,59.90,EUR,Trousers\n"
    "00614141013005,Cotton socks 3-pack,one size,mixed,9.90,EUR,Accessories\n"
)
SHELF = "aisle3-shelf2"


@pytest.fixture
def app_artifacts() -> Path:
    path = ARTIFACTS.parent / "apps"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
async def rig(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    async with running_rig(tmp_path, mosquitto_broker, monkeypatch) as rig:
        imported = await rig.http.put(
            "/api/v1/products",
            content=CATALOGUE,
            headers={**bearer(OPS_KEY), "Content-Type": "text/csv"},
        )
        assert imported.json()["imported"] == 3, imported.text
        yield rig


@pytest.fixture
def edge(mosquitto_broker: MosquittoBroker) -> Iterator[EdgePublisher]:
    client = EdgePublisher(mosquitto_broker)
    yield client
    client.close()


class ConsoleErrors:
    """Every console error and uncaught exception of a page: a test ends with none."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page) -> Page:
        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.errors.append(f"console: {message.text} ({message.location})")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        return page
