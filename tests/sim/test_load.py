"""Load mode: 20 stores, 10 per process, from one `storegate sim` against a real Mosquitto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from protocols.topics import TOPIC_PREFIX, Channel, NodeTopic, TopicError, parse_topic
from tests.conftest import REPO_ROOT
from tests.mqtt_helpers import Collector
from tests.servers import MosquittoBroker

STORES = 20


def test_twenty_stores_publish_birth_data_and_death(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    broker = mosquitto_broker
    collector = Collector(broker.host, broker.port, [f"{TOPIC_PREFIX}/#"])
    truth = tmp_path / "truth.jsonl"
    try:
        result = subprocess.run(
            [
                *(sys.executable, "-m", "storegate", "sim", "--stores", str(STORES)),
                *("--duration", "25", "--port", str(broker.port), "--protocol", "5"),
                *("--truth", str(truth), "--per-process", "10"),
            ],
            capture_output=True,
            text=True,
            timeout=150,
            env={**os.environ, "COLUMNS": "120"},
            cwd=REPO_ROOT,
        )
    finally:
        collector.close()
    assert result.returncode == 0, result.stderr
    assert f"{STORES} store(s), {STORES} connected" in result.stderr
    assert "in 2 processes" in result.stderr

    channels: dict[Channel, set[str]] = defaultdict(set)
    while not collector.messages.empty():
        message = collector.messages.get()
        try:
            topic = parse_topic(message.topic)
        except TopicError:
            continue
        if isinstance(topic, NodeTopic):
            channels[topic.channel].add(topic.store)
    stores = {f"store-042-{i:04d}" for i in range(1, STORES + 1)}
    assert channels[Channel.BIRTH] == stores
    assert channels[Channel.RFID] == stores  # every store's shelves reported
    assert channels[Channel.DEATH] == stores  # and every edge said goodbye on the way out

    lines = [json.loads(line) for line in truth.read_text().splitlines()]
    assert {line["store"] for line in lines} == stores
    for line in lines:
        assert set(line) == {"t", "store", "epc", "gtin", "shelf", "why"}
        assert len(line["gtin"]) == 14
    stocked = [line for line in lines if line["why"] == "stocked"]
    assert len(stocked) == STORES * 4 * 20  # the default store: 4 shelves of 20 items
