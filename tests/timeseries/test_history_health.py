"""A history outage is visible: the running cloud's /metrics and /readyz while a real
VictoriaMetrics (its time-series sink) is killed and comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloud.config import CloudSettings
from cloud.runtime import CloudRuntime
from protocols.codec import encode, topic_for
from tests.cloud.cloudproc import cloud_config
from tests.cloud.streams import GTIN, NODE, STORE, birth, rfid
from tests.mqtt_helpers import publisher
from tests.servers import MosquittoBroker
from tests.timeseries.tsservers import VictoriaMetrics


@pytest.fixture
async def cloud(
    mosquitto_broker: MosquittoBroker, victoria_metrics: VictoriaMetrics, tmp_path: Path
) -> AsyncIterator[CloudRuntime]:
    config = cloud_config(mosquitto_broker.port, tmp_path, stores={STORE: [NODE]})
    config["influxdb"] = {"url": victoria_metrics.url, "bucket": "storegate"}
    runtime = CloudRuntime(CloudSettings(**config))
    await runtime.start()
    yield runtime
    await runtime.stop()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _eventually(
    http: httpx.AsyncClient, path: str, check: Callable[[Any], bool], limit_s: float
) -> Any:
    async with asyncio.timeout(limit_s):
        while True:
            response = await http.get(path)
            body = _samples(response.text) if path == "/metrics" else response.json()
            if check(body):
                return body
            await asyncio.sleep(0.1)


async def test_metrics_and_readyz_show_a_sink_outage_and_its_end(
    cloud: CloudRuntime, mosquitto_broker: MosquittoBroker, victoria_metrics: VictoriaMetrics
) -> None:
    base = f"http://127.0.0.1:{cloud.api_port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        await _eventually(http, "/readyz", lambda b: b == {"status": "ready"}, 10)
        client = publisher(mosquitto_broker.host, mosquitto_broker.port)
        for message in [birth(1, shelves={("s1", GTIN): 3}), rfid(1, {("s1", GTIN): 4})]:
            client.publish(topic_for(message), encode(message), qos=1).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()

        kept = ("storegate_history_spool_lines", (("state", "kept"),))
        pending = ("storegate_history_spool_lines", (("state", "pending"),))
        up = await _eventually(
            http, "/metrics", lambda m: m.get(kept, 0) > 0 and m.get(pending) == 0, 15
        )
        assert up[("storegate_history_sink_up", ())] == 1
        assert up[("storegate_history_spool_bytes", (("state", "kept"),))] > 0
        assert up[("storegate_history_spool_oldest_pending_age_seconds", ())] == 0
        assert up[("storegate_history_replay_window_seconds", ())] >= 0
        assert up[("storegate_history_pump_errors_total", (("kind", "probe"),))] == 0
        assert up[("storegate_history_replays_total", (("reason", "outage"),))] == 0
        assert up[("storegate_history_written_lines_total", ())] > 0

        victoria_metrics.kill()
        # The pump probes the sink every 5 s even when it has nothing to write.
        ready = await _eventually(http, "/readyz", lambda b: b["status"] != "ready", 12)
        assert ready["status"] == "degraded"
        [reason] = ready["degraded"]
        assert reason.startswith("history: sink down: probe:")
        assert victoria_metrics.url.removeprefix("http://") in reason
        assert (await http.get("/readyz")).status_code == 200  # still serving: not a 503
        down = _samples((await http.get("/metrics")).text)
        assert down[("storegate_history_sink_up", ())] == 0
        assert down[("storegate_history_pump_errors_total", (("kind", "probe"),))] >= 1

        await asyncio.to_thread(victoria_metrics.start)
        await _eventually(http, "/readyz", lambda b: b == {"status": "ready"}, 20)
        back = _samples((await http.get("/metrics")).text)
        assert back[("storegate_history_sink_up", ())] == 1
        assert back[("storegate_history_replays_total", (("reason", "outage"),))] == 1
        assert back[("storegate_history_replayed_lines_total", ())] >= up[kept]
