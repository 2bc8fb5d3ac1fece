"""The whole cloud (ingestor, domains, API on uvicorn, real SQLite) in a background thread.

For tests that drive the API with a synchronous client (schemathesis, the auth matrix): the
cloud runs its own event loop in a thread, so a blocking request from the test does not
stall the server it is talking to. One key per role, plus a staff key for one store.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloud.config import CloudSettings
from cloud.runtime import CloudRuntime
from tests.cloud.cloudproc import OPS_KEY, SHOPPER_KEY, STAFF_KEY, cloud_config
from tests.servers import mosquitto

STORE, OTHER_STORE, NODE = "store-042", "store-007", "pi-1"

# Each credential a caller can present: the role's key, or none, or one nobody configured.
CREDENTIALS: dict[str, str | None] = {
    "ops": OPS_KEY,
    "staff": STAFF_KEY,
    "shopper_app": SHOPPER_KEY,
    "no_key": None,
    "wrong_key": "not-a-configured-key",
}


def auth_headers(credential: str) -> dict[str, str]:
    key = CREDENTIALS[credential]
    return {} if key is None else {"Authorization": f"Bearer {key}"}


class LiveCloud:
    def __init__(self, workdir: Path, **api: Any) -> None:
        (workdir / "broker").mkdir(exist_ok=True)
        self.broker = mosquitto(workdir / "broker")
        self.workdir = workdir
        self.api_overrides = api
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runtime: CloudRuntime | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.broker.start()
        config = cloud_config(
            self.broker.port, self.workdir, stores={STORE: [NODE], OTHER_STORE: [NODE]}
        )
        config["api"].update(self.api_overrides)
        settings = CloudSettings(**config)
        self._thread.start()

        async def start() -> int:
            self._runtime = CloudRuntime(settings)
            await self._runtime.start()
            return self._runtime.api_port

        self.port = asyncio.run_coroutine_threadsafe(start(), self._loop).result(60)

    def stop(self) -> None:
        try:
            if self._runtime is not None:
                asyncio.run_coroutine_threadsafe(self._runtime.stop(), self._loop).result(60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self.broker.kill()


@contextmanager
def live_cloud(workdir: Path, **api: Any) -> Iterator[LiveCloud]:
    cloud = LiveCloud(workdir, **api)
    try:
        cloud.start()
        yield cloud
    finally:
        cloud.stop()
