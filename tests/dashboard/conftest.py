"""A real cloud (in-process, real Mosquitto, temp SQLite) and Debian's chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import BrowserContext, ViewportSize, async_playwright

from cloud.config import CloudSettings
from cloud.runtime import CloudRuntime
from tests.cloud.cloudproc import cloud_config
from tests.conftest import REPO_ROOT
from tests.dashboard.edge import NODE, OTHER_NODE, OTHER_STORE, STORE, EdgePublisher
from tests.servers import MosquittoBroker, require_binary

ARTIFACTS = REPO_ROOT / "test-artifacts" / "dashboard"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1440, "height": 1000}
TABLET: ViewportSize = {"width": 820, "height": 1180}  # a 10.9" tablet in portrait


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def cloud(
    request: pytest.FixtureRequest, mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> AsyncIterator[CloudRuntime]:
    """Parametrize indirectly with a number to make streams end after that many seconds."""
    config = cloud_config(
        mosquitto_broker.port,
        tmp_path,
        stores={STORE: [NODE, OTHER_NODE], OTHER_STORE: ["pi-1"]},
        batch_wait_ms=5,
    )
    max_age = float(getattr(request, "param", 3600.0))
    config["domains"] = {"dashboard": {"stream_max_age_s": max_age}}
    config["stores"][0]["name"] = "Lyon Part-Dieu"
    config["stores"][1]["name"] = "Paris Rivoli"
    runtime = CloudRuntime(CloudSettings(**config))
    await runtime.start()
    yield runtime
    await runtime.stop()


@pytest.fixture
async def http(cloud: CloudRuntime) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.api_port}", timeout=10) as c:
        yield c


@pytest.fixture
def edge(mosquitto_broker: MosquittoBroker) -> Iterator[EdgePublisher]:
    client = EdgePublisher(mosquitto_broker)
    yield client
    client.close()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Debian's chromium with a fresh profile (never a downloaded browser)."""
    executable = require_binary("chromium", hint="Debian package chromium")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=DESKTOP,
        )
        try:
            yield context
        finally:
            await context.close()
