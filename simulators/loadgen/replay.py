"""One replay process: many stores, one MQTT connection each, on one asyncio loop.

`python -m simulators.loadgen.replay --recording store.jsonl --first 1 --count 250 ...`
(`simulators.loadgen.fleet` starts several and adds their results up).

Each store behaves towards the cloud as its edge daemon does:

- on every connect: a Last Will (offline status with this connection's `bd_seq`), then the
  retained online status and the birth (the recorded snapshot; per outbox stream the last
  seq assigned and `kept_from` just above it: a replay holds nothing to resend, so the cloud
  waits for nothing), then its traffic;
- its traffic is the recording, looped, from a phase of its own (stores do not send in
  step), at the recorded rate times `--speed`; every stream's seq goes on without a gap
  across loops and reconnects; a message due while the store is disconnected is not made
  (no seq taken), as an edge's heartbeat is not;
- it subscribes to its commands and commit marks: a mark confirms its messages, which gives
  publish -> commit latency per message; a `resync` command (a cloud that saw a gap: a bug of
  the generator) is counted and answered with a birth, as the edge does;
- at the end: death and offline status, then DISCONNECT.

paho runs without threads: each client's socket is on the loop's selector (paho's
external-loop callbacks), one loop_misc pass a second for keepalives.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import heapq
import json
import logging
import os
import random
import resource
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psutil

from protocols.codec import encode, topic_for
from protocols.messages import Death, NodeState, Status
from protocols.mqtt import MqttSettings, connect, new_client
from protocols.topics import LIFECYCLE_STREAMS, TOPIC_PREFIX, Channel, NodeTopic, node_filter
from simulators.loadgen.recording import (
    RECORDED_STORE,
    Context,
    Recording,
    Template,
    compile_template,
    format_time,
    load_recording,
    sent_time,
)
from storegate import __version__

log = logging.getLogger(__name__)

MISC_INTERVAL_S = 1.0
GOODBYE_S = 5.0
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 10.0


def store_id(prefix: str, number: int) -> str:
    return f"{prefix}-{number:04d}"


@dataclass(frozen=True, slots=True)
class Scheduled:
    t: float  # seconds into the loop
    stream: str
    type: str
    template: Template
    events: int


@dataclass
class Totals:
    published: int = 0
    published_measured: int = 0
    bytes: int = 0
    events: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    births: int = 0
    connects: int = 0
    lost: int = 0  # connections lost (not closed by us)
    skipped_offline: int = 0
    resyncs: int = 0
    other_commands: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    send_lag_ms: list[float] = field(default_factory=list)
    confirmed: int = 0


class StoreLink:
    """One store's connection, its sequences and what it still waits to see committed."""

    def __init__(self, worker: Worker, number: int, phase: float) -> None:
        self.worker = worker
        self.store = store_id(worker.prefix, number)
        self.node = worker.recording.node
        self.tag = f"{number:x}"
        self.phase = phase
        self.seqs: dict[str, int] = dict.fromkeys(worker.recording.streams, 0)
        self.seqs.update(dict.fromkeys(LIFECYCLE_STREAMS, 0))
        self.bd_seq = worker.bd_seq_base
        self.loop_number = 0
        self.next_index = 0
        self.connected = False
        self.closing = False
        self.ever_connected = False
        self.unconfirmed: dict[str, deque[tuple[int, float, bool]]] = {}
        self.topics = {s: f"{TOPIC_PREFIX}/{self.store}/{self.node}/{s}" for s in self.seqs}
        self.committed_topic = str(NodeTopic(self.store, self.node, Channel.COMMITTED))
        self.client = new_client(
            worker.mqtt, f"storegate-edge-{self.store}-{self.node}", clean_start=True
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        nodelay = self.client.on_socket_open
        loop = worker.loop

        def opened(client: paho.Client, userdata: Any, sock: Any) -> None:
            if nodelay is not None:
                nodelay(client, userdata, sock)
            loop.add_reader(sock.fileno(), self._readable)

        self.client.on_socket_open = opened
        self.client.on_socket_close = lambda _c, _u, sock: self._unwatch(sock)
        self.client.on_socket_register_write = lambda _c, _u, sock: loop.add_writer(
            sock.fileno(), self.client.loop_write
        )
        self.client.on_socket_unregister_write = lambda _c, _u, sock: self._no_write(sock)
        self._reconnect_delay = RECONNECT_MIN_S

    # ------------------------------------------------------------------ connection

    def connect(self) -> None:
        self.bd_seq += 1
        will = self._status(NodeState.OFFLINE, reason="connection lost")
        self.client.will_set(topic_for(will), encode(will), qos=1, retain=True)
        try:
            if not self.ever_connected and self.client.socket() is None:
                connect(self.client, self.worker.mqtt, clean_start=True)
            else:
                self.client.reconnect()
        except OSError as exc:
            log.warning("%s: cannot connect: %s", self.store, exc)
            self._retry_later()

    def _retry_later(self) -> None:
        delay = self._reconnect_delay
        self._reconnect_delay = min(delay * 2, RECONNECT_MAX_S)
        if not self.closing:
            self.worker.loop.call_later(delay, self.connect)

    def _no_write(self, sock: Any) -> None:
        self.worker.loop.remove_writer(sock.fileno())

    def _readable(self) -> None:
        self.client.loop_read()

    def _unwatch(self, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.worker.loop.remove_reader(sock.fileno())
            self.worker.loop.remove_writer(sock.fileno())

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("%s: broker refused the connection: %s", self.store, reason)
            return
        self._reconnect_delay = RECONNECT_MIN_S
        client.subscribe(node_filter(self.store, self.node, Channel.CMD), qos=1)
        client.subscribe(self.committed_topic, qos=1)
        status = self._status(NodeState.ONLINE)
        client.publish(topic_for(status), encode(status), qos=1, retain=True)
        self.publish_birth()
        self.connected = self.ever_connected = True
        self.worker.totals.connects += 1
        # What was in flight on an older connection is covered by this birth (kept_from
        # above every seq): it is no longer waited for.
        self.unconfirmed.clear()

    def _on_disconnect(self, *_args: Any) -> None:
        self.connected = False
        if self.closing:
            return
        self.worker.totals.lost += 1
        log.warning("%s: lost the broker; reconnecting", self.store)
        self._retry_later()

    # ------------------------------------------------------------------ messages out

    def _next(self, stream: str) -> int:
        seq = self.seqs[stream] + 1
        self.seqs[stream] = seq
        return seq

    def _status(self, state: NodeState, reason: str | None = None) -> Status:
        return Status(
            store=self.store,
            node=self.node,
            seq=self._next("status"),
            state=state,
            bd_seq=self.bd_seq,
            version=__version__,
            reason=reason,
        )

    def publish_birth(self) -> None:
        recording = self.worker.recording
        positions = [
            {"stream": s, "seq": q, "kept_from": q + 1}
            for s, q in sorted(self.seqs.items())
            if s not in LIFECYCLE_STREAMS
        ]
        now = format_time(time.time())
        parts = len(recording.births)
        snapshot_id = f"lg{self.tag}b{self.bd_seq}s{self.seqs['birth'] + 1}"
        for part in recording.births:
            body = {
                **part,
                "store": self.store,
                "msg_id": self.worker.message_id(self.tag),
                "seq": self._next("birth"),
                "bd_seq": self.bd_seq,
                "streams": positions,
                "event_time": now,
                "sent_time": now,
                "snapshot_id": snapshot_id if parts > 1 else None,
            }
            if body["snapshot_id"] is None:
                del body["snapshot_id"]
            text = json.dumps(body, separators=(",", ":")).replace(RECORDED_STORE, self.store)
            self.client.publish(self.topics["birth"], text.encode(), qos=1)
            self.worker.totals.births += 1

    def send(self, item: Scheduled, now: float, measured: bool) -> None:
        worker = self.worker
        seq = self._next(item.stream)
        ctx = worker.context
        ctx.store = self.store
        ctx.seq = seq
        ctx.msg_id = worker.message_id(self.tag)
        ctx.bd_seq = self.bd_seq
        ctx.sent_at = now
        ctx.snapshot_tag = f"{self.tag}l{self.loop_number}"
        payload = item.template.render(ctx)
        self.client.publish(self.topics[item.stream], payload, qos=1)
        totals = worker.totals
        totals.published += 1
        totals.bytes += len(payload)
        totals.events += item.events
        totals.by_type[item.type] = totals.by_type.get(item.type, 0) + 1
        if measured:
            totals.published_measured += 1
        if item.stream not in LIFECYCLE_STREAMS:
            self.unconfirmed.setdefault(item.stream, deque()).append((seq, now, measured))

    def say_goodbye(self) -> list[paho.MQTTMessageInfo]:
        """Death and offline status, as the edge sends them on shutdown."""
        self.closing = True
        if not self.connected:
            return []
        death = Death(store=self.store, node=self.node, seq=self._next("death"), bd_seq=self.bd_seq)
        status = self._status(NodeState.OFFLINE, reason="shutdown")
        return [
            self.client.publish(topic_for(death), encode(death), qos=1),
            self.client.publish(topic_for(status), encode(status), qos=1, retain=True),
        ]

    def disconnect(self) -> None:
        # Only once the goodbyes are acknowledged: closing a socket with unread PUBACKs
        # resets it, and the broker would take that for a lost connection (Last Will).
        if self.client.socket() is not None:
            self.client.disconnect()

    # ------------------------------------------------------------------ messages in

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        try:
            payload = json.loads(message.payload)
        except ValueError:
            log.error("%s: unreadable message on %s", self.store, message.topic)
            return
        if message.topic == self.committed_topic:
            self._confirm(payload)
            return
        name = payload.get("name")
        if name == "resync":
            self.worker.totals.resyncs += 1
            log.warning("%s: the cloud asked for a resync: %s", self.store, payload.get("args"))
            if self.connected:
                self.publish_birth()
        else:
            self.worker.totals.other_commands += 1
            log.info("%s: command %s not played by the generator", self.store, name)

    def _confirm(self, payload: dict[str, Any]) -> None:
        now = time.time()
        totals = self.worker.totals
        for mark in payload.get("streams", []):
            waiting = self.unconfirmed.get(str(mark.get("stream")))
            upto = int(mark.get("seq", 0))
            if not waiting or upto > self.seqs.get(str(mark.get("stream")), 0):
                continue  # nothing waits, or a mark of an earlier run
            while waiting and waiting[0][0] <= upto:
                _, published, measured = waiting.popleft()
                totals.confirmed += 1
                if measured:
                    totals.latencies_ms.append(round((now - published) * 1000, 2))

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self.unconfirmed.values())

    def waiting_measured(self) -> int:
        return sum(1 for q in self.unconfirmed.values() for item in q if item[2])


class Worker:
    def __init__(self, args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.recording: Recording = load_recording(Path(args.recording))
        self.mqtt = MqttSettings(
            host=args.host, port=args.port, protocol=args.protocol, keepalive_s=60
        )
        self.prefix: str = args.prefix
        self.speed: float = args.speed
        self.bd_seq_base = int(time.time())  # newer than any earlier run's, on a kept database
        self.context = Context(store="")
        self.totals = Totals()
        self._ids = 0
        self._run = os.urandom(3).hex()
        self.schedule = [
            Scheduled(
                m.t,
                m.stream,
                m.type,
                compile_template(m.payload, sent_time(m.payload)),
                _events(m.payload),
            )
            for m in self.recording.messages
        ]
        self.times = [s.t for s in self.schedule]
        rng = random.Random(args.seed * 7919 + args.first)
        length = self.recording.duration_s
        self.links = [
            StoreLink(self, number, rng.uniform(0, length))
            for number in range(args.first, args.first + args.count)
        ]

    def message_id(self, tag: str) -> str:
        self._ids += 1
        return f"lg{self._run}{tag}x{self._ids:x}"

    def due(self, link: StoreLink, start_at: float) -> float:
        t = self.schedule[link.next_index].t
        length = self.recording.duration_s
        return start_at + (link.loop_number * length + t - link.phase) / self.speed

    def advance(self, link: StoreLink) -> None:
        link.next_index += 1
        if link.next_index == len(self.schedule):
            link.next_index = 0
            link.loop_number += 1

    async def keepalive(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            for link in self.links:
                if link.client.socket() is not None:
                    link.client.loop_misc()


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    worker = Worker(args, loop)
    keeper = asyncio.create_task(worker.keepalive())
    process = psutil.Process()
    for index, link in enumerate(worker.links):
        link.connect()
        if index % args.wave == args.wave - 1:
            await asyncio.sleep(0.05)
    start_at = args.start_at or time.time() + 2.0
    while time.time() < start_at:  # noqa: ASYNC110 (a wall-clock instant, shared by processes)
        await asyncio.sleep(min(0.1, max(0.0, start_at - time.time())))
    connected_at_start = sum(1 for link in worker.links if link.connected)
    measure_from = start_at + args.warmup
    end_at = start_at + args.duration
    heap: list[tuple[float, int]] = []
    for index, link in enumerate(worker.links):
        link.next_index = bisect.bisect_left(worker.times, link.phase)
        if link.next_index == len(worker.schedule):  # the phase is past the last message
            link.next_index, link.loop_number = 0, 1
        heap.append((worker.due(link, start_at), index))
    heapq.heapify(heap)
    cpu_before = process.cpu_times()
    totals = worker.totals
    sent_in_a_row = 0
    while heap:
        due, index = heap[0]
        if due >= end_at:
            break
        now = time.time()
        if due > now:
            sent_in_a_row = 0
            await asyncio.sleep(due - now)
            continue
        heapq.heappop(heap)
        link = worker.links[index]
        item = worker.schedule[link.next_index]
        if link.connected:
            measured = due >= measure_from
            if measured:
                totals.send_lag_ms.append(round((now - due) * 1000, 2))
            link.send(item, now, measured)
        else:
            totals.skipped_offline += 1
        worker.advance(link)
        heapq.heappush(heap, (worker.due(link, start_at), index))
        sent_in_a_row += 1
        if sent_in_a_row % 64 == 0:
            await asyncio.sleep(0)  # behind schedule: let the sockets and marks in between
    cpu_after = process.cpu_times()
    sent_until = time.time()
    drain_until = sent_until + args.drain
    while time.time() < drain_until and any(link.waiting for link in worker.links):  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    waiting_measured = sum(link.waiting_measured() for link in worker.links)
    waiting = sum(link.waiting for link in worker.links)
    goodbyes = [info for link in worker.links for info in link.say_goodbye()]
    deadline = time.monotonic() + GOODBYE_S
    while time.monotonic() < deadline and not all(i.is_published() for i in goodbyes):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    for link in worker.links:
        link.disconnect()
    await asyncio.sleep(0.5)
    keeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await keeper
    return {
        "stores": len(worker.links),
        "connected_at_start": connected_at_start,
        "start_at": start_at,
        "measure_from": measure_from,
        "end_at": end_at,
        "published": totals.published,
        "published_measured": totals.published_measured,
        "bytes": totals.bytes,
        "events": totals.events,
        "by_type": totals.by_type,
        "births": totals.births,
        "connects": totals.connects,
        "lost": totals.lost,
        "skipped_offline": totals.skipped_offline,
        "resyncs": totals.resyncs,
        "other_commands": totals.other_commands,
        "confirmed": totals.confirmed,
        "unconfirmed_measured": waiting_measured,
        "unconfirmed": waiting,
        "latencies_ms": totals.latencies_ms,
        "send_lag_ms": totals.send_lag_ms,
        "cpu_s": (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system),
        "rss_bytes": process.memory_info().rss,
    }


def _events(payload: dict[str, Any]) -> int:
    lists = ("items", "counts", "events")
    return sum(len(v) for k in lists if isinstance(v := payload.get(k), list))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recording", required=True)
    p.add_argument("--first", type=int, default=1, help="number of the first store")
    p.add_argument("--count", type=int, required=True, help="stores in this process")
    p.add_argument("--prefix", default="loadgen", help="store ids: <prefix>-0001 ...")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--protocol", choices=("3.1.1", "5"), default="5")
    p.add_argument("--speed", type=float, default=1.0, help="times the recorded rate")
    p.add_argument("--start-at", type=float, default=0.0, help="epoch s the traffic starts")
    p.add_argument("--warmup", type=float, default=0.0, help="s after start not measured")
    p.add_argument("--duration", type=float, required=True, help="s of traffic")
    p.add_argument("--drain", type=float, default=10.0, help="s to wait for the last marks")
    p.add_argument("--wave", type=int, default=25, help="connects before a 50 ms pause")
    p.add_argument("--seed", type=int, default=1)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # three descriptors per store (socket, paho's socket pair)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = asyncio.run(_run(args))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
