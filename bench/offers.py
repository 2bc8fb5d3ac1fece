"""Beacon enter -> offer on the shopper's topic, under the load of 100+ stores.

Everything real: a Mosquitto, the cloud (`python -m storegate cloud`, its own process, the
offers domain loaded), 100 edge-like publishers (one MQTT connection per store) sending
sequenced `ble.presence` (background shoppers who did not opt in, fixed beacons) and
`rfid.events` (shelf counts), and a subscriber standing in for the shoppers' apps.

- subject: from the publish of a consenting shopper's `enter` to the arrival of the offer
  on `storegate/v1/shopper/{inbox}/offers` at the subscriber (ingest, dedup, arbitration,
  every gate incl. the stock query, commit, PUBACK, publish, broker fan-out);
- baseline, same run and load: the same payload published by the same store connection on a
  plain topic straight to the same subscriber (the broker round trip alone).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench._support import CloudProcess, Mosquitto, free_port
from bench.runner import Benchmark, Result, Row
from cloud.broker.policy import shopper_inbox
from cloud.config import hash_key
from protocols.codec import encode, topic_for
from protocols.messages import (
    BlePresence,
    CountDelta,
    OfferTrigger,
    PresenceEvent,
    PresenceKind,
    RfidEvents,
    utc_now,
)

STORES = 100
SHOPPERS_PER_STORE = 20  # opted-in shoppers per store, taking turns as probes
GTIN, SHELF, ZONE, CAMPAIGN = "80614141123458", "coffee-shelf", "coffee", "bench-coffee"
PRESENCE_EVERY_S, RFID_EVERY_S, PROBE_EVERY_S = 1.0, 2.0, 2.0
TARGET_P99_MS = 100.0
REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_KEY = "bench-ops-key"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _store(i: int) -> str:
    return f"store-{i:03d}"


def _token(store: int, shopper: int) -> str:
    return f"{store:04x}{shopper:04x}"


def consenting_shoppers(
    keys: list[tuple[int, int]], now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of the `shoppers` and `shopper_tokens` tables for (store, shopper) indexes:
    opted in, each with one BLE token valid for the bench's run."""
    shoppers, tokens = [], []
    for s, k in keys:
        sid = f"shopper-{s}-{k}"
        shoppers.append(
            {
                "shopper_id": sid,
                "segment": None,
                "consent": True,
                "consent_at": now,
                "withdrawn_at": None,
                "created_at": now,
                "updated_at": now,
            }
        )
        tokens.append(
            {
                "token": _token(s, k),
                "shopper_id": sid,
                "valid_from": now - timedelta(minutes=5),
                "expires_at": now + timedelta(hours=12),
            }
        )
    return shoppers, tokens


async def _seed(database_url: str) -> None:
    """Shoppers, tokens and the campaign, written before the cloud starts."""
    from cloud.offers import registry, tables
    from cloud.offers.campaigns import CampaignSpec
    from cloud.state.db import create_engine, migrate

    engine = create_engine(database_url)
    await migrate(engine)
    now = utc_now()
    spec = CampaignSpec(
        title="2 for 1 on coffee",
        trigger=OfferTrigger.ENTER,
        zones=[ZONE],
        gtins=[GTIN],
        per_day_cap=1_000_000,
        per_visit_cap=1_000_000,
        zone_cooldown_s=0,
    )
    await registry.put_campaign(engine, CAMPAIGN, spec)
    shoppers, tokens = consenting_shoppers(
        [(s, k) for s in range(STORES) for k in range(SHOPPERS_PER_STORE)], now
    )
    async with engine.begin() as connection:
        await connection.execute(tables.shoppers.insert(), shoppers)
        await connection.execute(tables.shopper_tokens.insert(), tokens)
    await engine.dispose()


class _Cloud(CloudProcess):
    """`storegate cloud` with the offers domain and its delivery listener, on SQLite."""

    def __init__(self, workdir: Path, broker_port: int) -> None:
        self.database_url = f"sqlite+aiosqlite:///{workdir}/state.db"
        config = {
            "mqtt": {"host": "127.0.0.1", "port": broker_port},
            "ingest": {"client_id": "bench-offers-cloud", "spool_dir": str(workdir / "spool")},
            "database_url": self.database_url,
            "api": {
                "host": "127.0.0.1",
                "port": free_port(),
                "keys": [{"name": "bench", "role": "ops", "sha256": hash_key(BENCH_KEY)}],
            },
            "stores": [{"id": _store(i), "nodes": ["pi-1"]} for i in range(STORES)],
            "domains": {"offers": {"delivery_listener": True}},
        }
        super().__init__(workdir, config)

    def counts(self) -> dict[str, Any]:
        return dict(
            httpx.get(
                f"http://127.0.0.1:{self.api_port}/api/v1/campaigns/{CAMPAIGN}/counts",
                headers={"x-api-key": BENCH_KEY},
                timeout=10,
            ).json()
        )

    def batches(self) -> tuple[float, float]:
        """(batches committed, seconds spent applying them) from the cloud's /metrics."""
        text = httpx.get(f"http://127.0.0.1:{self.api_port}/metrics", timeout=10).text
        values = {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line.startswith("storegate_ingest_batch_seconds_")
        }
        return (
            values.get("storegate_ingest_batch_seconds_count", 0.0),
            values.get("storegate_ingest_batch_seconds_sum", 0.0),
        )


class _Receiver:
    """The shoppers' apps and the baseline's subscriber, in one client."""

    def __init__(self, port: int) -> None:
        self.offer_at: dict[str, float] = {}
        self.rtt_at: dict[str, float] = {}
        self.split: list[tuple[float, float]] = []  # (enter -> decision, decision -> app) ms
        self.lock = threading.Lock()
        ready = threading.Event()
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-apps-{uuid.uuid4().hex[:6]}"
        )
        client.on_connect = lambda c, *_: c.subscribe(
            [("storegate/v1/shopper/+/offers", 1), ("bench/rtt/#", 1)]
        )
        client.on_subscribe = lambda *_: ready.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        if not ready.wait(10):
            raise RuntimeError("bench subscriber not subscribed")
        self.client = client

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        if message.topic.startswith("bench/rtt/"):
            key = message.topic.rsplit("/", 1)[1]
            with self.lock:
                self.rtt_at[key] = now
            return
        offer = json.loads(message.payload)
        wall = time.time()
        # split the latency at the engine's decision (the Offer's sent_time), wall clock
        event_at = datetime.fromisoformat(offer["event_time"]).timestamp()
        decided_at = datetime.fromisoformat(offer["sent_time"]).timestamp()
        with self.lock:
            self.offer_at[f"{offer['shopper']}"] = now
            self.split.append(((decided_at - event_at) * 1000, (wall - decided_at) * 1000))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publishers(port: int, stores: int = STORES) -> list[paho.Client]:
    clients = []
    for i in range(stores):
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{_store(i)}")
        client.connect("127.0.0.1", port)
        client.loop_start()
        clients.append(client)
    return clients


@dataclass
class _LoadState:
    seqs: dict[tuple[int, str], int] = field(default_factory=dict)
    probe_turn: list[int] = field(default_factory=lambda: [0] * STORES)
    in_zone: dict[int, str] = field(default_factory=dict)


def _drive(
    clients: list[paho.Client],
    receiver: _Receiver,
    seconds: float,
    load: _LoadState,
) -> tuple[list[float], list[float], int]:
    """Send the load for `seconds`; returns offer latencies, broker latencies (ms), missing.

    `load` carries the streams' sequence numbers and where each probe shopper is from one
    call to the next (a seq restarting at 1 is a duplicate to the cloud, as it should be)."""
    seqs, probe_turn, in_zone = load.seqs, load.probe_turn, load.in_zone

    def seq(store: int, stream: str) -> int:
        seqs[(store, stream)] = seqs.get((store, stream), 0) + 1
        return seqs[(store, stream)]

    pending_offer: dict[str, float] = {}
    pending_rtt: dict[str, float] = {}
    offer_ms: list[float] = []
    rtt_ms: list[float] = []
    start = time.perf_counter()
    tick = 0
    while time.perf_counter() - start < seconds:
        slot_start = time.perf_counter()
        for i, client in enumerate(clients):
            store = _store(i)
            now = utc_now()
            # Spread the stores over the second, like independent nodes.
            phase = (i * 10 // STORES) == tick % 10
            if not phase:
                continue
            background = [
                PresenceEvent(
                    kind=PresenceKind.ENTER,
                    beacon=f"app:ff{i:02x}{tick:04x}"[:12],
                    zone=ZONE,
                    rssi=-66.0,
                    at=now,
                ),
                PresenceEvent(
                    kind=PresenceKind.DWELL,
                    beacon="ref.entrance",
                    zone="entrance",
                    rssi=-50.0,
                    dwell_s=20.0,
                    at=now,
                ),
            ]
            message: Any = BlePresence(
                store=store, node="pi-1", seq=seq(i, "ble"), scanner="ble-1", events=background
            )
            client.publish(topic_for(message), encode(message), qos=1)
            if (tick // 10) % int(RFID_EVERY_S) == 0:
                message = RfidEvents(
                    store=store,
                    node="pi-1",
                    seq=seq(i, "rfid"),
                    reader="reader-1",
                    counts=[CountDelta(shelf=SHELF, gtin=GTIN, delta=1, count=5 + tick % 3)],
                )
                client.publish(topic_for(message), encode(message), qos=1)
            if (tick // 10) % int(PROBE_EVERY_S) == 1:
                shopper = probe_turn[i] % SHOPPERS_PER_STORE
                probe_turn[i] += 1
                token = _token(i, shopper)
                events = []
                previous = in_zone.get(i)
                if previous is not None:
                    events.append(
                        PresenceEvent(
                            kind=PresenceKind.EXIT,
                            beacon=f"app:{previous}",
                            zone=ZONE,
                            rssi=-85.0,
                            at=now,
                        )
                    )
                events.append(
                    PresenceEvent(
                        kind=PresenceKind.ENTER,
                        beacon=f"app:{token}",
                        zone=ZONE,
                        rssi=-60.0,
                        at=now,
                    )
                )
                in_zone[i] = token
                message = BlePresence(
                    store=store, node="pi-1", seq=seq(i, "ble"), scanner="ble-1", events=events
                )
                payload = encode(message)
                key = uuid.uuid4().hex
                sent = time.perf_counter()
                client.publish(topic_for(message), payload, qos=1)
                # offers arrive addressed to the shopper's inbox, not to the token
                pending_offer[shopper_inbox(f"shopper-{i}-{shopper}")] = sent
                sent_rtt = time.perf_counter()
                client.publish(f"bench/rtt/{key}", payload, qos=1)
                pending_rtt[key] = sent_rtt
        tick += 1
        _collect(receiver, pending_offer, offer_ms, pending_rtt, rtt_ms)
        time.sleep(max(0.0, 0.1 - (time.perf_counter() - slot_start)))
    deadline = time.perf_counter() + 10
    while (pending_offer or pending_rtt) and time.perf_counter() < deadline:
        time.sleep(0.1)
        _collect(receiver, pending_offer, offer_ms, pending_rtt, rtt_ms)
    return offer_ms, rtt_ms, len(pending_offer)


def _collect(
    receiver: _Receiver,
    pending_offer: dict[str, float],
    offer_ms: list[float],
    pending_rtt: dict[str, float],
    rtt_ms: list[float],
) -> None:
    with receiver.lock:
        offers, receiver.offer_at = receiver.offer_at, {}
        rtts, receiver.rtt_at = receiver.rtt_at, {}
    for inbox, arrived in offers.items():
        sent = pending_offer.pop(inbox, None)
        if sent is not None:
            offer_ms.append((arrived - sent) * 1000)
    for key, arrived in rtts.items():
        sent = pending_rtt.pop(key, None)
        if sent is not None:
            rtt_ms.append((arrived - sent) * 1000)


def run(quick: bool) -> Result:
    seconds = 20.0 if quick else 60.0
    workdir = Path(tempfile.mkdtemp(prefix="bench-offers-"))
    broker = Mosquitto(workdir, extra=["max_queued_messages 0", "max_inflight_messages 0"])
    cloud: _Cloud | None = None
    clients: list[paho.Client] = []
    receiver: _Receiver | None = None
    try:
        asyncio.run(_seed(f"sqlite+aiosqlite:///{workdir}/state.db"))
        cloud = _Cloud(workdir, broker.port)
        receiver = _Receiver(broker.port)
        clients = _publishers(broker.port)
        load = _LoadState()
        _drive(clients, receiver, 3.0, load)  # warm-up: caches, first rows, connections
        before = cloud.batches()
        receiver.split.clear()
        offer_ms, rtt_ms, missing = _drive(clients, receiver, seconds, load)
        after = cloud.batches()
        counts = cloud.counts()
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()
        if receiver is not None:
            receiver.close()
        if cloud is not None:
            cloud.stop()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if not offer_ms or not rtt_ms:
        raise RuntimeError(f"no measurements (offers {len(offer_ms)}, broker {len(rtt_ms)})")
    p50, p99 = _percentile(offer_ms, 0.5), _percentile(offer_ms, 0.99)
    b50, b99 = _percentile(rtt_ms, 0.5), _percentile(rtt_ms, 0.99)
    batches, busy_s = after[0] - before[0], after[1] - before[1]
    split = list(receiver.split) if receiver is not None else [(0.0, 0.0)]
    rate = (STORES / PRESENCE_EVERY_S) + STORES / RFID_EVERY_S + STORES / PROBE_EVERY_S
    return Result(
        rows=[
            Row(
                "enter -> offer p50", p50, "ms", baseline=b50, baseline_name="broker round trip p50"
            ),
            Row(
                "enter -> offer p99",
                p99,
                "ms",
                baseline=b99,
                baseline_name="broker round trip p99",
                target=f"<= {TARGET_P99_MS:g} ms",
                passed=p99 <= TARGET_P99_MS and missing == 0,
            ),
            Row(
                "enter -> offer mean",
                statistics.fmean(offer_ms),
                "ms",
                baseline=statistics.fmean(rtt_ms),
                baseline_name="broker round trip mean",
            ),
            Row("offers measured", len(offer_ms), "offers"),
            Row("offers missing", missing, "offers", target="0", passed=missing == 0),
        ],
        notes=[
            f"{STORES} stores, one MQTT connection each; about {rate:.0f} messages/s into the"
            f" cloud: ble.presence every {PRESENCE_EVERY_S:g} s (a shopper who did not opt in"
            f" + a fixed beacon), rfid.events every {RFID_EVERY_S:g} s, a probe enter of an"
            f" opted-in shopper every {PROBE_EVERY_S:g} s per store; {seconds:g} s measured",
            "cloud: `storegate cloud` in its own process, SQLite (WAL), ingest batch_wait_ms 0"
            " (default), offers domain with the delivery listener; every probe passes all gates"
            " (consent, window, stock query, caps, cooldown, holdout) and is recorded",
            "where the time goes (medians, wall clock, split at the engine's decision):"
            f" enter publish -> decision {statistics.median(a for a, _ in split):.1f} ms,"
            f" decision -> app {statistics.median(b for _, b in split):.1f} ms",
            f"ingest during the measurement: {batches:.0f} batches, {busy_s / seconds:.0%} of"
            f" the time applying them, {1000 * busy_s / max(batches, 1):.1f} ms per batch",
            f"campaign funnel after the run: {counts}",
        ],
    )


BENCHMARK = Benchmark(name="offers", title="Beacon enter -> offer delivered, 100 stores", run=run)
