"""The ingestor's paho client: paho, with a receive path tuned for a flood of QoS 1 PUBLISHes.

paho does the connection, session, TLS, keepalive and acks. Two of its receive steps cost
more than everything else it does per message, and the ingestor does not need them:

- **Read-ahead.** paho reads a packet with three or four `recv` calls (the type byte, each
  byte of the remaining length, then the rest). Here `recv` takes up to `READ_AHEAD_BYTES`
  from the socket at once and hands paho its small reads from that buffer, so a burst of
  messages costs one system call per buffer, not four per message.
- **PUBLISH without properties.** For MQTT 5, paho builds a `Properties` object for every
  PUBLISH, and a `MQTTMessage` with a thread condition for its delivery info, even when
  the packet carries no property at all (what our edge sends). A QoS 0/1 PUBLISH without
  properties goes straight to `deliver(topic, payload, mid, qos)`; anything else (QoS 2,
  properties, a topic that is not UTF-8, automatic acks, a malformed packet) takes
  paho's own path and arrives through `on_message` as usual.

Both reach into paho internals (`_sock_recv`, `_handle_publish`, `_in_packet`), as Home
Assistant's own paho subclass does for its locks. They are switched on only for the paho
releases they were written against (`TESTED_PAHO`: 2.1.0 and 2.2.0 passed the tests); with
any other paho the client is stock paho. tests/cloud/test_mqtt_client.py checks that the
fast path is taken and delivers what stock paho delivers, so an upgrade that changes these
internals fails there, not in a store.

Buffering policy: at most `READ_AHEAD_BYTES` read ahead of paho, on top of the consumer's
bound; `has_buffered_input()` tells the consumer to keep reading although the socket is no
longer readable. So the fast path is for the external-loop API (`loop_read`) only: paho's
own loops (`loop_start`, `loop_forever`, `loop`) switch it off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho import mqtt as paho_package
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion

log = logging.getLogger(__name__)

READ_AHEAD_BYTES = 64 * 1024
TESTED_PAHO = ("2.1.", "2.2.")

Deliver = Callable[[str, bytes, int, int], None]  # (topic, payload, mid, qos)


def _fast_path_supported() -> bool:
    version = getattr(paho_package, "__version__", "")
    internals = all(
        hasattr(paho.Client, name)
        for name in ("_sock_recv", "_handle_publish", "_handle_on_message")
    )
    return version.startswith(TESTED_PAHO) and internals


class IngestClient(paho.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deliver: Deliver | None = None
        self.fast_path = _fast_path_supported()
        if not self.fast_path:
            log.info(
                "paho %s is not one the ingest receive path was tested with; using stock paho",
                getattr(paho_package, "__version__", "?"),
            )
        self.fast_deliveries = 0  # PUBLISHes that took the fast path (tests, diagnostics)
        self._ahead = b""
        self._ahead_pos = 0
        self._ahead_sock: Any = None

    def has_buffered_input(self) -> bool:
        """Bytes already read from the socket that paho has not consumed yet."""
        sock = getattr(self, "_sock", None)
        if self._ahead_pos < len(self._ahead) and self._ahead_sock is sock:
            return True
        pending = getattr(sock, "pending", None)  # TLS: decrypted bytes held by the SSL object
        return bool(pending()) if pending is not None else False

    # paho's own loops wait on the socket alone, and would not see bytes read ahead:
    # driven that way, the client is stock paho.
    def loop_start(self) -> MQTTErrorCode:
        self.fast_path = False
        return super().loop_start()

    def loop_forever(self, *args: Any, **kwargs: Any) -> MQTTErrorCode:
        self.fast_path = False
        return super().loop_forever(*args, **kwargs)

    def loop(self, timeout: float = 1.0) -> MQTTErrorCode:
        self.fast_path = False
        return super().loop(timeout)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """One packet per call. paho reads one more per message of ours awaiting its PUBACK
        (commit marks, commands, offers), which delivered a burst of PUBLISHes past the
        consumer's un-acked bound before it could pause; the consumer loops by itself."""
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        rc = self._packet_read()
        if rc > 0:
            return self._loop_rc_handle(rc)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    # ------------------------------------------------------------------ paho internals

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self.fast_path:
            return super()._sock_recv(bufsize)
        sock = self._sock
        if self._ahead_sock is sock:
            start = self._ahead_pos
            if start < len(self._ahead):
                end = start + bufsize
                self._ahead_pos = end
                return self._ahead[start:end]
        else:  # a new connection: whatever was read ahead belonged to the old one
            self._ahead, self._ahead_pos, self._ahead_sock = b"", 0, sock
        data = super()._sock_recv(max(bufsize, READ_AHEAD_BYTES))
        if len(data) <= bufsize:
            return data  # all of it wanted (or b"": the broker closed the connection)
        self._ahead, self._ahead_pos = data, bufsize
        return data[:bufsize]

    def _handle_publish(self) -> MQTTErrorCode:
        deliver = self.deliver
        if deliver is None or not self.fast_path or not self._manual_ack:
            return super()._handle_publish()
        header: int = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        packet = self._in_packet["packet"]
        topic_end = 2 + int.from_bytes(packet[:2], "big")
        body = topic_end + (2 if qos else 0)  # QoS 1 and 2 carry a packet identifier
        # MQTT 5 has a property length (a variable byte integer) before the payload; the
        # fast path takes only the single byte 0: no properties.
        properties = 1 if self._protocol == MQTTProtocolVersion.MQTTv5 else 0
        if (
            qos > 1
            or topic_end == 2
            or len(packet) < body + properties
            or (properties and packet[body] != 0)
        ):
            return super()._handle_publish()
        try:
            topic = packet[2:topic_end].decode()
        except UnicodeDecodeError:
            return super()._handle_publish()
        mid = int.from_bytes(packet[topic_end:body], "big") if qos else 0
        self.fast_deliveries += 1
        deliver(topic, bytes(memoryview(packet)[body + properties :]), mid, qos)
        return MQTTErrorCode.MQTT_ERR_SUCCESS
