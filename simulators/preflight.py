"""Before simulating a store: is another process already that store's edge node?

Two clients with one client id take the session from each other in a loop (each reconnect
kicks the other off), and with MQTT 3.1.1 neither is told why. The usual cause is
`storegate sim` started beside `storegate demo` with the same store ids. The node's
retained status says whether an edge holds the identity: `online` while its session lives,
`offline` from its Last Will once the broker notices it is gone. So: read the retained
statuses; a node that is online *and* publishing is in use, and so is one that stays online
past the broker's keepalive grace (1.5 x keepalive) without its will firing.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import paho.mqtt.client as paho

from protocols.codec import DecodeError, decode
from protocols.messages import NodeState, Status
from protocols.mqtt import MqttSettings, connect, new_client
from protocols.topics import TOPIC_PREFIX, Channel, NodeTopic, parse_topic


class IdentityInUseError(Exception):
    """Another live client is already the edge node of one of the simulated stores."""


@dataclass
class _Watch:
    online: set[tuple[str, str]] = field(default_factory=set)
    active: set[tuple[str, str]] = field(default_factory=set)  # published since we looked
    subscribed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def nodes_in_use(
    settings: MqttSettings,
    nodes: list[tuple[str, str]],
    *,
    grace_s: float | None = None,
    settle_s: float = 1.0,
) -> list[tuple[str, str]]:
    """The (store, node) pairs another live client holds on this broker.

    Blocks for `settle_s` (retained statuses arrive) and, while some node is `online` but
    silent, up to `grace_s` (default 1.5 x keepalive) for its Last Will. Returns [] when
    the broker cannot be reached or refuses the probe: the edge will say why itself.
    """
    wanted = set(nodes)
    watch = _Watch()
    probe_settings = settings.model_copy(update={"client_id": None})
    client = new_client(
        probe_settings, f"storegate-sim-preflight-{uuid.uuid4().hex[:12]}", clean_start=True
    )

    def on_connect(c: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            return
        filters = [(f"{TOPIC_PREFIX}/{store}/{node}/#", 0) for store, node in sorted(wanted)]
        c.subscribe(filters)

    def on_subscribe(*_args: object) -> None:
        watch.subscribed.set()

    def on_message(_c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        try:
            topic = parse_topic(message.topic)
        except ValueError:
            return
        if not isinstance(topic, NodeTopic) or (topic.store, topic.node) not in wanted:
            return
        key = (topic.store, topic.node)
        with watch.lock:
            if topic.channel is Channel.STATUS:
                try:
                    status = decode(message.payload, topic=message.topic)
                except DecodeError:
                    return
                if isinstance(status, Status) and status.state is NodeState.ONLINE:
                    watch.online.add(key)
                else:
                    watch.online.discard(key)
                    watch.active.discard(key)
            elif not message.retain:
                watch.active.add(key)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        connect(client, probe_settings, clean_start=True)
    except OSError:
        return []
    client.loop_start()
    try:
        if not watch.subscribed.wait(5.0):
            return []
        time.sleep(settle_s)
        grace = 1.5 * settings.keepalive_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        while True:
            with watch.lock:
                online = set(watch.online)
                live = online & watch.active
            if not online or live or time.monotonic() >= deadline:
                return sorted(live or online)
            time.sleep(0.2)
    finally:
        client.disconnect()
        client.loop_stop()


def describe_conflict(settings: MqttSettings, nodes: list[tuple[str, str]]) -> str:
    names = ", ".join(f"{store}/{node}" for store, node in nodes)
    return (
        f"{names}: already online on {settings.describe()}; a client with the same client id"
        " is connected (is `storegate demo` or another `storegate sim` running these"
        " stores?). Stop it, or give the scenario other store ids."
    )
