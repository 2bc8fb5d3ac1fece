"""One store floods its topics with 130,000 messages; another store's stream, measured the
whole time, loses nothing and is never more than a few seconds late (real Mosquitto, a real
`storegate cloud` process, the flood from its own process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from protocols.codec import encode, topic_for
from tests.cloud.cloudproc import CloudProcess, cloud_config, wait_until
from tests.cloud.streams import NODE, RFID_STREAM, birth, gtin, rfid
from tests.conftest import REPO_ROOT
from tests.mqtt_helpers import publisher
from tests.servers import MosquittoBroker, mosquitto

GOOD, HOSTILE = "store-good", "store-hostile"
FLOOD = 130_000
GOOD_RATE_HZ = 20
MAX_DELAY_S = 5.0

# The flooder: a client with the hostile store's (valid) login, publishing as fast as the
# broker takes QoS 1 messages. A third are not JSON, two thirds valid and costly: fresh
# sequence numbers, 20 shelf counts each, more than the ingestor can apply at that rate.
FLOODER = textwrap.dedent(
    """
    import sys, uuid
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from protocols.codec import encode, topic_for
    from tests.cloud.streams import rfid, gtin
    port, store, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flood-" + uuid.uuid4().hex[:6])
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", port)
    client.loop_start()
    template = rfid(1, {(f"s{k}", gtin(k)): 3 for k in range(20)}, store=store)
    topic, body = topic_for(template), encode(template)
    assert b'"seq":1,' in body
    infos = []
    for i in range(count):
        if i % 3 == 0:
            payload = b"not json " + str(i).encode()
        else:
            payload = body.replace(b'"seq":1,', b'"seq":%d,' % (i + 1))
        infos.append(client.publish(topic, payload, qos=1))
        if len(infos) == 2000:  # paho queues the rest in memory: keep that bounded
            infos.pop().wait_for_publish(120)
            infos.clear()
    for info in infos:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()
    print("flooded", count)
    """
)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """Mosquitto as deploy/mosquitto/mosquitto.conf sets it for fairness: no broker-wide cap
    on un-acked messages to a client, so the ingestor's Receive Maximum rules."""
    (tmp_path / "broker").mkdir()
    broker = mosquitto(tmp_path / "broker", extra_config="max_inflight_messages 0\n")
    broker.start()
    yield broker
    broker.kill()


@pytest.fixture
def cloud(broker: MosquittoBroker, tmp_path: Path) -> Iterator[CloudProcess]:
    config = cloud_config(broker.port, tmp_path, stores={GOOD: [NODE], HOSTILE: [NODE]})
    process = CloudProcess(tmp_path, config)
    process.start()
    yield process
    process.kill()


def test_a_flooding_store_cannot_delay_another_store(
    broker: MosquittoBroker, cloud: CloudProcess
) -> None:
    assert cloud.process is not None
    cloud_ps = psutil.Process(cloud.process.pid)
    rss_before = cloud_ps.memory_info().rss
    good = publisher(broker.host, broker.port)
    opening = birth(1, rfid_seq=0, store=GOOD)
    good.publish(topic_for(opening), encode(opening), qos=1).wait_for_publish(10)
    wait_until(
        lambda: cloud.query("SELECT status FROM nodes WHERE store_id=?", GOOD) == [("online",)],
        20,
        "good store born",
    )

    sent_at: dict[int, float] = {}
    expected: dict[tuple[str, str], int] = {}
    stop = threading.Event()

    def good_stream() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            counts = {(f"shelf-{seq % 7}", gtin(seq % 5)): seq}
            expected.update(counts)
            message = rfid(seq, counts, store=GOOD)
            sent_at[seq] = time.monotonic()
            good.publish(topic_for(message), encode(message), qos=1)
            time.sleep(1 / GOOD_RATE_HZ)

    committed_at: dict[int, float] = {}
    peak_rss = rss_before

    def watch() -> None:
        nonlocal peak_rss
        last = 0
        while not stop.is_set() or last < max(sent_at, default=0):
            hw = cloud.hw(GOOD, NODE, RFID_STREAM)
            now = time.monotonic()
            for seq in range(last + 1, hw + 1):
                committed_at[seq] = now
            last = max(last, hw)
            peak_rss = max(peak_rss, cloud_ps.memory_info().rss)
            if stop.is_set() and now - stopped_at > 30:
                return
            time.sleep(0.05)

    stopped_at = 0.0
    threads = [threading.Thread(target=good_stream), threading.Thread(target=watch)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    flood = subprocess.run(
        [sys.executable, "-c", FLOODER, str(broker.port), HOSTILE, str(FLOOD)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO_ROOT,
    )
    assert flood.returncode == 0, flood.stderr[-2000:]
    time.sleep(2)
    stopped_at = time.monotonic()
    stop.set()
    for thread in threads:
        thread.join(60)
    good.disconnect()
    good.loop_stop()

    last = max(sent_at)
    assert cloud.hw(GOOD, NODE, RFID_STREAM) == last, "good events lost"
    delays = sorted(committed_at[seq] - sent_at[seq] for seq in sent_at)
    worst = delays[-1]
    assert worst <= MAX_DELAY_S, (
        f"good traffic {worst:.1f} s late (p50 {delays[len(delays) // 2]:.2f})"
    )
    rows = cloud.query("SELECT shelf, gtin, count FROM inventory WHERE store_id=?", GOOD)
    assert {(shelf, g): c for shelf, g, c in rows} == expected  # each applied once, in order
    assert cloud.metric("storegate_ingest_shed_total") > 0  # the flood was cut, not queued
    assert peak_rss - rss_before < 150 * 2**20, f"cloud grew {(peak_rss - rss_before) >> 20} MiB"
    assert cloud.alive()
