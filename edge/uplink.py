"""The MQTT connection: paho's network thread, bridged into asyncio.

paho runs its own thread (`loop_start`) and reconnects by itself; every callback hops onto
the event loop with `call_soon_threadsafe`, so the rest of the runtime is single-threaded
asyncio. `publish` returns a future that resolves on the PUBACK (QoS 1). paho keeps
unacknowledged messages across reconnects and resends them itself, so the futures stay
valid through an outage: except for the ones published with `resend=False` (the outbox's),
which are forgotten right before the next CONNECT and fail with `ConnectionError`. The
outbox resends those itself, from the oldest the cloud has not confirmed, in order; paho
resending its own copies first would put newer seqs ahead of older ones.

The Last Will must carry the `bd_seq` of the connection it belongs to, and the counter must
be bumped and persisted for every connect: paho's `on_pre_connect` hook runs right before
each CONNECT packet is built, so the hook given here sets the will there.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from protocols.mqtt import MqttSettings, connect, new_client

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes


class PublishRejectedError(Exception):
    """The broker refused a message (PUBACK reason code >= 0x80)."""


# In-flight slots beyond the forwarder's window, for messages published directly.
LIFECYCLE_HEADROOM = 32

# MQTT 5 DISCONNECT reason "Session taken over": another client connected with our id.
SESSION_TAKEN_OVER = 142


class _Client(paho.Client):
    """paho's client, saying why a connection attempt failed and when the next one is.

    paho's network loop swallows the OSError of a failed (re)connect and only logs
    "Connection failed, retrying" at debug level, so an edge with a wrong broker address
    would look idle for as long as it retries.
    """

    describe: str = "the broker"

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            log.warning(
                "cannot connect to %s: %s; next attempt in %s",
                self.describe,
                exc.strerror or exc,
                _seconds(self.next_reconnect_delay()),
            )
            raise

    def next_reconnect_delay(self) -> float:
        """The wait before paho's next attempt: its backoff doubles up to the maximum.

        Right after the very first attempt (no delay taken yet) paho waits twice, once in
        its first-connection loop and once in its main loop, so that gap is min + 2 x min.
        """
        current = getattr(self, "_reconnect_delay", None)
        low = float(getattr(self, "_reconnect_min_delay", 1))
        high = float(getattr(self, "_reconnect_max_delay", 120))
        if current is None:
            return low + min(low * 2.0, high)
        return min(float(current) * 2.0, high)


def _seconds(value: float) -> str:
    return f"{value:g} s"


class Uplink:
    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        inflight: int,
        will: Callable[[], Will],
        on_connected: Callable[[bool], None],
        on_disconnected: Callable[[], None],
        on_message: Callable[[str, bytes], None],
    ) -> None:
        self._settings = settings
        self._loop = asyncio.get_running_loop()
        self._will = will
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_message = on_message
        self._futures: dict[int, asyncio.Future[None]] = {}
        # mids of the `resend=False` messages paho holds; paho's thread empties it.
        self._forgettable: set[int] = set()
        self._forgettable_lock = threading.Lock()
        self.connected = asyncio.Event()
        self._stopped = False
        self._pubacks: deque[tuple[int, ReasonCode]] = deque()  # appended by paho's thread
        self._pubacks_scheduled = False
        self.connects = 0
        self.client = new_client(settings, client_id, client_class=_Client)
        assert isinstance(self.client, _Client)
        self.client.describe = settings.describe()
        self.client_id = settings.client_id or client_id
        self.taken_over = asyncio.Event()
        # paho must never hold a data message back in its own queue: its publish() sends a
        # new message at once whenever an in-flight slot is free, overtaking older queued
        # ones, which breaks per-stream order (seen around reconnects under load). The
        # forwarder's window bounds data messages; the headroom covers the lifecycle
        # messages (status, birth, death, health, acks of commands) published beside them.
        self.client.max_inflight_messages_set(inflight + LIFECYCLE_HEADROOM)
        self.client.max_queued_messages_set(0)  # bounded by our own in-flight window
        self.client.on_pre_connect = self._pre_connect
        self.client.on_connect = self._connect_cb
        self.client.on_disconnect = self._disconnect_cb
        self.client.on_publish = self._publish_cb
        self.client.on_message = self._message_cb

    def start(self) -> None:
        log.info("connecting to %s", self._settings.describe())
        connect(self.client, self._settings, asynchronous=True)
        self.client.loop_start()

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        resend: bool = True,
    ) -> asyncio.Future[None]:
        """Hand a message to paho; the future resolves on PUBACK (at once for QoS 0).
        `resend=False`: paho does not resend it after a reconnect (the caller does)."""
        future: asyncio.Future[None] = self._loop.create_future()
        if resend:
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
        else:
            # Held while paho stores it, so a reconnect cannot slip in before the mid is
            # known to be forgettable.
            with self._forgettable_lock:
                info = self.client.publish(topic, payload, qos=qos, retain=retain)
                if qos > 0 and info.rc in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                    self._forgettable.add(info.mid)
        if qos == 0 or info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            if info.rc == paho.MQTT_ERR_SUCCESS:
                future.set_result(None)
            else:
                future.set_exception(ConnectionError(paho.error_string(info.rc)))
            return future
        # Called on the loop thread: the PUBACK callback hops onto the loop too, so it
        # cannot run before the mid is registered here.
        self._futures[info.mid] = future
        return future

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.client.subscribe(topic, qos=qos)

    async def stop(self) -> None:
        """Disconnect cleanly (no Last Will) and stop the network thread. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
        for future in self._futures.values():
            if not future.done():
                future.set_exception(ConnectionError("uplink stopped"))
        self._futures.clear()

    @property
    def unacknowledged(self) -> int:
        return len(self._futures)

    # ----------------------------------------------------------- paho thread callbacks

    def _pre_connect(self, client: paho.Client, _userdata: Any) -> None:
        self._forget_outbox_messages(client)
        will = self._will()
        client.will_set(will.topic, will.payload, qos=1, retain=True)

    def _forget_outbox_messages(self, client: paho.Client) -> None:
        # paho has just reset its unacknowledged messages to be sent again on CONNACK;
        # drop the outbox's from them. paho has no API for it: its message table and lock.
        with self._forgettable_lock, client._out_message_mutex:
            forgotten = [mid for mid in self._forgettable if client._out_messages.pop(mid, None)]
            self._forgettable.clear()
        if forgotten:
            self._loop.call_soon_threadsafe(self._fail, forgotten)

    def _connect_cb(
        self, _c: paho.Client, _u: Any, flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        self._loop.call_soon_threadsafe(self._connected, bool(flags.session_present), reason)

    def _disconnect_cb(
        self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        self._loop.call_soon_threadsafe(self._disconnected, reason)

    def _publish_cb(self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        # PUBACKs come in bursts: queue them and wake the loop once per burst, not per ack.
        self._pubacks.append((mid, reason))
        if not self._pubacks_scheduled:
            self._pubacks_scheduled = True
            self._loop.call_soon_threadsafe(self._drain_pubacks)

    def _message_cb(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        self._loop.call_soon_threadsafe(self._on_message, message.topic, bytes(message.payload))

    # ----------------------------------------------------------- on the event loop

    def _connected(self, session_present: bool, reason: ReasonCode) -> None:
        if reason.is_failure:
            assert isinstance(self.client, _Client)
            log.warning(
                "%s refused the connection: %s; next attempt in %s",
                self._settings.describe(),
                reason,
                _seconds(self.client.next_reconnect_delay()),
            )
            return
        self.connects += 1
        log.info("connected (session present: %s)", session_present)
        self.connected.set()
        self._on_connected(session_present)

    def _disconnected(self, reason: ReasonCode) -> None:
        if reason.value == SESSION_TAKEN_OVER:
            log.error(
                "another client connected with our client id %r and took the session over:"
                " two processes run as this node (a second edge daemon with the same store"
                " and node, or `storegate sim` beside `storegate demo`). Give each node its"
                " own identity; the broker should bind client ids to logins"
                " (docs/broker-auth.md)",
                self.client_id,
            )
            self.taken_over.set()
        if self.connected.is_set():
            # a clean disconnect is ours (shutdown); anything else is worth a warning
            level = logging.WARNING if reason.is_failure else logging.INFO
            log.log(level, "disconnected from the broker: %s", reason)
        self.connected.clear()
        self._on_disconnected()

    def _drain_pubacks(self) -> None:
        # Cleared before draining: an ack queued after this line schedules another drain.
        self._pubacks_scheduled = False
        while self._pubacks:
            self._published(*self._pubacks.popleft())

    def _fail(self, mids: list[int]) -> None:
        for mid in mids:
            future = self._futures.pop(mid, None)
            if future is not None and not future.done():
                future.set_exception(ConnectionError("connection lost before the PUBACK"))

    def _published(self, mid: int, reason: ReasonCode) -> None:
        if self._forgettable:
            with self._forgettable_lock:
                self._forgettable.discard(mid)
        future = self._futures.pop(mid, None)
        if future is None or future.done():
            return
        if reason.is_failure:
            future.set_exception(PublishRejectedError(str(reason)))
        else:
            future.set_result(None)
